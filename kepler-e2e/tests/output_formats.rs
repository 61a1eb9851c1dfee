//! `--json` and `--raw` for `kepler logs` (also `--follow`) and attached
//! `start` and `run`.

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::mpsc;

use kepler_e2e::{Kepler, DEADLINE};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;

/// A service that writes to both streams, with a hook that writes too.
const CHATTY: &str = r#"services:
  web:
    command: ["sh", "-c", "echo out one; echo 'err \"two\"' >&2; printf 'tab\there\n'"]
    hooks:
      pre_start:
        run: echo from the hook
"#;

/// Each line parsed as a JSON object (panics naming the line that is not).
fn parse_json_lines(stdout: &str) -> Vec<Value> {
    stdout
        .lines()
        .map(|line| {
            let value: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("not a JSON line ({e}): {line:?}"));
            assert!(value.is_object(), "{line}");
            value
        })
        .collect()
}

/// RFC 3339 in UTC with microseconds: `2026-11-23T18:19:25.123456Z`.
fn is_rfc3339_micros(time: &str) -> bool {
    let bytes = time.as_bytes();
    time.len() == 27
        && time.ends_with('Z')
        && bytes[10] == b'T'
        && bytes[19] == b'.'
        && time[20..26].bytes().all(|b| b.is_ascii_digit())
}

fn assert_fields(lines: &[Value]) {
    for line in lines {
        assert!(
            is_rfc3339_micros(line["time"].as_str().unwrap_or("")),
            "{line}"
        );
        assert!(line["service"].is_string(), "{line}");
        assert!(
            ["stdout", "stderr"].contains(&line["stream"].as_str().unwrap_or("")),
            "{line}"
        );
        assert!(line["line"].is_string(), "{line}");
        // Only replicated services have instances.
        assert!(line.get("replica").is_none(), "{line}");
    }
}

fn find<'a>(lines: &'a [Value], text: &str) -> &'a Value {
    lines
        .iter()
        .find(|l| l["line"] == text)
        .unwrap_or_else(|| panic!("no line {text:?} in {lines:#?}"))
}

#[test]
fn logs_json_lines_parse_and_carry_every_field() {
    let kepler = Kepler::started();
    kepler.write("kepler.yaml", CHATTY);
    kepler.kepler(&["start"]).success();
    let run = kepler.kepler(&["logs", "--json"]);
    run.success();
    let lines = parse_json_lines(&run.stdout);
    assert_fields(&lines);
    let out = find(&lines, "out one");
    assert_eq!(out["service"], "web");
    assert_eq!(out["stream"], "stdout");
    assert!(out.get("hook").is_none(), "{out}");
    let err = find(&lines, "err \"two\"");
    assert_eq!(err["stream"], "stderr");
    assert_eq!(find(&lines, "tab\there")["service"], "web");
    let hook = find(&lines, "from the hook");
    assert_eq!(hook["hook"], "pre_start");
    assert_eq!(hook["service"], "web");
    // Times are in order, as the text form's.
    let times: Vec<&str> = lines.iter().map(|l| l["time"].as_str().unwrap()).collect();
    let mut sorted = times.clone();
    sorted.sort();
    assert_eq!(times, sorted);
    // --tail and service filters combine with it.
    let run = kepler.kepler(&["logs", "--json", "--tail", "1", "web"]);
    assert_eq!(parse_json_lines(&run.stdout).len(), 1, "{run}");
}

#[test]
fn logs_follow_json_streams_parseable_lines() {
    let kepler = Kepler::started();
    kepler.write(
        "kepler.yaml",
        "services:\n  ticker:\n    command: [\"sh\", \"-c\", \"echo first; until [ -f go ]; do sleep 0.02; done; echo second; sleep 1000\"]\n",
    );
    kepler.kepler(&["start", "-d", "--wait"]).success();
    kepler.wait_for_log("kepler.yaml", "first");
    let mut child = kepler
        .command("kepler")
        .args(["logs", "--follow", "--json"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let next = || {
        let line = lines.recv_timeout(DEADLINE).expect("a followed line");
        parse_json_lines(&line).remove(0)
    };
    let first = next();
    assert_fields(std::slice::from_ref(&first));
    assert_eq!(first["line"], "first");
    kepler.write("go", "");
    let second = next();
    assert_eq!(second["line"], "second");
    assert_eq!(second["service"], "ticker");
    kill(Pid::from_raw(child.id() as i32), Signal::SIGINT).unwrap();
    child.wait().unwrap();
    kepler.kepler(&["stop"]).success();
}

#[test]
fn attached_start_and_run_json_name_keplers_notes_service_kepler() {
    let kepler = Kepler::started();
    kepler.write(
        "kepler.yaml",
        "services:\n  job:\n    command: [\"sh\", \"-c\", \"echo working; exit 2\"]\n",
    );
    for verb in ["start", "run"] {
        let run = kepler.kepler(&[verb, "--json"]);
        let lines = parse_json_lines(&run.stdout);
        assert_fields(&lines);
        assert_eq!(find(&lines, "working")["service"], "job", "{verb}");
        let note = find(&lines, "job exited (2)");
        assert_eq!(note["service"], "kepler", "{verb}");
        assert!(note.get("hook").is_none());
    }
}

#[test]
fn raw_is_the_bytes_services_wrote_without_prefixes_or_notes() {
    let kepler = Kepler::started();
    kepler.write(
        "kepler.yaml",
        "services:\n  web:\n    command: [\"sh\", \"-c\", \"printf 'plain\\\\n\\\\033[1mbold\\\\033[0m\\\\n'; echo err >&2\"]\n",
    );
    let run = kepler.kepler(&["start", "--raw"]);
    run.success();
    let mut got: Vec<&str> = run.stdout.lines().collect();
    got.sort();
    assert_eq!(got, ["\x1b[1mbold\x1b[0m", "err", "plain"], "{run}");
    let run = kepler.kepler(&["logs", "--raw", "--no-hook"]);
    run.success();
    let mut got: Vec<&str> = run.stdout.lines().collect();
    got.sort();
    assert_eq!(got, ["\x1b[1mbold\x1b[0m", "err", "plain"], "{run}");
    assert!(!run.stdout.contains(" | "), "{run}");
}
