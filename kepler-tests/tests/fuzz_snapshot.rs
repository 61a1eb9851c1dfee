//! Fuzz target: what the daemon does with a bake worker's answer
//! (`Transfer::decode`) and with a snapshot read back from disk
//! (`snapshot_from_json`, and `load_snapshot` for an older YAML one).
//!
//! A worker runs as the config's owner, who controls it completely, so its
//! answer is forged at will: the inputs are honest answers (every good
//! corpus config, baked) with forgeries applied (hostile service names,
//! dangling and cyclic dependencies, any field replaced by any value, lists
//! and maps repeated, values nested deep) and then byte edits, plus random
//! JSON. Every input must be refused or pass every snapshot check, never
//! panic, and never allocate much past its size. The largest answers and
//! alias bombs are pinned by hand below. See `fuzz_support` for the budget.

mod fuzz_support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use fuzz_support::{fuzz, guarded, peak_allocation, CountingAllocator, Target};
use kepler_daemon::config::values::is_valid_service_name;
use kepler_daemon::config::{
    bake, check_snapshot, load_snapshot, snapshot_from_json, BakedConfig, MAX_SNAPSHOT_BYTES,
};
use kepler_daemon::unprivileged_bake::Transfer;
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::{select, Index};
use proptest::test_runner::TestCaseError;
use serde_json::Value;

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

/// Most that decoding and checking one answer may hold at once, per byte
/// of answer: a small string in a map costs a map slot and a heap block
/// (measured worst: an `environment` of empty variables, under 8 bytes held
/// per byte read, so at most about 64 MiB for the largest answer), plus a
/// fixed allowance for small answers.
const BYTES_PER_BYTE: usize = 10;
const FIXED_ALLOWANCE: usize = 1 << 20;

fn allowance(input: usize) -> usize {
    FIXED_ALLOWANCE + BYTES_PER_BYTE * input
}

// ---------------------------------------------------------------------------
// Honest answers

/// Every good non-Lua corpus config, baked as the daemon would, as the JSON
/// value of a worker's answer.
fn seeds() -> &'static [Value] {
    static SEEDS: OnceLock<Vec<Value>> = OnceLock::new();
    SEEDS.get_or_init(|| {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus/good");
        let env: BTreeMap<String, String> = [
            ("HOME", "/home/tester"),
            ("DB_HOST", "db.internal"),
            ("BACKEND_URL", "http://backend:4000"),
            ("DB_URL", "postgres://db/app"),
            ("PATH", "/usr/bin:/bin"),
            ("USER", "tester"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
            .collect();
        paths.sort();
        let seeds: Vec<Value> = paths
            .iter()
            .filter_map(|path| bake(path, &env).ok())
            .map(|baked| serde_json::to_value(Transfer::from_baked(&baked)).unwrap())
            .collect();
        assert!(seeds.len() > 10, "the good corpus is missing");
        seeds
    })
}

// ---------------------------------------------------------------------------
// Forgeries

/// Names a forger would try: paths out of the log directory, separators,
/// control characters, the reserved name, overlong and empty names.
const HOSTILE_NAMES: &[&str] = &[
    "../../../../tmp/x",
    "..",
    ".",
    "",
    "a/b",
    "/etc/passwd",
    "x\0y",
    "x\ny",
    "x\u{1b}[31m",
    "_kepler",
    "-rf",
    "web ",
    "ünïcode",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    "web",
    "db",
];

/// Values a forged field may take.
fn atom() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        Just(Value::from(f64::MAX)),
        select(HOSTILE_NAMES).prop_map(Value::from),
        "[ -~]{0,16}".prop_map(Value::from),
        Just(serde_json::json!([])),
        Just(serde_json::json!({})),
        Just(serde_json::json!(["../x"])),
        Just(serde_json::json!({"../x": {}})),
    ]
}

