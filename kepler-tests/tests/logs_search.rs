//! Log search in the store: time windows found by binary search in every
//! segment, patterns applied where lines are read, and both combined with
//! tails, heads, cursor pages and a follow's backlog.

use kepler_daemon::logs::{self, record, LineFilter, LogDir, LogStore, PageLimit};
use kepler_protocol::LogFilter;

/// `web` has a previous and a current stdout segment (lines 1..=50 and
/// 51..=100, stamped 10 µs apart from 10) and stderr lines between them;
/// `db` has its own lines and a hook's.
fn stored() -> (tempfile::TempDir, LogDir) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (mut previous, mut current, mut errors, mut db) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for i in 1..=100u64 {
        let file = if i <= 50 { &mut previous } else { &mut current };
        record::encode(file, i * 10, b"-", format!("web line {i}").as_bytes());
        record::encode(
            &mut errors,
            i * 10 + 1,
            b"-",
            format!("web ERROR {i}").as_bytes(),
        );
        let tag: &[u8] = if i % 10 == 0 { b"post_exit" } else { b"-" };
        record::encode(&mut db, i * 10 + 2, tag, format!("db line {i}").as_bytes());
    }
    for (name, data) in [
        ("web.stdout.log.1", previous),
        ("web.stdout.log", current),
        ("web.stderr.log", errors),
        ("db.stdout.log", db),
    ] {
        std::fs::write(tmp.path().join(name), data).expect("write");
    }
    let dir = LogDir::open(tmp.path()).expect("open");
    (tmp, dir)
}

fn filter(
    since: Option<u64>,
    until: Option<u64>,
    grep: Option<&str>,
    ignore_case: bool,
) -> LineFilter {
    LineFilter::compile(&LogFilter {
        since_us: since,
        until_us: until,
        grep: grep.map(String::from),
        ignore_case,
    })
    .expect("a valid filter")
}

fn stamps(lines: &[logs::LogLine]) -> Vec<u64> {
    lines.iter().map(|l| l.timestamp_us).collect()
}

#[test]
fn a_window_reads_exactly_its_lines_across_segments_and_streams() {
    let (_tmp, dir) = stored();
    // 295..=705: web lines 30..=70 (the window crosses the segment edge),
    // their errors and db's lines, hooks included.
    let window = filter(Some(295), Some(705), None, false);
    let lines: Vec<_> = logs::read_matching(&dir, &[], true, &window, None)
        .expect("read")
        .collect();
    let mut expected: Vec<u64> = (30..=70)
        .flat_map(|i| [i * 10, i * 10 + 1, i * 10 + 2])
        .filter(|ts| (295..=705).contains(ts))
        .collect();
    expected.sort();
    assert_eq!(stamps(&lines), expected);
    // Bounds are inclusive.
    let exact = filter(Some(300), Some(300), None, false);
    let lines: Vec<_> = logs::read_matching(&dir, &[], true, &exact, None)
        .expect("read")
        .collect();
    assert_eq!(stamps(&lines), [300]);
    // A window before or after everything is empty.
    for (since, until) in [(0, 5), (2000, 3000)] {
        let none = filter(Some(since), Some(until), None, false);
        assert_eq!(
            logs::read_matching(&dir, &[], true, &none, None)
                .expect("read")
                .count(),
            0
        );
    }
}

#[test]
fn a_pattern_keeps_matching_lines_of_every_stream_and_can_ignore_case() {
    let (_tmp, dir) = stored();
    let grep = filter(None, None, Some(r"line (1|10)$"), false);
    let lines: Vec<_> = logs::read_matching(&dir, &[], true, &grep, None)
        .expect("read")
        .collect();
    assert_eq!(stamps(&lines), [10, 12, 100, 102]);
    // Without hooks, db's line 10 (a post_exit line) is gone.
    let lines: Vec<_> = logs::read_matching(&dir, &[], false, &grep, None)
        .expect("read")
        .collect();
    assert_eq!(stamps(&lines), [10, 12, 100]);
    let shouting = filter(None, None, Some("error 7$"), false);
    assert_eq!(
        logs::read_matching(&dir, &[], true, &shouting, None)
            .expect("read")
            .count(),
        0
    );
    let any_case = filter(None, None, Some("error 7$"), true);
    let lines: Vec<_> = logs::read_matching(&dir, &["web".into()], true, &any_case, None)
        .expect("read")
        .collect();
    assert_eq!(stamps(&lines), [71]);
}

