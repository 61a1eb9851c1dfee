//! Fuzz target: the config loader (`config::bake_source`) fed text a person
//! or a script could write into a `kepler.yaml`.
//!
//! Inputs are random text, soups of YAML and Kepler tokens, and mutations of
//! the corpus (`corpus/good` and `corpus/bad`): byte edits, line edits,
//! tokens spliced in, lines borrowed from other configs. Baking must return
//! `Ok` or `Err`, never panic, never hang (the watchdog allows 5 s per input)
//! and never allocate without bound. See `fuzz_support` for the budget.
//!
//! Inputs that are known to break the loader are pinned as ignored tests at
//! the end of this file and kept out of the token list, so the fuzzer keeps
//! looking for new ones instead of finding the same one every run.

mod fuzz_support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use fuzz_support::{fuzz, guarded, peak_allocation, CountingAllocator, Target};
use kepler_daemon::config::bake_source;
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::{select, Index};
use proptest::test_runner::TestCaseError;

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

/// What one bake may allocate at once: Lua alone may hold 64 MiB.
const ALLOCATION_LIMIT: usize = 256 << 20;

// ---------------------------------------------------------------------------
// The corpus

struct Seed {
    path: PathBuf,
    text: String,
}

fn corpus() -> &'static [Seed] {
    static CORPUS: OnceLock<Vec<Seed>> = OnceLock::new();
    CORPUS.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
        let mut seeds = Vec::new();
        for kind in ["good", "bad"] {
            let dir = root.join(kind);
            let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
                .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
                .map(|entry| entry.expect("corpus entry").path())
                .filter(|path| path.extension().is_some_and(|ext| ext == "yaml"))
                .collect();
            paths.sort();
            for path in paths {
                let text = std::fs::read_to_string(&path)
                    .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                seeds.push(Seed { path, text });
            }
        }
        assert!(seeds.len() > 40, "the config corpus is missing");
        seeds
    })
}

