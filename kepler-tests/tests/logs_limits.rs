//! What bounds the log store keeps through real pipes: `max_size` as two
//! segments every reader joins, a follower that falls behind, files that
//! are not what they should be (a symlink, a FIFO, a name that is not a
//! file name), and logs written before segments existed.

mod logs_support;

use std::path::Path;

use kepler_daemon::logs::{self, record, FollowEvent, LogSettings, LogStore, Origin, Stream};
use logs_support::*;
use tokio::io::AsyncWriteExt;
use tokio::time::timeout;

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
