//! The log store driven through real pipes: what a service writes is what is
//! stored, read back, followed and paged. Every wait is on an event (a line
//! reaching a follower, a write reaching the disk, a pump ending) with a
//! deadline; no sleeps.

mod logs_support;

use std::time::{Duration, Instant};

use kepler_daemon::logs::{
    self, record, LogError, LogLine, LogSettings, LogStore, Origin, Stream, MAX_LINE_BYTES,
};
use logs_support::*;
use tokio::io::AsyncWriteExt;
use tokio::time::timeout;

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
    let (_dir, store) = reopened_after_writing(1..=1000).await;
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

/// A stop clears a service's logs by default, and most services never write:
/// clearing a stream with no lines must not skip the lines an earlier daemon
/// left, which this store's writer has not seen written.
#[tokio::test]
async fn a_clear_empties_lines_an_earlier_store_left_before_any_new_write() {
    // A daemon started again: the service runs and writes nothing, then stops.
    let (_dir, store) = reopened_after_writing(1..=20).await;
    let (tx, pump) = stdout_pump(&store, "web");
    let (quiet_tx, quiet_pump) = stdout_pump(&store, "quiet");
    finish(tx, pump).await;
    finish(quiet_tx, quiet_pump).await;
    assert_eq!(records_in(&stdout_path(&store, "web")).len(), 20);
    let clearer = store.clone();
    tokio::task::spawn_blocking(move || {
        clearer.clear("web")?;
        clearer.clear("quiet")
    })
    .await
    .unwrap()
    .unwrap();
    assert!(records_in(&stdout_path(&store, "web")).is_empty());
    assert!(logs::read_all(store.dir(), &[], true)
        .unwrap()
        .next()
        .is_none());

    // Written after the clear, cleared again.
    let (mut tx, pump) = stdout_pump(&store, "quiet");
    tx.write_all(numbered(21..=22).as_bytes()).await.unwrap();
    finish(tx, pump).await;
    assert_eq!(records_in(&stdout_path(&store, "quiet")).len(), 2);
    let clearer = store.clone();
    tokio::task::spawn_blocking(move || clearer.clear("quiet"))
        .await
        .unwrap()
        .unwrap();
    assert!(records_in(&stdout_path(&store, "quiet")).is_empty());
}

/// A store opened again (a daemon started again) on the directory where an
/// earlier store wrote `lines` to web's stdout.
async fn reopened_after_writing(
    lines: std::ops::RangeInclusive<u32>,
) -> (tempfile::TempDir, LogStore) {
    let (dir, store) = store();
    let (mut tx, pump) = stdout_pump(&store, "web");
    tx.write_all(numbered(lines).as_bytes()).await.unwrap();
    finish(tx, pump).await;
    drop(store);
    let store = LogStore::open(dir.path().join("logs")).expect("open store");
    (dir, store)
}