/// The environment the corpus tests bake with (see `config_corpus.rs`).
fn sys_env() -> &'static BTreeMap<String, String> {
    static ENV: OnceLock<BTreeMap<String, String>> = OnceLock::new();
    ENV.get_or_init(|| {
        [
            ("HOME", "/home/tester"),
            ("DB_HOST", "db.internal"),
            ("BACKEND_URL", "http://backend:4000"),
            ("DB_URL", "postgres://db/app"),
            ("PATH", "/usr/bin:/bin"),
            ("USER", "tester"),
            ("PORT", "8080"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
    })
}

/// Pieces of YAML and of Kepler's schema that mutations splice in. Paths
/// that would read devices or FIFOs and Lua that loops are left out: those
/// are pinned below as findings.
const TOKENS: &[&str] = &[
    "services:",
    "kepler:",
    "lua: |\n  x = 1\n",
    "\n",
    "  ",
    "    ",
    "\t",
    "- ",
    ": ",
    ":",
    "[",
    "]",
    "{",
    "}",
    ",",
    "'",
    "\"",
    "|",
    "|-",
    ">",
    "#",
    "---",
    "...",
    "~",
    "null",
    "true",
    "no",
    "0",
    "-1",
    "65536",
    "18446744073709551616",
    "1e999",
    "0x10",
    "&a ",
    "*a",
    "&b ",
    "*b",
    "<<: *a",
    "<<: [*a, *b]",
    "? ",
    "!!str ",
    "!!int ",
    "!!map ",
    "!unknown ",
    "!lua ",
    "!lua return 1",
    "!lua return {\"a\", \"b\"}",
    "!lua return ctx.env.HOME",
    "!lua error('x')",
    "!lua_file ./missing.lua",
    "${HOME}",
    "${NOPE}",
    "${NOPE:-fallback}",
    "${NOPE:?must be set}",
    "${HOME:+alt}",
    "${",
    "$",
    "$$",
    "${{",
    "\\",
    "command: [\"sh\", \"-c\", \"true\"]",
    "command: [\"",
    "command: []",
    "depends_on: [a]",
    "depends_on:\n  a:\n    condition: service_healthy\n",
    "condition: service_completed_successfully",
    "exit_code: [0, 1-3]",
    "restart: always",
    "restart:\n  policy: on-failure\n  watch: [\"**/*.rs\"]\n",
    "healthcheck:\n  test: [\"CMD\", \"true\"]\n",
    "interval: 0s",
    "timeout: 1ms",
    "stop_grace_period: 999999999h",
    "stop_signal: SIGKILL",
    "stop_signal: 9",
    "environment:\n  - A=1\n",
    "environment:\n  A: 1\n",
    "env_file: ./.env",
    "env_file: .",
    "working_dir: ./x",
    "user: root",
    "user: 0:0",
    "user: nobody:nogroup",
    "limits:\n  memory: 1G\n  max_fds: 0\n",
    "logs:\n  max_size: 1K\n",
    "hooks:\n  pre_start:\n    run: echo hi\n",
    "sys_env: inherit",
    "x-anchor: &a {restart: always}",
    "a:",
    "b:",
    "web:",
];

// ---------------------------------------------------------------------------
// Inputs

#[derive(Debug, Clone)]
enum Edit {
    FlipBit {
        at: Index,
        bit: u8,
    },
    SetByte {
        at: Index,
        value: u8,
    },
    InsertBytes {
        at: Index,
        bytes: Vec<u8>,
    },
    Remove {
        at: Index,
        len: u8,
    },
    Truncate {
        at: Index,
    },
    InsertToken {
        at: Index,
        token: &'static str,
    },
    /// Puts a token at the start of a line (where keys and list items go).
    TokenLine {
        line: Index,
        token: &'static str,
    },
    DeleteLine {
        line: Index,
    },
    DuplicateLine {
        line: Index,
    },
    SwapLines {
        a: Index,
        b: Index,
    },
    Indent {
        line: Index,
    },
    Dedent {
        line: Index,
    },
    /// Borrows a line of another corpus config.
    BorrowLine {
        seed: Index,
        from: Index,
        to: Index,
    },
    /// Repeats a run of the text (more services, more nesting).
    Repeat {
        at: Index,
        len: u8,
        times: u8,
    },
}

fn edit() -> impl Strategy<Value = Edit> {
    let token = || select(TOKENS);
    prop_oneof![
        1 => (any::<Index>(), 0u8..8).prop_map(|(at, bit)| Edit::FlipBit { at, bit }),
        1 => (any::<Index>(), any::<u8>()).prop_map(|(at, value)| Edit::SetByte { at, value }),
        1 => (any::<Index>(), vec(any::<u8>(), 1..8))
            .prop_map(|(at, bytes)| Edit::InsertBytes { at, bytes }),
        1 => (any::<Index>(), any::<u8>()).prop_map(|(at, len)| Edit::Remove { at, len }),
        1 => any::<Index>().prop_map(|at| Edit::Truncate { at }),
        3 => (any::<Index>(), token()).prop_map(|(at, token)| Edit::InsertToken { at, token }),
        3 => (any::<Index>(), token()).prop_map(|(line, token)| Edit::TokenLine { line, token }),
        1 => any::<Index>().prop_map(|line| Edit::DeleteLine { line }),
        1 => any::<Index>().prop_map(|line| Edit::DuplicateLine { line }),
        1 => (any::<Index>(), any::<Index>()).prop_map(|(a, b)| Edit::SwapLines { a, b }),
        1 => any::<Index>().prop_map(|line| Edit::Indent { line }),
        1 => any::<Index>().prop_map(|line| Edit::Dedent { line }),
        2 => (any::<Index>(), any::<Index>(), any::<Index>())
            .prop_map(|(seed, from, to)| Edit::BorrowLine { seed, from, to }),
        1 => (any::<Index>(), any::<u8>(), 1u8..16)
            .prop_map(|(at, len, times)| Edit::Repeat { at, len, times }),
    ]
}

/// Byte offset `at` picks in `text`, moved back to a char boundary so text
/// edits keep the input UTF-8 (byte edits repair it with `from_utf8_lossy`).
fn char_pos(text: &str, at: &Index) -> usize {
    let mut i = at.index(text.len() + 1);
    while !text.is_char_boundary(i) {
        i -= 1;
    }
    i
}

fn byte_edit(text: &mut String, edit: impl FnOnce(&mut Vec<u8>)) {
    let mut bytes = std::mem::take(text).into_bytes();
    edit(&mut bytes);
    *text = String::from_utf8_lossy(&bytes).into_owned();
}

fn with_lines(text: &mut String, edit: impl FnOnce(&mut Vec<String>)) {
    let mut lines: Vec<String> = text.split('\n').map(str::to_owned).collect();
    edit(&mut lines);
    *text = lines.join("\n");
}

fn apply(text: &mut String, edit: &Edit) {
    match edit {
        Edit::FlipBit { at, bit } => byte_edit(text, |bytes| {
            if !bytes.is_empty() {
                let i = at.index(bytes.len());
                bytes[i] ^= 1 << bit;
            }
        }),
        Edit::SetByte { at, value } => byte_edit(text, |bytes| {
            if !bytes.is_empty() {
                let i = at.index(bytes.len());
                bytes[i] = *value;
            }
        }),
        Edit::InsertBytes { at, bytes: new } => byte_edit(text, |bytes| {
            let i = at.index(bytes.len() + 1);
            bytes.splice(i..i, new.iter().copied());
        }),
        Edit::Remove { at, len } => byte_edit(text, |bytes| {
            let i = at.index(bytes.len() + 1);
            let end = (i + usize::from(*len)).min(bytes.len());
            bytes.drain(i..end);
        }),
        Edit::Truncate { at } => {
            let i = char_pos(text, at);
            text.truncate(i);
        }
        Edit::InsertToken { at, token } => {
            let i = char_pos(text, at);
            text.insert_str(i, token);
        }
        Edit::TokenLine { line, token } => with_lines(text, |lines| {
            let i = line.index(lines.len() + 1);
            lines.insert(i, (*token).to_owned());
        }),
        Edit::DeleteLine { line } => with_lines(text, |lines| {
            let i = line.index(lines.len());
            lines.remove(i);
        }),
        Edit::DuplicateLine { line } => with_lines(text, |lines| {
            let i = line.index(lines.len());
            lines.insert(i, lines[i].clone());
        }),
        Edit::SwapLines { a, b } => with_lines(text, |lines| {
            let (a, b) = (a.index(lines.len()), b.index(lines.len()));
            lines.swap(a, b);
        }),
        Edit::Indent { line } => with_lines(text, |lines| {
            let i = line.index(lines.len());
            lines[i].insert_str(0, "  ");
        }),
        Edit::Dedent { line } => with_lines(text, |lines| {
            let i = line.index(lines.len());
            let trimmed = lines[i].strip_prefix("  ").map(str::to_owned);
            if let Some(trimmed) = trimmed {
                lines[i] = trimmed;
            }
        }),
        Edit::BorrowLine { seed, from, to } => {
            let donor = &corpus()[seed.index(corpus().len())].text;
            let donor_lines: Vec<&str> = donor.split('\n').collect();
            let borrowed = donor_lines[from.index(donor_lines.len())].to_owned();
            with_lines(text, |lines| {
                let i = to.index(lines.len() + 1);
                lines.insert(i, borrowed);
            });
        }
        Edit::Repeat { at, len, times } => {
            let start = char_pos(text, at);
            let mut end = (start + usize::from(*len)).min(text.len());
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            let run = text[start..end].repeat(usize::from(*times));
            text.insert_str(end, &run);
        }
    }
}

/// A config to bake and the file it claims to come from (relative paths in
/// it resolve next to that file).
#[derive(Clone)]
struct ConfigInput {
    path: PathBuf,
    text: String,
}

/// Shown as a Rust literal (to paste into a regression test) and as text.
impl std::fmt::Debug for ConfigInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "baked as {}; the text as a Rust literal:\n{:?}\nthe text:\n{}",
            self.path.display(),
            self.text,
            self.text
        )
    }
}