#[test]
fn a_tail_of_a_search_is_its_newest_matching_lines() {
    let (_tmp, dir) = stored();
    let search = filter(Some(100), Some(500), Some("^web line"), false);
    let tail = logs::tail_matching(&dir, &[], 3, true, &search).expect("tail");
    assert_eq!(stamps(&tail), [480, 490, 500]);
    assert_eq!(
        logs::tail_start_matching(&dir, &[], 3, true, &search).expect("tail"),
        Some(480)
    );
    // More than there are: the whole window.
    let all = logs::tail_matching(&dir, &[], 1000, true, &search).expect("tail");
    assert_eq!(stamps(&all), (10..=50).map(|i| i * 10).collect::<Vec<_>>());
    // Into the previous segment from a window ending in it.
    let early = filter(None, Some(205), None, false);
    let tail = logs::tail_matching(&dir, &["web".into()], 2, true, &early).expect("tail");
    assert_eq!(stamps(&tail), [200, 201]);
}

#[test]
fn cursor_pages_of_a_search_hold_every_match_once_in_order() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = LogStore::open(tmp.path().join("logs")).expect("store");
    let (_src, dir) = stored();
    // The store's directory gets the stored files.
    for entry in std::fs::read_dir(dir.path()).expect("list") {
        let entry = entry.expect("entry");
        std::fs::copy(entry.path(), store.path().join(entry.file_name())).expect("copy");
    }
    let search = filter(Some(150), None, Some(r"[13579]$"), false);
    let id = store.cursors().open_search(&[], true, &search, None, None);
    let mut got = Vec::new();
    loop {
        let page = store.cursors().next_page(id, 7).expect("page");
        got.extend(page.lines.iter().map(|l| l.timestamp_us));
        assert!(page.lines.len() <= 7);
        if !page.more {
            break;
        }
    }
    let mut expected: Vec<u64> = (15..=100)
        .filter(|i| i % 2 == 1)
        .flat_map(|i| [i * 10, i * 10 + 1, i * 10 + 2])
        .collect();
    expected.sort();
    assert_eq!(got, expected);
    // A head of a search: its first lines.
    let id = store
        .cursors()
        .open_search(&["web".into()], true, &search, None, Some(3));
    let page = store.cursors().next_page(id, 100).expect("page");
    let heads: Vec<u64> = page.lines.iter().map(|l| l.timestamp_us).collect();
    assert_eq!(heads, [150, 151, 170]);
    assert!(!page.more);
}

#[tokio::test]
async fn a_follows_backlog_holds_the_matching_lines_of_its_window() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = LogStore::open(tmp.path().join("logs")).expect("store");
    let (_src, dir) = stored();
    for entry in std::fs::read_dir(dir.path()).expect("list") {
        let entry = entry.expect("entry");
        std::fs::copy(entry.path(), store.path().join(entry.file_name())).expect("copy");
    }
    let search = filter(Some(900), None, Some("ERROR"), false);
    let (mut backlog, _follower) = store
        .follow_matching(&[], usize::MAX, true, &search)
        .await
        .expect("follow");
    let limit = PageLimit {
        lines: 4,
        text_bytes: 1 << 20,
    };
    let mut got = Vec::new();
    while let Some(page) = backlog.next_page(limit).expect("page") {
        got.extend(page.iter().map(|l| l.timestamp_us));
    }
    assert_eq!(got, (90..=100).map(|i| i * 10 + 1).collect::<Vec<_>>());
}
