//! Shared helpers for the log store tests: a store in a temp dir, pipes
//! pumped into it, followers read with deadlines, records read raw.
#![allow(dead_code)] // each test binary uses a different subset

use std::path::Path;
use std::time::Duration;

use kepler_daemon::logs::{
    self, record, Backlog, FollowEvent, Follower, LogLine, LogSettings, LogStore, Origin,
    PageLimit, PumpReport, Stream,
};
use tokio::io::AsyncWriteExt;
use tokio::net::unix::pipe;
use tokio::task::JoinHandle;
use tokio::time::timeout;

pub const DEADLINE: Duration = Duration::from_secs(20);

pub fn store() -> (tempfile::TempDir, LogStore) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = LogStore::open(dir.path().join("logs")).expect("open store");
    (dir, store)
}

/// A pipe whose read end is pumped into `store` as `service`'s `stream`.
pub fn start_pump(
    store: &LogStore,
    service: &str,
    stream: Stream,
    origin: Origin,
    settings: &LogSettings,
) -> (pipe::Sender, JoinHandle<PumpReport>) {
    let (tx, rx) = pipe::pipe().expect("pipe");
    let sink = store.sink(service, stream, origin, settings);
    (tx, tokio::spawn(logs::pump(rx, sink)))
}

pub fn stdout_pump(store: &LogStore, service: &str) -> (pipe::Sender, JoinHandle<PumpReport>) {
    start_pump(
        store,
        service,
        Stream::Stdout,
        Origin::Service,
        &LogSettings::default(),
    )
}

pub async fn finish(tx: pipe::Sender, pump: JoinHandle<PumpReport>) -> PumpReport {
    drop(tx);
    timeout(DEADLINE, pump)
        .await
        .expect("pump ends at EOF")
        .expect("pump task")
}

pub async fn next_line(follower: &mut Follower) -> LogLine {
    match timeout(DEADLINE, follower.next())
        .await
        .expect("a line in time")
    {
        Some(FollowEvent::Line(line)) => line,
        other => panic!("expected a line, got {other:?}"),
    }
}

pub async fn next_lines(follower: &mut Follower, n: usize) -> Vec<LogLine> {
    let mut lines = Vec::with_capacity(n);
    for _ in 0..n {
        lines.push(next_line(follower).await);
    }
    lines
}

/// Payloads of the raw records in a file, checking every record parses.
pub fn records_in(path: &Path) -> Vec<Vec<u8>> {
    let data = std::fs::read(path).unwrap_or_default();
    if data.is_empty() {
        return Vec::new();
    }
    assert_eq!(
        data.last(),
        Some(&b'\n'),
        "{} ends with a whole record",
        path.display()
    );
    data[..data.len() - 1]
        .split(|&b| b == b'\n')
        .map(|raw| {
            record::parse(raw)
                .unwrap_or_else(|| panic!("torn record in {}: {raw:?}", path.display()))
                .payload
                .to_vec()
        })
        .collect()
}

/// The numbers of every line a follow's backlog hands out, page by page.
pub fn backlog_numbers(backlog: &mut Backlog, page_lines: usize) -> Vec<u32> {
    let limit = PageLimit {
        lines: page_lines,
        text_bytes: usize::MAX,
    };
    let mut numbers = Vec::new();
    while let Some(page) = backlog.next_page(limit).unwrap() {
        assert!(page.len() <= page_lines);
        numbers.extend(page.iter().map(|l| number_in(l.bytes)));
    }
    numbers
}

pub fn text(lines: &[LogLine]) -> Vec<String> {
    lines
        .iter()
        .map(|l| String::from_utf8_lossy(&l.bytes).into_owned())
        .collect()
}

pub fn numbered(range: std::ops::RangeInclusive<u32>) -> String {
    range.map(|i| format!("line {i:06}\n")).collect()
}

pub fn number_of(line: &LogLine) -> u32 {
    number_in(&line.bytes)
}

pub fn number_in(bytes: &[u8]) -> u32 {
    std::str::from_utf8(bytes)
        .ok()
        .and_then(|s| s.strip_prefix("line "))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("not a numbered line: {:?}", String::from_utf8_lossy(bytes)))
}

pub fn stdout_path(store: &LogStore, service: &str) -> std::path::PathBuf {
    store.path().join(format!("{service}.stdout.log"))
}

/// Writes `line` on `tx` and waits until `follower` has it, so lines of
/// different pipes are stored in a known order.
pub async fn write_and_await(tx: &mut pipe::Sender, follower: &mut Follower, line: &str) {
    tx.write_all(format!("{line}\n").as_bytes()).await.unwrap();
    assert_eq!(text(&[next_line(follower).await]), [line]);
}

/// Every path under `root`.
pub fn walk(root: &Path) -> Vec<std::path::PathBuf> {
    let mut all = Vec::new();
    for entry in std::fs::read_dir(root).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            all.extend(walk(&path));
        }
        all.push(path);
    }
    all
}