fn mutated_corpus() -> impl Strategy<Value = ConfigInput> {
    (any::<Index>(), vec(edit(), 1..8)).prop_map(|(seed, edits)| {
        let seed = &corpus()[seed.index(corpus().len())];
        let mut text = seed.text.clone();
        for edit in &edits {
            apply(&mut text, edit);
        }
        ConfigInput {
            path: seed.path.clone(),
            text,
        }
    })
}

fn anywhere() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join("good")
        .join("fuzz.yaml")
}

fn random_text() -> impl Strategy<Value = ConfigInput> {
    let soup = vec(select(TOKENS), 0..40).prop_map(|tokens| tokens.concat());
    let text = prop_oneof![
        1 => any::<String>(),
        1 => "[ -~\n\t]{0,200}",
        3 => soup,
        // Well-formed head, soup body: gets past the first checks more often.
        3 => vec(select(TOKENS), 0..30).prop_map(|tokens| {
            format!("services:\n  web:\n    command: [\"./web\"]\n    {}", tokens.concat())
        }),
    ];
    text.prop_map(|text| ConfigInput {
        path: anywhere(),
        text,
    })
}

// ---------------------------------------------------------------------------
// The loader under test

fn check_bake(input: &ConfigInput) -> Result<(), TestCaseError> {
    let (outcome, peak) = peak_allocation(|| {
        // Ok or Err are both fine; a panic is caught by proptest and shrunk.
        let _ = bake_source(&input.path, input.text.clone(), sys_env());
    });
    prop_assert!(
        peak <= ALLOCATION_LIMIT,
        "baking {} bytes allocated {} MiB at once (limit {} MiB)",
        input.text.len(),
        peak >> 20,
        ALLOCATION_LIMIT >> 20
    );
    Ok(outcome)
}

