//! The log store driven through real pipes: what a service writes is what is
//! stored, read back, followed and paged. Every wait is on an event (a line
//! reaching a follower, a write reaching the disk, a pump ending) with a
//! deadline; no sleeps.

use std::path::Path;
use std::time::{Duration, Instant};

use kepler_daemon::logs::{
    self, record, Backlog, FollowEvent, Follower, LogError, LogLine, LogSettings, LogStore, Origin,
    PageLimit, PumpReport, Stream, MAX_LINE_BYTES,
};
use tokio::io::AsyncWriteExt;
use tokio::net::unix::pipe;
use tokio::task::JoinHandle;
use tokio::time::timeout;

const DEADLINE: Duration = Duration::from_secs(20);

fn store() -> (tempfile::TempDir, LogStore) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = LogStore::open(dir.path().join("logs")).expect("open store");
    (dir, store)
}

/// A pipe whose read end is pumped into `store` as `service`'s `stream`.
fn start_pump(
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

fn stdout_pump(store: &LogStore, service: &str) -> (pipe::Sender, JoinHandle<PumpReport>) {
    start_pump(
        store,
        service,
        Stream::Stdout,
        Origin::Service,
        &LogSettings::default(),
    )
}

async fn finish(tx: pipe::Sender, pump: JoinHandle<PumpReport>) -> PumpReport {
    drop(tx);
    timeout(DEADLINE, pump)
        .await
        .expect("pump ends at EOF")
        .expect("pump task")
}

async fn next_line(follower: &mut Follower) -> LogLine {
    match timeout(DEADLINE, follower.next())
        .await
        .expect("a line in time")
    {
        Some(FollowEvent::Line(line)) => line,
        other => panic!("expected a line, got {other:?}"),
    }
}

async fn next_lines(follower: &mut Follower, n: usize) -> Vec<LogLine> {
    let mut lines = Vec::with_capacity(n);
    for _ in 0..n {
        lines.push(next_line(follower).await);
    }
    lines
}

/// Payloads of the raw records in a file, checking every record parses.
fn records_in(path: &Path) -> Vec<Vec<u8>> {
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
fn backlog_numbers(backlog: &mut Backlog, page_lines: usize) -> Vec<u32> {
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

fn text(lines: &[LogLine]) -> Vec<String> {
    lines
        .iter()
        .map(|l| String::from_utf8_lossy(&l.bytes).into_owned())
        .collect()
}

fn numbered(range: std::ops::RangeInclusive<u32>) -> String {
    range.map(|i| format!("line {i:06}\n")).collect()
}

fn number_of(line: &LogLine) -> u32 {
    number_in(&line.bytes)
}

fn number_in(bytes: &[u8]) -> u32 {
    std::str::from_utf8(bytes)
        .ok()
        .and_then(|s| s.strip_prefix("line "))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("not a numbered line: {:?}", String::from_utf8_lossy(bytes)))
}

fn stdout_path(store: &LogStore, service: &str) -> std::path::PathBuf {
    store.path().join(format!("{service}.stdout.log"))
}

#[tokio::test]
async fn partial_last_line_is_stored_when_the_pipe_closes() {
    let (_dir, store) = store();
    let (mut tx, pump) = stdout_pump(&store, "web");
    tx.write_all(b"first\n\nthird without newline")
        .await
        .unwrap();
    let report = finish(tx, pump).await;
    assert_eq!(report.lines, 3);
    let lines = logs::head(store.dir(), &[], 10, true).unwrap();
    assert_eq!(text(&lines), ["first", "", "third without newline"]);
    assert!(lines
        .iter()
        .all(|l| l.service == "web" && l.stream == Stream::Stdout));
}

#[tokio::test]
async fn a_200_kib_line_is_stored_as_64_kib_records_in_order() {
    let (_dir, store) = store();
    let (mut tx, pump) = stdout_pump(&store, "web");
    let line: Vec<u8> = (0..200 * 1024).map(|i| b'a' + (i % 26) as u8).collect();
    tx.write_all(&line).await.unwrap();
    tx.write_all(b"\nafter\n").await.unwrap();
    finish(tx, pump).await;
    let records = records_in(&stdout_path(&store, "web"));
    let sizes: Vec<usize> = records.iter().map(Vec::len).collect();
    assert_eq!(
        sizes,
        [MAX_LINE_BYTES, MAX_LINE_BYTES, MAX_LINE_BYTES, 8 * 1024, 5]
    );
    assert_eq!(records[..4].concat(), line);
}

#[tokio::test]
async fn non_utf8_bytes_are_stored_exactly() {
    let (_dir, store) = store();
    let (mut tx, pump) = stdout_pump(&store, "bin");
    tx.write_all(b"\xff\xfe\x00 caf\xc3\xa9\r\n").await.unwrap();
    finish(tx, pump).await;
    let lines = logs::tail(store.dir(), &[], 1, true).unwrap();
    assert_eq!(lines[0].bytes, b"\xff\xfe\x00 caf\xc3\xa9\r");
}

#[tokio::test]
async fn stdout_and_stderr_are_stored_in_separate_files() {
    let (_dir, store) = store();
    let settings = LogSettings::default();
    let (mut out, out_pump) = start_pump(&store, "api", Stream::Stdout, Origin::Service, &settings);
    let (mut err, err_pump) = start_pump(&store, "api", Stream::Stderr, Origin::Service, &settings);
    out.write_all(b"to stdout\n").await.unwrap();
    err.write_all(b"to stderr\n").await.unwrap();
    finish(out, out_pump).await;
    finish(err, err_pump).await;
    assert_eq!(
        records_in(&store.path().join("api.stdout.log")),
        [b"to stdout"]
    );
    assert_eq!(
        records_in(&store.path().join("api.stderr.log")),
        [b"to stderr"]
    );
    let lines = logs::tail(store.dir(), &[], 10, true).unwrap();
    let streams: Vec<_> = lines
        .iter()
        .map(|l| (text(std::slice::from_ref(l))[0].clone(), l.stream))
        .collect();
    assert!(streams.contains(&("to stdout".into(), Stream::Stdout)));
    assert!(streams.contains(&("to stderr".into(), Stream::Stderr)));
}

#[tokio::test]
async fn unstored_stdout_writes_nothing_but_followers_still_see_it() {
    let (_dir, store) = store();
    let settings = LogSettings {
        store_stdout: false,
        ..LogSettings::default()
    };
    let mut follower = store.subscribe(&[], true);
    let (mut tx, pump) = start_pump(&store, "quiet", Stream::Stdout, Origin::Service, &settings);
    tx.write_all(b"seen live\n").await.unwrap();
    assert_eq!(text(&[next_line(&mut follower).await]), ["seen live"]);
    finish(tx, pump).await;
    assert!(!stdout_path(&store, "quiet").exists());
    assert!(logs::tail(store.dir(), &[], 10, true).unwrap().is_empty());
}

#[tokio::test]
async fn unbuffered_lines_are_in_the_file_as_soon_as_they_are_published() {
    let (_dir, store) = store();
    let mut follower = store.subscribe(&[], true);
    let (mut tx, pump) = stdout_pump(&store, "web");
    for i in 1..=20u32 {
        tx.write_all(numbered(i..=i).as_bytes()).await.unwrap();
        assert_eq!(number_of(&next_line(&mut follower).await), i);
        // Published means written: the file holds every line so far.
        assert_eq!(records_in(&stdout_path(&store, "web")).len(), i as usize);
    }
    finish(tx, pump).await;
}

#[tokio::test]
async fn buffered_lines_are_written_when_the_pipe_goes_idle() {
    let (_dir, store) = store();
    let settings = LogSettings {
        buffer_size: 1024 * 1024,
        ..LogSettings::default()
    };
    let mut follower = store.subscribe(&[], true);
    let mut writes = store.writes();
    let (mut tx, pump) = start_pump(&store, "web", Stream::Stdout, Origin::Service, &settings);
    tx.write_all(numbered(1..=3).as_bytes()).await.unwrap();
    next_lines(&mut follower, 3).await;
    // The pipe stays open and silent: the idle flush must write the lines.
    while records_in(&stdout_path(&store, "web")).len() < 3 {
        timeout(DEADLINE, writes.changed())
            .await
            .expect("idle flush in time")
            .unwrap();
    }
    finish(tx, pump).await;
    assert_eq!(records_in(&stdout_path(&store, "web")).len(), 3);
}

#[tokio::test]
async fn buffered_lines_are_written_at_eof_and_on_flush() {
    let (_dir, store) = store();
    let settings = LogSettings {
        buffer_size: 1024 * 1024,
        ..LogSettings::default()
    };
    let (mut tx, pump) = start_pump(&store, "eof", Stream::Stdout, Origin::Service, &settings);
    tx.write_all(numbered(1..=100).as_bytes()).await.unwrap();
    finish(tx, pump).await;
    assert_eq!(records_in(&stdout_path(&store, "eof")).len(), 100);

    let mut follower = store.subscribe(&["flushed".to_string()], true);
    let (mut tx, pump) = start_pump(
        &store,
        "flushed",
        Stream::Stdout,
        Origin::Service,
        &settings,
    );
    tx.write_all(numbered(1..=5).as_bytes()).await.unwrap();
    next_lines(&mut follower, 5).await;
    let flusher = store.clone();
    tokio::task::spawn_blocking(move || flusher.flush())
        .await
        .unwrap();
    assert_eq!(records_in(&stdout_path(&store, "flushed")).len(), 5);
    finish(tx, pump).await;
}

#[tokio::test]
async fn max_size_keeps_the_newest_lines_in_two_segments_of_half_its_size() {
    let (_dir, store) = store();
    let max_size = 64 * 1024;
    let settings = LogSettings {
        max_size: Some(max_size),
        ..LogSettings::default()
    };
    let (mut tx, pump) = start_pump(&store, "big", Stream::Stdout, Origin::Service, &settings);
    // Line by line and in bulk, so rotation meets small and large batches.
    for i in 1..=200 {
        tx.write_all(numbered(i..=i).as_bytes()).await.unwrap();
    }
    tx.write_all(numbered(201..=10_000).as_bytes())
        .await
        .unwrap();
    finish(tx, pump).await;

    let current = stdout_path(&store, "big");
    let previous = store.path().join("big.stdout.log.1");
    let size = |path: &Path| std::fs::metadata(path).map_or(0, |m| m.len());
    assert!(
        size(&current) <= max_size / 2 && size(&previous) <= max_size / 2,
        "segments of {} and {} bytes, max_size {max_size}",
        size(&previous),
        size(&current)
    );
    assert!(
        size(&current) + size(&previous) >= max_size / 2,
        "at least half of max_size is kept"
    );
    // Every record is whole, and what is kept is the newest lines, contiguous,
    // the previous segment's before the current one's.
    let mut kept: Vec<u32> = records_in(&previous).iter().map(|r| number_in(r)).collect();
    kept.extend(records_in(&current).iter().map(|r| number_in(r)));
    let first = 10_001 - kept.len() as u32;
    assert_eq!(kept, (first..=10_000).collect::<Vec<_>>());
    let all: Vec<u32> = logs::read_all(store.dir(), &[], true)
        .unwrap()
        .map(|l| number_of(&l))
        .collect();
    assert_eq!(all, kept);
    let tail: Vec<u32> = logs::tail(store.dir(), &[], 50, true)
        .unwrap()
        .iter()
        .map(number_of)
        .collect();
    assert_eq!(tail, (9_951..=10_000).collect::<Vec<_>>());
}

/// Writes `line` on `tx` and waits until `follower` has it, so lines of
/// different pipes are stored in a known order.
async fn write_and_await(tx: &mut pipe::Sender, follower: &mut Follower, line: &str) {
    tx.write_all(format!("{line}\n").as_bytes()).await.unwrap();
    assert_eq!(text(&[next_line(follower).await]), [line]);
}

#[tokio::test]
async fn tail_and_head_merge_services_in_time_order() {
    let (_dir, store) = store();
    let mut follower = store.subscribe(&[], true);
    let mut pipes: Vec<_> = ["a", "b", "c"]
        .iter()
        .map(|s| stdout_pump(&store, s))
        .collect();
    let mut written = Vec::new();
    for round in 0..4 {
        for (i, (tx, _)) in pipes.iter_mut().enumerate() {
            let line = format!("{} {round}", ["a", "b", "c"][i]);
            write_and_await(tx, &mut follower, &line).await;
            written.push(line);
        }
    }
    for (tx, pump) in pipes.drain(..) {
        finish(tx, pump).await;
    }
    let tail = logs::tail(store.dir(), &[], 5, true).unwrap();
    assert_eq!(text(&tail), written[written.len() - 5..]);
    let head = logs::head(store.dir(), &[], 5, true).unwrap();
    assert_eq!(text(&head), written[..5]);
    assert!(head
        .windows(2)
        .all(|w| w[0].timestamp_us < w[1].timestamp_us));

    let only_b_c = ["b".to_string(), "c".to_string()];
    let tail = logs::tail(store.dir(), &only_b_c, 3, true).unwrap();
    assert_eq!(text(&tail), ["c 2", "b 3", "c 3"]);
    let all: Vec<String> = text(
        &logs::read_all(store.dir(), &[], true)
            .unwrap()
            .collect::<Vec<_>>(),
    );
    assert_eq!(all, written);
}

#[tokio::test]
async fn hook_lines_share_the_service_files_and_can_be_hidden() {
    let (_dir, store) = store();
    let settings = LogSettings::default();
    let mut all = store.subscribe(&[], true);
    let mut no_hooks = store.subscribe(&[], false);
    let (mut hook, hook_pump) = start_pump(
        &store,
        "db",
        Stream::Stdout,
        Origin::Hook("pre_start".into()),
        &settings,
    );
    write_and_await(&mut hook, &mut all, "migrating").await;
    finish(hook, hook_pump).await;
    let (mut svc, svc_pump) = stdout_pump(&store, "db");
    write_and_await(&mut svc, &mut all, "ready").await;
    finish(svc, svc_pump).await;

    let with = logs::tail(store.dir(), &[], 10, true).unwrap();
    assert_eq!(text(&with), ["migrating", "ready"]);
    assert_eq!(with[0].origin, Origin::Hook("pre_start".into()));
    assert_eq!(with[1].origin, Origin::Service);
    assert_eq!(records_in(&stdout_path(&store, "db")).len(), 2);
    assert_eq!(
        text(&logs::tail(store.dir(), &[], 10, false).unwrap()),
        ["ready"]
    );
    assert_eq!(
        text(&logs::head(store.dir(), &[], 10, false).unwrap()),
        ["ready"]
    );
    // The hook-less follower skips straight to the service's line.
    assert_eq!(text(&[next_line(&mut no_hooks).await]), ["ready"]);
}

#[tokio::test]
async fn tail_cost_does_not_grow_with_file_size() {
    let (_dir, store) = store();
    std::fs::create_dir_all(store.path()).unwrap();
    // ~50 MB of 100-byte records, written directly (pumping 50 MB in a debug
    // build would dominate the test's time).
    let mut data = Vec::with_capacity(52 * 1024 * 1024);
    let payload = [b'x'; 80];
    let mut ts = 1_000_000u64;
    while data.len() < 50 * 1024 * 1024 {
        record::encode(&mut data, ts, b"-", &payload);
        ts += 1;
    }
    std::fs::write(stdout_path(&store, "huge"), &data).unwrap();
    std::fs::write(stdout_path(&store, "tiny"), &data[..100 * 100]).unwrap();

    let time_tail = |service: &str| {
        let services = [service.to_string()];
        (0..3)
            .map(|_| {
                let started = Instant::now();
                let lines = logs::tail(store.dir(), &services, 100, true).unwrap();
                assert_eq!(lines.len(), 100);
                started.elapsed()
            })
            .min()
            .unwrap()
    };
    let tiny = time_tail("tiny");
    let huge = time_tail("huge");
    eprintln!("tail 100: 10 KB file {tiny:?}, 50 MB file {huge:?}");
    // Reading the whole file would take far longer than this even when cached.
    assert!(
        huge < Duration::from_millis(50),
        "tail of 50 MB took {huge:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follow_joins_the_stored_tail_and_live_lines_without_gap_or_duplicate() {
    let (_dir, store) = store();
    let mut progress = store.subscribe(&[], true);
    let (mut tx, pump) = stdout_pump(&store, "web");
    // A writer racing the follower's tail read.
    let writer = tokio::spawn(async move {
        for chunk in 0..100u32 {
            tx.write_all(numbered(chunk * 20 + 1..=chunk * 20 + 20).as_bytes())
                .await
                .unwrap();
            tokio::task::yield_now().await;
        }
        tx
    });
    // Join mid-stream: after line 500 was stored.
    while number_of(&next_line(&mut progress).await) < 500 {}
    let (mut backlog, mut follower) = store.follow(&[], 100, true).await.unwrap();
    let mut seen = backlog_numbers(&mut backlog, 7);
    assert!(!seen.is_empty());
    while *seen.last().unwrap() < 2000 {
        seen.push(number_of(&next_line(&mut follower).await));
    }
    let first = seen[0];
    assert_eq!(seen, (first..=2000).collect::<Vec<_>>());
    finish(writer.await.unwrap(), pump).await;
}

#[tokio::test]
async fn follow_carries_on_across_truncation_and_a_service_restart() {
    let (_dir, store) = store();
    let settings = LogSettings {
        max_size: Some(16 * 1024),
        ..LogSettings::default()
    };
    let (mut backlog, mut follower) = store.follow(&["web".to_string()], 10, true).await.unwrap();
    assert!(backlog_numbers(&mut backlog, 10).is_empty());

    let (mut tx, pump) = start_pump(&store, "web", Stream::Stdout, Origin::Service, &settings);
    tx.write_all(numbered(1..=3000).as_bytes()).await.unwrap();
    finish(tx, pump).await;
    // The restarted service gets a new pipe and pump on the same files.
    let (mut tx, pump) = start_pump(&store, "web", Stream::Stdout, Origin::Service, &settings);
    tx.write_all(numbered(3001..=6000).as_bytes())
        .await
        .unwrap();

    let seen: Vec<u32> = next_lines(&mut follower, 6000)
        .await
        .iter()
        .map(number_of)
        .collect();
    assert_eq!(seen, (1..=6000).collect::<Vec<_>>());
    finish(tx, pump).await;
    assert!(std::fs::metadata(stdout_path(&store, "web")).unwrap().len() <= 16 * 1024);
    let tail: Vec<u32> = logs::tail(store.dir(), &[], 3, true)
        .unwrap()
        .iter()
        .map(number_of)
        .collect();
    assert_eq!(tail, [5998, 5999, 6000]);
}

#[tokio::test]
async fn a_lagging_follower_does_not_block_writers_and_learns_what_it_missed() {
    let (_dir, store) = store();
    let mut lagging = store.subscribe(&[], true);
    let mut active = store.subscribe(&[], true);
    let (mut tx, pump) = stdout_pump(&store, "chatty");
    // Twice what the followers' ring keeps, in lines of 100 bytes.
    let total = (2 * logs::follow::RING_BYTES / 100) as u32;
    let pad = "x".repeat(88);
    let mut next = 1;
    while next <= total {
        let chunk: String = (next..(next + 500).min(total + 1))
            .map(|i| format!("line {i:06}{pad}\n"))
            .collect();
        tx.write_all(chunk.as_bytes()).await.unwrap();
        for i in next..(next + 500).min(total + 1) {
            let line = next_line(&mut active).await;
            assert_eq!(number_in(&line.bytes[..11]), i);
        }
        next += 500;
    }
    finish(tx, pump).await;

    let missed = match timeout(DEADLINE, lagging.next()).await.unwrap() {
        Some(FollowEvent::Missed(n)) => n,
        other => panic!("expected a gap report, got {other:?}"),
    };
    assert!(missed > 0 && missed < u64::from(total));
    let rest: Vec<u32> = next_lines(&mut lagging, (u64::from(total) - missed) as usize)
        .await
        .iter()
        .map(|l| number_in(&l.bytes[..11]))
        .collect();
    assert_eq!(rest, (missed as u32 + 1..=total).collect::<Vec<_>>());
}

#[tokio::test]
async fn clearing_while_a_pump_writes_keeps_only_later_lines() {
    let (_dir, store) = store();
    let mut follower = store.subscribe(&[], true);
    let (mut tx, pump) = stdout_pump(&store, "web");
    tx.write_all(numbered(1..=100).as_bytes()).await.unwrap();
    next_lines(&mut follower, 100).await;
    let clearer = store.clone();
    tokio::task::spawn_blocking(move || clearer.clear("web"))
        .await
        .unwrap()
        .unwrap();
    assert!(records_in(&stdout_path(&store, "web")).is_empty());

    tx.write_all(numbered(101..=150).as_bytes()).await.unwrap();
    next_lines(&mut follower, 50).await;
    // The directory-level clear (no store at hand) is also safe for the writer.
    logs::clear(store.dir(), "web").unwrap();
    tx.write_all(numbered(151..=160).as_bytes()).await.unwrap();
    finish(tx, pump).await;
    let lines: Vec<u32> = logs::read_all(store.dir(), &[], true)
        .unwrap()
        .map(|l| number_of(&l))
        .collect();
    assert_eq!(lines, (151..=160).collect::<Vec<_>>());

    logs::clear_all(store.dir()).unwrap();
    assert!(logs::tail(store.dir(), &[], 10, true).unwrap().is_empty());
}

#[tokio::test]
async fn cursor_pages_through_a_log_and_expires_when_idle() {
    let (_dir, store) = store();
    let (mut tx, pump) = stdout_pump(&store, "web");
    tx.write_all(numbered(1..=250).as_bytes()).await.unwrap();
    let mut follower = store.subscribe(&[], true);
    let (mut tx2, pump2) = stdout_pump(&store, "other");
    tx2.write_all(b"other line\n").await.unwrap();
    next_line(&mut follower).await;
    finish(tx, pump).await;

    let cursors = store.cursors();
    let now = Instant::now();
    let id = cursors.open_at(&["web".to_string()], true, now);
    let mut pages = Vec::new();
    loop {
        let page = cursors.next_page_at(id, 100, now).unwrap();
        pages.push(
            page.lines
                .iter()
                .map(|l| number_in(l.bytes))
                .collect::<Vec<_>>(),
        );
        if !page.more {
            break;
        }
    }
    assert_eq!(
        pages.iter().map(Vec::len).collect::<Vec<_>>(),
        [100, 100, 50]
    );
    assert_eq!(pages.concat(), (1..=250).collect::<Vec<_>>());

    // Lines stored later are the next page of the same cursor.
    let (mut tx, pump) = stdout_pump(&store, "web");
    tx.write_all(numbered(251..=260).as_bytes()).await.unwrap();
    finish(tx, pump).await;
    let page = cursors.next_page_at(id, 100, now).unwrap();
    assert_eq!(
        page.lines
            .iter()
            .map(|l| number_in(l.bytes))
            .collect::<Vec<_>>(),
        (251..=260).collect::<Vec<_>>()
    );

    // Used within the idle limit it lives; past it, it is gone.
    let later = now + Duration::from_secs(59);
    assert!(cursors.next_page_at(id, 1, later).is_ok());
    let expired = cursors.next_page_at(id, 1, later + Duration::from_secs(61));
    assert!(
        matches!(expired, Err(LogError::UnknownCursor(..))),
        "{expired:?}"
    );
    finish(tx2, pump2).await;
}

#[tokio::test]
async fn cursors_per_config_are_bounded() {
    let (_dir, store) = store();
    let cursors = store.cursors();
    let now = Instant::now();
    let first = cursors.open_at(&[], true, now);
    for i in 1..=100u64 {
        cursors.open_at(&[], true, now + Duration::from_millis(i));
    }
    assert_eq!(
        cursors.count_at(now + Duration::from_secs(1)),
        logs::cursor::MAX_CURSORS
    );
    assert!(matches!(
        cursors.next_page_at(first, 1, now + Duration::from_secs(1)),
        Err(LogError::UnknownCursor(..))
    ));
}

#[tokio::test]
async fn timestamps_stay_unique_and_ordered_across_a_daemon_restart() {
    let (dir, store) = store();
    let (mut tx, pump) = stdout_pump(&store, "web");
    tx.write_all(numbered(1..=1000).as_bytes()).await.unwrap();
    finish(tx, pump).await;
    drop(store);

    let store = LogStore::open(dir.path().join("logs")).unwrap();
    let (mut tx, pump) = stdout_pump(&store, "web");
    tx.write_all(numbered(1001..=1010).as_bytes())
        .await
        .unwrap();
    finish(tx, pump).await;
    let lines: Vec<LogLine> = logs::read_all(store.dir(), &[], true).unwrap().collect();
    assert_eq!(lines.len(), 1010);
    assert!(lines
        .windows(2)
        .all(|w| w[0].timestamp_us < w[1].timestamp_us));
    assert_eq!(
        lines.iter().map(number_of).collect::<Vec<_>>(),
        (1..=1010).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn a_broken_log_file_never_stops_the_pipe_from_draining() {
    let (_dir, store) = store();
    let path = stdout_path(&store, "web");
    // A symlink where the log file should be: O_NOFOLLOW refuses it.
    let target = store.path().join("elsewhere");
    std::os::unix::fs::symlink(&target, &path).unwrap();
    let mut follower = store.subscribe(&[], true);
    let (mut tx, pump) = stdout_pump(&store, "web");
    tx.write_all(numbered(1..=1000).as_bytes()).await.unwrap();
    next_lines(&mut follower, 1000).await;
    assert!(!target.exists(), "the symlink was not followed");

    // Once the path is usable again, the writer reopens it.
    std::fs::remove_file(&path).unwrap();
    tx.write_all(numbered(1001..=1002).as_bytes())
        .await
        .unwrap();
    next_lines(&mut follower, 2).await;
    let report = finish(tx, pump).await;
    assert_eq!(report.lines, 1002);
    assert_eq!(records_in(&path), [b"line 001001", b"line 001002"]);
}

#[tokio::test]
async fn a_fifo_planted_as_a_log_file_is_refused_without_blocking_the_pipe() {
    let (_dir, store) = store();
    let path = stdout_path(&store, "web");
    nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o666)).unwrap();
    let mut follower = store.subscribe(&[], true);
    let (mut tx, pump) = stdout_pump(&store, "web");
    tx.write_all(numbered(1..=1000).as_bytes()).await.unwrap();
    next_lines(&mut follower, 1000).await;

    std::fs::remove_file(&path).unwrap();
    tx.write_all(numbered(1001..=1002).as_bytes())
        .await
        .unwrap();
    next_lines(&mut follower, 2).await;
    let report = finish(tx, pump).await;
    assert_eq!(report.lines, 1002);
    assert_eq!(records_in(&path), [b"line 001001", b"line 001002"]);
}

#[tokio::test]
async fn a_service_name_that_is_not_a_file_name_stores_nothing_anywhere() {
    let (dir, store) = store();
    let mut follower = store.subscribe(&[], true);
    let (mut tx, pump) = stdout_pump(&store, "../escaped");
    tx.write_all(b"still followed\n").await.unwrap();
    assert_eq!(text(&[next_line(&mut follower).await]), ["still followed"]);
    finish(tx, pump).await;
    let mut found = Vec::new();
    for entry in walk(dir.path()) {
        found.push(
            entry
                .strip_prefix(dir.path())
                .unwrap()
                .display()
                .to_string(),
        );
    }
    assert_eq!(found, ["logs"], "no file was created");
}

fn walk(root: &Path) -> Vec<std::path::PathBuf> {
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

#[tokio::test]
async fn a_single_file_log_from_before_segments_keeps_its_newest_half_and_reads_as_one() {
    let (_dir, store) = store();
    // An old-style log: one file of 100,000 bytes of records.
    let mut old = Vec::new();
    for i in 1..=1000u32 {
        record::encode(
            &mut old,
            u64::from(i),
            b"-",
            format!("line {i:06}{}", "o".repeat(70)).as_bytes(),
        );
    }
    std::fs::write(stdout_path(&store, "web"), &old).unwrap();
    let store = LogStore::open(store.path()).unwrap();
    let settings = LogSettings {
        max_size: Some(32 * 1024),
        ..LogSettings::default()
    };
    let (mut tx, pump) = start_pump(&store, "web", Stream::Stdout, Origin::Service, &settings);
    tx.write_all(numbered(1001..=1010).as_bytes())
        .await
        .unwrap();
    finish(tx, pump).await;
    let previous = store.path().join("web.stdout.log.1");
    let kept_old = records_in(&previous);
    assert!(std::fs::metadata(&previous).unwrap().len() <= 16 * 1024);
    assert!(kept_old.len() >= 150, "the newest half is kept");
    let numbers: Vec<u32> = logs::read_all(store.dir(), &[], true)
        .unwrap()
        .map(|l| number_in(&l.bytes[..11]))
        .collect();
    let first = 1001 - kept_old.len() as u32;
    assert_eq!(numbers, (first..=1010).collect::<Vec<_>>());
}