#[derive(Debug, Clone)]
enum Forgery {
    RenameService { service: Index, name: &'static str },
    AddService { copy: Index, name: &'static str },
    DependOn { service: Index, on: &'static str },
    Cycle { a: Index, b: Index },
    SetNode { at: Index, value: Value },
    RemoveNode { at: Index },
    Repeat { at: Index, times: u8 },
    Nest { at: Index, depth: u8 },
}

fn forgery() -> impl Strategy<Value = Forgery> {
    let name = || select(HOSTILE_NAMES);
    prop_oneof![
        2 => (any::<Index>(), name()).prop_map(|(service, name)| Forgery::RenameService { service, name }),
        1 => (any::<Index>(), name()).prop_map(|(copy, name)| Forgery::AddService { copy, name }),
        1 => (any::<Index>(), name()).prop_map(|(service, on)| Forgery::DependOn { service, on }),
        1 => (any::<Index>(), any::<Index>()).prop_map(|(a, b)| Forgery::Cycle { a, b }),
        4 => (any::<Index>(), atom()).prop_map(|(at, value)| Forgery::SetNode { at, value }),
        1 => any::<Index>().prop_map(|at| Forgery::RemoveNode { at }),
        1 => (any::<Index>(), 2u8..64).prop_map(|(at, times)| Forgery::Repeat { at, times }),
        1 => (any::<Index>(), 1u8..200).prop_map(|(at, depth)| Forgery::Nest { at, depth }),
    ]
}

/// JSON pointers to every node of `value`, in document order.
fn pointers(value: &Value) -> Vec<String> {
    fn walk(value: &Value, at: String, out: &mut Vec<String>) {
        out.push(at.clone());
        match value {
            Value::Object(map) => {
                for (key, child) in map {
                    let key = key.replace('~', "~0").replace('/', "~1");
                    walk(child, format!("{at}/{key}"), out);
                }
            }
            Value::Array(items) => {
                for (index, child) in items.iter().enumerate() {
                    walk(child, format!("{at}/{index}"), out);
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(value, String::new(), &mut out);
    out
}

fn services(answer: &mut Value) -> Option<&mut serde_json::Map<String, Value>> {
    answer.pointer_mut("/config/services")?.as_object_mut()
}

fn nth_name(answer: &mut Value, index: &Index) -> Option<String> {
    let services = services(answer)?;
    if services.is_empty() {
        return None;
    }
    services.keys().nth(index.index(services.len())).cloned()
}

fn apply(answer: &mut Value, forgery: &Forgery) {
    match forgery {
        Forgery::RenameService { service, name } => {
            if let Some(old) = nth_name(answer, service) {
                let services = services(answer).unwrap();
                let value = services.remove(&old).unwrap();
                services.insert((*name).to_owned(), value);
            }
        }
        Forgery::AddService { copy, name } => {
            if let Some(old) = nth_name(answer, copy) {
                let services = services(answer).unwrap();
                let value = services[&old].clone();
                services.insert((*name).to_owned(), value);
            }
        }
        Forgery::DependOn { service, on } => {
            if let Some(name) = nth_name(answer, service) {
                let edge = serde_json::json!({"condition": "service_started", "restart": false, "wait": true});
                let services = services(answer).unwrap();
                if let Some(map) = services[&name].as_object_mut() {
                    let deps = map.entry("depends_on").or_insert(serde_json::json!({}));
                    if let Some(deps) = deps.as_object_mut() {
                        deps.insert((*on).to_owned(), edge);
                    }
                }
            }
        }
        Forgery::Cycle { a, b } => {
            if let (Some(a), Some(b)) = (nth_name(answer, a), nth_name(answer, b)) {
                let edge = serde_json::json!({"condition": "service_started", "restart": false, "wait": true});
                let services = services(answer).unwrap();
                for (from, to) in [(&a, &b), (&b, &a)] {
                    if let Some(map) = services[from].as_object_mut() {
                        let deps = map.entry("depends_on").or_insert(serde_json::json!({}));
                        if let Some(deps) = deps.as_object_mut() {
                            deps.insert(to.clone(), edge.clone());
                        }
                    }
                }
            }
        }
        Forgery::SetNode { at, value } => {
            let all = pointers(answer);
            if let Some(node) = answer.pointer_mut(&all[at.index(all.len())]) {
                *node = value.clone();
            }
        }
        Forgery::RemoveNode { at } => {
            let all = pointers(answer);
            let pointer = &all[at.index(all.len())];
            if let Some((parent, key)) = pointer.rsplit_once('/') {
                match answer.pointer_mut(parent) {
                    Some(Value::Object(map)) => {
                        map.remove(&key.replace("~1", "/").replace("~0", "~"));
                    }
                    Some(Value::Array(items)) => {
                        if let Ok(index) = key.parse::<usize>() {
                            if index < items.len() {
                                items.remove(index);
                            }
                        }
                    }
                    _ => {}
                }
            }
        }
        Forgery::Repeat { at, times } => {
            let all = pointers(answer);
            if let Some(node) = answer.pointer_mut(&all[at.index(all.len())]) {
                match node {
                    Value::Array(items) if !items.is_empty() => {
                        let copy = items.clone();
                        for _ in 1..*times {
                            items.extend(copy.iter().cloned());
                        }
                    }
                    Value::Object(map) if !map.is_empty() => {
                        let copy: Vec<(String, Value)> =
                            map.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
                        for round in 1..*times {
                            for (key, value) in &copy {
                                map.insert(format!("{key}{round}"), value.clone());
                            }
                        }
                    }
                    Value::String(text) => *text = text.repeat(usize::from(*times)),
                    _ => {}
                }
            }
        }
        Forgery::Nest { at, depth } => {
            let all = pointers(answer);
            if let Some(node) = answer.pointer_mut(&all[at.index(all.len())]) {
                for _ in 0..*depth {
                    *node = Value::Array(vec![node.take()]);
                }
            }
        }
    }
}

/// Bits of JSON byte edits splice in.
const JSON_TOKENS: &[&str] = &[
    "\"../x\"",
    "[",
    "{",
    "}",
    "]",
    ",",
    "null",
    "\"\\u0000\"",
    "1e999",
];

#[derive(Debug, Clone)]
enum ByteEdit {
    Flip { at: Index, bit: u8 },
    Truncate { at: Index },
    Insert { at: Index, bytes: Vec<u8> },
}

fn byte_edit() -> impl Strategy<Value = ByteEdit> {
    prop_oneof![
        (any::<Index>(), 0u8..8).prop_map(|(at, bit)| ByteEdit::Flip { at, bit }),
        any::<Index>().prop_map(|at| ByteEdit::Truncate { at }),
        (
            any::<Index>(),
            prop_oneof![
                vec(any::<u8>(), 1..6),
                select(JSON_TOKENS).prop_map(|token: &str| token.as_bytes().to_vec()),
            ]
        )
            .prop_map(|(at, bytes)| ByteEdit::Insert { at, bytes }),
    ]
}

/// A forged answer: the bytes the daemon reads.
#[derive(Clone)]
struct Answer(Vec<u8>);

impl std::fmt::Debug for Answer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} bytes:\n{}",
            self.0.len(),
            String::from_utf8_lossy(&self.0)
        )
    }
}

fn forged_answer() -> impl Strategy<Value = Answer> {
    (any::<Index>(), vec(forgery(), 1..6), vec(byte_edit(), 0..3)).prop_map(
        |(seed, forgeries, edits)| {
            let mut answer = seeds()[seed.index(seeds().len())].clone();
            for forgery in &forgeries {
                apply(&mut answer, forgery);
            }
            let mut bytes = serde_json::to_vec(&answer).unwrap();
            for edit in &edits {
                match edit {
                    ByteEdit::Flip { at, bit } => {
                        if !bytes.is_empty() {
                            let i = at.index(bytes.len());
                            bytes[i] ^= 1 << bit;
                        }
                    }
                    ByteEdit::Truncate { at } => bytes.truncate(at.index(bytes.len() + 1)),
                    ByteEdit::Insert { at, bytes: new } => {
                        let i = at.index(bytes.len() + 1);
                        bytes.splice(i..i, new.iter().copied());
                    }
                }
            }
            Answer(bytes)
        },
    )
}

fn random_answer() -> impl Strategy<Value = Answer> {
    prop_oneof![
        vec(any::<u8>(), 0..256).prop_map(Answer),
        "[\\[\\]{}\",:0-9a-z./ ]{0,256}".prop_map(|s| Answer(s.into_bytes())),
    ]
}

// ---------------------------------------------------------------------------
// The daemon's side

/// What a config that got past the checks must be.
fn assert_usable(config: &BakedConfig) -> Result<(), TestCaseError> {
    prop_assert!(check_snapshot(config).is_ok());
    prop_assert!(config.config_file.is_absolute());
    for name in config.services.keys() {
        prop_assert!(is_valid_service_name(name), "{name:?}");
        prop_assert!(
            !name.contains('/') && name != ".." && !name.chars().any(char::is_control),
            "{name:?}"
        );
    }
    Ok(())
}

fn check_answer(answer: &Answer) -> Result<(), TestCaseError> {
    let (decoded, peak) = peak_allocation(|| Transfer::decode(&answer.0));
    prop_assert!(
        peak <= allowance(answer.0.len()),
        "decoding {} bytes held {} KiB at once",
        answer.0.len(),
        peak >> 10
    );
    if let Ok(baked) = decoded {
        assert_usable(&baked.config)?;
        for copy in &baked.env_files {
            prop_assert!(copy.path.is_absolute() && copy.path.file_name().is_some());
        }
    }
    // The same config, as a snapshot read back from disk.
    if let Ok(value) = serde_json::from_slice::<Value>(&answer.0) {
        if let Some(config) = value.get("config") {
            let bytes = serde_json::to_vec(config).unwrap();
            let (stored, peak) = peak_allocation(|| snapshot_from_json(&bytes));
            prop_assert!(peak <= allowance(bytes.len()));
            if let Ok(config) = stored {
                assert_usable(&config)?;
            }
        }
    }
    Ok(())
}

#[test]
fn fuzz_snapshot_forged_worker_answers_are_refused_or_usable() {
    let target = Target {
        name: "snapshot/forged-answers",
        batch: 64,
    };
    fuzz(target, forged_answer(), check_answer);
}

#[test]
fn fuzz_snapshot_random_answers_are_refused() {
    let target = Target {
        name: "snapshot/random-answers",
        batch: 256,
    };
    fuzz(target, random_answer(), check_answer);
}

// ---------------------------------------------------------------------------
// The largest and nastiest answers, by hand

/// An honest answer made as large as the daemon reads (8 MiB) by one
/// service's environment of empty variables: the shape that costs the most
/// memory per byte.
fn huge_environment(target_bytes: usize) -> Answer {
    let mut answer = seeds()[0].clone();
    let name = first_name(&mut answer);
    let mut entries = target_bytes / 12;
    loop {
        let env: serde_json::Map<String, Value> = (0..entries)
            .map(|i| (format!("V{i}"), Value::from("")))
            .collect();
        services(&mut answer).unwrap()[&name]["environment"] = Value::Object(env);
        let bytes = serde_json::to_vec(&answer).unwrap();
        if bytes.len() <= target_bytes {
            return Answer(bytes);
        }
        entries -= (bytes.len() - target_bytes) / 10 + 1;
    }
}

/// The name of the first service of an answer.
fn first_name(answer: &mut Value) -> String {
    services(answer).unwrap().keys().next().unwrap().clone()
}

#[test]
fn the_largest_answer_decodes_within_its_allowance() {
    let answer = huge_environment(MAX_SNAPSHOT_BYTES as usize - 4096);
    assert!(
        answer.0.len() as u64 <= MAX_SNAPSHOT_BYTES,
        "{}",
        answer.0.len()
    );
    let (decoded, peak) = peak_allocation(|| Transfer::decode(&answer.0));
    assert!(decoded.is_ok(), "{:?}", decoded.err());
    println!(
        "a {} byte answer held {} bytes at once ({:.1} per byte)",
        answer.0.len(),
        peak,
        peak as f64 / answer.0.len() as f64
    );
    assert!(
        peak <= allowance(answer.0.len()),
        "a {} MiB answer held {} MiB at once",
        answer.0.len() >> 20,
        peak >> 20
    );
}

#[test]
fn a_huge_list_of_forged_names_is_refused_within_its_allowance() {
    let mut answer = seeds()[0].clone();
    let name = first_name(&mut answer);
    let service = services(&mut answer).unwrap()[&name].clone();
    // As many forged services as the daemon would read.
    let each = serde_json::to_vec(&service).unwrap().len() + 16;
    let services = services(&mut answer).unwrap();
    for i in 0..(MAX_SNAPSHOT_BYTES as usize - 4096) / each {
        services.insert(format!("../../{i}"), service.clone());
    }
    let answer = Answer(serde_json::to_vec(&answer).unwrap());
    guarded("snapshot/many-forged-names", &answer, || {
        let (decoded, peak) = peak_allocation(|| Transfer::decode(&answer.0));
        let err = decoded.expect_err("refused");
        assert!(err.contains("not a valid service name"), "{err}");
        assert!(
            err.contains("more"),
            "the problem list is not capped: {err}"
        );
        assert!(peak <= allowance(answer.0.len()), "{} MiB", peak >> 20);
    });
}

#[test]
fn deep_nesting_is_refused_without_recursing_far() {
    let depth = 1 << 20;
    let mut bytes = b"{\"config\":".to_vec();
    bytes.extend(std::iter::repeat_n(b'[', depth));
    bytes.extend(std::iter::repeat_n(b']', depth));
    bytes.push(b'}');
    let answer = Answer(bytes);
    guarded("snapshot/deep-nesting", &answer, || {
        let (decoded, peak) = peak_allocation(|| Transfer::decode(&answer.0));
        assert!(decoded.is_err());
        assert!(peak <= allowance(answer.0.len()));
    });
}

/// Each level lists the previous one ten times: a few hundred bytes that
/// would expand to 10^levels values.
fn alias_bomb(levels: usize) -> String {
    let mut text = String::from("x0: &l0 [a, a, a, a, a, a, a, a, a, a]\n");
    for level in 1..=levels {
        let items = vec![format!("*l{}", level - 1); 10].join(", ");
        text.push_str(&format!("x{level}: &l{level} [{items}]\n"));
    }
    text
}

#[test]
fn an_older_yaml_snapshot_with_aliases_is_refused_before_expanding() {
    let text = alias_bomb(9);
    guarded("snapshot/alias-bomb", &text, || {
        let (loaded, peak) = peak_allocation(|| load_snapshot(&text));
        let err = loaded.expect_err("refused").to_string();
        assert!(err.contains("alias"), "{err}");
        assert!(peak <= allowance(text.len()), "{} KiB", peak >> 10);
    });
}

#[test]
fn an_answer_using_the_old_yaml_transfer_is_refused() {
    let answer = serde_json::json!({
        "snapshot": alias_bomb(9),
        "source_text": "",
        "env_files": [],
    });
    let err = Transfer::decode(&serde_json::to_vec(&answer).unwrap()).unwrap_err();
    assert!(err.contains("not valid"), "{err}");
}