#[test]
fn fuzz_config_mutated_corpus_bakes_or_fails_cleanly() {
    let target = Target {
        name: "config/mutated-corpus",
        batch: 64,
    };
    fuzz(target, mutated_corpus(), check_bake);
}

#[test]
fn fuzz_config_random_text_bakes_or_fails_cleanly() {
    let target = Target {
        name: "config/random-text",
        batch: 128,
    };
    fuzz(target, random_text(), check_bake);
}

#[test]
fn every_corpus_config_bakes_within_the_limits() {
    for seed in corpus() {
        let input = ConfigInput {
            path: seed.path.clone(),
            text: seed.text.clone(),
        };
        check_bake(&input).unwrap_or_else(|e| panic!("{}: {e}", seed.path.display()));
    }
}

// ---------------------------------------------------------------------------
// Hostile configs written by hand: each states what the loader must do.

fn hostile(text: String) -> ConfigInput {
    ConfigInput {
        path: anywhere(),
        text,
    }
}

/// "Billion laughs": each level lists the previous one ten times, so eight
/// levels stand for 10^8 scalars in a few hundred bytes of YAML.
fn exponential_aliases(levels: usize) -> String {
    let mut text = String::from("x-l0: &l0 [a, a, a, a, a, a, a, a, a, a]\n");
    for level in 1..=levels {
        let prev = format!("*l{}", level - 1);
        let items = [prev.as_str(); 10].join(", ");
        text.push_str(&format!("x-l{level}: &l{level} [{items}]\n"));
    }
    text.push_str("services:\n  web:\n    command: [\"./web\"]\n");
    text
}

#[test]
fn exponential_aliases_are_refused_or_stay_small() {
    let input = hostile(exponential_aliases(8));
    guarded("config/exponential-aliases", &input, || check_bake(&input)).unwrap();
}

/// Each entry doubles the one before (`A1=${A0}${A0}`, ...): 40 of them
/// would make a terabyte. The bake stops at the first value longer than one
/// process could be given, names it, and holds little memory on the way.
#[test]
fn doubling_environment_entries_are_refused_at_the_kernels_string_limit() {
    let mut text = String::from(
        "services:\n  web:\n    command: [\"./web\"]\n    environment:\n      - A0=xxxxxxxxxxxxxxxx\n",
    );
    for i in 1..=40 {
        text.push_str(&format!("      - A{i}=${{A{}}}${{A{}}}\n", i - 1, i - 1));
    }
    let input = hostile(text);
    let (outcome, peak) = guarded("config/doubling-environment", &input, || {
        peak_allocation(|| bake_source(&input.path, input.text.clone(), sys_env()))
    });
    let message = outcome.expect_err("refused").to_string();
    // 16 bytes doubled 13 times is 128 KiB, the largest allowed; A14 is over.
    assert!(message.contains("environment[14]"), "{message}");
    assert!(message.contains("more than 128 KiB"), "{message}");
    assert!(peak < 8 << 20, "held {} KiB at once", peak >> 10);
}

#[test]
fn deeply_nested_lists_fail_cleanly() {
    // Each `- ` opens a list inside the previous one.
    let input = hostile(format!("{}x\n", "- ".repeat(200_000)));
    guarded("config/deep-nesting", &input, || check_bake(&input)).unwrap();
}

#[test]
fn an_env_file_that_never_ends_is_refused() {
    let input = hostile(
        "services:\n  web:\n    command: [\"./web\"]\n    env_file: /dev/zero\n".to_owned(),
    );
    guarded("config/endless-env-file", &input, || check_bake(&input)).unwrap();
}

#[test]
fn an_env_file_that_is_a_fifo_does_not_block() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("env.fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let input = hostile(format!(
        "services:\n  web:\n    command: [\"./web\"]\n    env_file: {}\n",
        fifo.display()
    ));
    guarded("config/fifo-env-file", &input, || check_bake(&input)).unwrap();
}
