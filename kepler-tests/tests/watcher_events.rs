//! `restart.watch`: which file changes produce a [`WatchEvent`], how bursts
//! are debounced into one, which directories are watched (and how many
//! watches that takes), and that a dropped watch goes quiet.
//!
//! "No event" is never asserted by sleeping: after an change that must be
//! ignored, the test makes a matching change and asserts that the first
//! event lists only that one.

mod process_support;

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kepler_daemon::watcher::{
    WatchError, WatchEvent, WatchHandle, WatchHub, WatchReport, WatchSpec, DEFAULT_DEBOUNCE,
    MAX_PATHS_PER_EVENT,
};
use process_support::within;
use tokio::sync::mpsc;

struct Watched {
    /// Canonical, as event paths are.
    root: PathBuf,
    _dir: tempfile::TempDir,
    handle: Option<WatchHandle>,
    events: mpsc::UnboundedReceiver<WatchReport>,
}

impl Watched {
    fn path(&self, relative: &str) -> PathBuf {
        self.root.join(relative)
    }

    /// Writes `relative`, creating its parent directories.
    fn write(&self, relative: &str) -> PathBuf {
        write(&self.path(relative))
    }

    async fn next_event(&mut self) -> WatchEvent {
        next_event(&mut self.events).await
    }

    /// Asserts the next event lists exactly `expected` (relative paths).
    async fn expect_event(&mut self, expected: &[&str]) -> WatchEvent {
        let event = self.next_event().await;
        let expected: Vec<PathBuf> = expected.iter().map(|path| self.path(path)).collect();
        assert_eq!(event.paths, expected, "{event:?}");
        assert_eq!(event.service, "web");
        assert_eq!(event.omitted, 0);
        assert!(!event.missed_events);
        event
    }
}

fn write(path: &Path) -> PathBuf {
    fs::create_dir_all(path.parent().unwrap()).expect("create parent");
    fs::write(path, b"changed").expect("write");
    path.to_path_buf()
}

async fn next_report(events: &mut mpsc::UnboundedReceiver<WatchReport>) -> WatchReport {
    within("a watch report", events.recv())
        .await
        .expect("the watch ended")
}

async fn next_event(events: &mut mpsc::UnboundedReceiver<WatchReport>) -> WatchEvent {
    match next_report(events).await {
        WatchReport::Changed(event) => event,
        WatchReport::Note { text, .. } => panic!("expected changes, got the note {text:?}"),
    }
}

async fn next_note(events: &mut mpsc::UnboundedReceiver<WatchReport>) -> String {
    match next_report(events).await {
        WatchReport::Note { text, service, .. } => {
            assert_eq!(service, "web");
            text
        }
        WatchReport::Changed(event) => panic!("expected a note, got {event:?}"),
    }
}

fn hub() -> WatchHub {
    WatchHub::shared().expect("file watcher")
}

fn spec(root: &Path, patterns: &[&str], ignore: &[PathBuf]) -> WatchSpec {
    WatchSpec {
        service: "web".to_owned(),
        root: root.to_owned(),
        patterns: patterns.iter().map(|p| p.to_string()).collect(),
        ignore: ignore.to_vec(),
        identity: None,
    }
}

fn watched_with(patterns: &[&str], ignore: &[&str], setup: impl FnOnce(&Path)) -> Watched {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().canonicalize().expect("canonical tempdir");
    setup(&root);
    let (sender, events) = mpsc::unbounded_channel();
    let ignore: Vec<PathBuf> = ignore.iter().map(|dir| root.join(dir)).collect();
    let handle = hub()
        .watch(spec(&root, patterns, &ignore), DEFAULT_DEBOUNCE, sender)
        .expect("watch");
    Watched {
        root,
        _dir: dir,
        handle: Some(handle),
        events,
    }
}

fn watched(patterns: &[&str]) -> Watched {
    watched_with(patterns, &[], |_| {})
}

fn spec_error(root: &Path, patterns: &[&str]) -> WatchError {
    hub()
        .watch(
            spec(root, patterns, &[]),
            DEFAULT_DEBOUNCE,
            mpsc::unbounded_channel().0,
        )
        .expect_err("must fail")
}

/// Inotify watches this process holds, from `/proc/self/fdinfo` (nextest
/// runs each test in a process of its own).
fn inotify_watches() -> usize {
    let mut watches = 0;
    for entry in fs::read_dir("/proc/self/fd").unwrap().flatten() {
        let is_inotify = fs::read_link(entry.path())
            .is_ok_and(|target| target.to_string_lossy().contains("inotify"));
        if is_inotify {
            let info = fs::read_to_string(format!(
                "/proc/self/fdinfo/{}",
                entry.file_name().to_string_lossy()
            ))
            .unwrap_or_default();
            watches += info
                .lines()
                .filter(|l| l.starts_with("inotify wd:"))
                .count();
        }
    }
    watches
}

#[tokio::test]
async fn matching_change_gives_one_event() {
    let mut w = watched(&["**/*.ts"]);
    w.write("index.ts");
    w.expect_event(&["index.ts"]).await;
    // Had the create, write and close above made two events, this would
    // not be the next one.
    w.write("other.ts");
    w.expect_event(&["other.ts"]).await;
}

#[tokio::test]
async fn unmatched_change_gives_no_event() {
    let mut w = watched(&["**/*.ts"]);
    w.write("notes.txt");
    w.write("src/readme.md");
    w.write("index.ts");
    w.expect_event(&["index.ts"]).await;
}

#[tokio::test]
async fn reading_a_matching_file_gives_no_event() {
    let mut w = watched_with(&["*.json"], &[], |root| {
        fs::write(root.join("config.json"), "{}").unwrap();
    });
    fs::read(w.path("config.json")).expect("read");
    w.write("package.json");
    w.expect_event(&["package.json"]).await;
}

#[tokio::test]
async fn burst_of_100_writes_gives_exactly_one_event_after_the_burst() {
    let mut w = watched_with(&["**/*.ts"], &[], |root| {
        fs::create_dir(root.join("gen")).unwrap();
    });
    let mut last_write = Instant::now();
    for i in 0..100 {
        w.write(&format!("gen/file{i}.ts"));
        last_write = Instant::now();
    }
    let event = w.next_event().await;
    // Trailing edge: sent only once the burst has been quiet for the window.
    assert!(last_write.elapsed() >= DEFAULT_DEBOUNCE, "event came early");
    assert_eq!(event.paths.len(), MAX_PATHS_PER_EVENT);
    assert_eq!(event.paths.len() + event.omitted, 100);
    assert_eq!(event.paths[0], w.path("gen/file0.ts"));

    w.write("after.ts");
    w.expect_event(&["after.ts"]).await;
}

#[tokio::test]
async fn rewriting_one_file_100_times_gives_one_event_listing_it_once() {
    let mut w = watched(&["*.ts"]);
    for _ in 0..100 {
        w.write("main.ts");
    }
    w.expect_event(&["main.ts"]).await;
    w.write("after.ts");
    w.expect_event(&["after.ts"]).await;
}

#[tokio::test]
async fn a_burst_that_never_goes_quiet_is_still_reported() {
    let mut w = watched(&["*.log.ts"]);
    let path = w.path("busy.log.ts");
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let started = Instant::now();
            // Every 20 ms: never quiet for the 100 ms debounce.
            while !stop.load(Ordering::Relaxed) && started.elapsed() < Duration::from_secs(8) {
                fs::write(&path, b"tick").expect("write");
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let event = w.next_event().await;
    let still_writing = !writer.is_finished();
    stop.store(true, Ordering::Relaxed);
    writer.join().expect("writer");
    assert!(still_writing, "the event only came once the writes stopped");
    assert_eq!(event.paths, [w.path("busy.log.ts")]);
}

#[tokio::test]
async fn changes_under_ignored_dirs_and_git_give_no_event() {
    let mut w = watched_with(&["**/*.json"], &["state"], |root| {
        fs::create_dir_all(root.join("state/logs")).unwrap();
        fs::create_dir_all(root.join(".git")).unwrap();
    });
    w.write("state/state.json");
    w.write("state/logs/web.json");
    w.write("state/new/deeper.json");
    w.write(".git/index.json");
    w.write("app.json");
    w.expect_event(&["app.json"]).await;
}

#[tokio::test]
async fn nested_double_star_patterns_match_at_any_depth_below_their_prefix() {
    let mut w = watched_with(&["src/**/*.rs"], &[], |root| {
        fs::create_dir_all(root.join("src/a/b")).unwrap();
        fs::create_dir_all(root.join("other")).unwrap();
    });
    w.write("other/x.rs");
    w.write("src/a/b/deep.rs");
    w.expect_event(&["src/a/b/deep.rs"]).await;
    w.write("src/top.rs");
    w.expect_event(&["src/top.rs"]).await;
}

#[tokio::test]
async fn single_star_patterns_do_not_cross_directories() {
    let mut w = watched_with(&["*.json"], &[], |root| {
        fs::create_dir_all(root.join("sub")).unwrap();
    });
    w.write("sub/nested.json");
    w.write("top.json");
    w.expect_event(&["top.json"]).await;
}

#[tokio::test]
async fn file_in_a_directory_created_after_the_watch_started_is_seen() {
    let mut w = watched(&["**/*.ts"]);
    // Written at once, before the watcher can have added the new dirs.
    w.write("new/deeper/still/x.ts");
    w.expect_event(&["new/deeper/still/x.ts"]).await;
    // And the new directory is watched from then on.
    w.write("new/deeper/still/y.ts");
    w.expect_event(&["new/deeper/still/y.ts"]).await;
}

#[tokio::test]
async fn directory_moved_into_the_tree_reports_its_matching_files() {
    let outside = tempfile::tempdir().expect("tempdir");
    fs::create_dir_all(outside.path().join("pkg/lib")).unwrap();
    fs::write(outside.path().join("pkg/lib/mod.ts"), "x").unwrap();
    fs::write(outside.path().join("pkg/readme.md"), "x").unwrap();
    let mut w = watched(&["**/*.ts"]);
    fs::rename(outside.path().join("pkg"), w.path("pkg")).expect("move in");
    w.expect_event(&["pkg/lib/mod.ts"]).await;
}

#[tokio::test]
async fn removal_and_rename_into_a_matching_name_count_as_changes() {
    let mut w = watched_with(&["*.ts"], &[], |root| {
        fs::write(root.join("old.ts"), "x").unwrap();
    });
    fs::remove_file(w.path("old.ts")).expect("remove");
    w.expect_event(&["old.ts"]).await;

    // An editor's save: write a temporary file, rename it over the target.
    fs::write(w.path("main.ts.tmp"), "x").unwrap();
    fs::rename(w.path("main.ts.tmp"), w.path("main.ts")).expect("rename");
    w.expect_event(&["main.ts"]).await;
}

#[tokio::test]
async fn relative_ignore_dirs_and_dot_slash_and_directory_patterns_work() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().canonicalize().unwrap();
    fs::create_dir_all(root.join("cache")).unwrap();
    let (sender, mut events) = mpsc::unbounded_channel();
    let spec = spec(&root, &["./config/", "cache/*"], &[PathBuf::from("cache")]);
    let _handle = hub().watch(spec, DEFAULT_DEBOUNCE, sender).expect("watch");
    let note = next_note(&mut events).await;
    assert!(
        note.ends_with("/config does not exist; watching for it to appear"),
        "{note}"
    );
    fs::write(root.join("cache/blob"), "x").unwrap();
    fs::create_dir_all(root.join("config/env")).unwrap();
    fs::write(root.join("config/env/prod.yaml"), "x").unwrap();
    let event = next_event(&mut events).await;
    // `config/` matches what is below the new directories.
    assert!(event.paths.contains(&root.join("config/env/prod.yaml")));
    assert!(event
        .paths
        .iter()
        .all(|path| path.starts_with(root.join("config"))));
}

#[tokio::test]
async fn dropping_the_handle_stops_events_and_closes_the_channel() {
    let mut w = watched(&["*.ts"]);
    w.write("before.ts");
    w.expect_event(&["before.ts"]).await;
    drop(w.handle.take());
    w.write("after.ts");
    // The watcher thread has let go of the sender when drop returns, so
    // the channel ends instead of delivering anything more.
    assert_eq!(within("channel closed", w.events.recv()).await, None);
}

#[tokio::test]
async fn an_absolute_pattern_outside_the_working_dir_is_watched_from_its_base() {
    let elsewhere = tempfile::tempdir().expect("tempdir");
    let src = elsewhere.path().canonicalize().unwrap().join("src");
    fs::create_dir_all(src.join("deep")).unwrap();
    let pattern = format!("{}/**/*.py", src.display());
    let mut w = watched(&[pattern.as_str(), "*.ts"]);
    let changed = write(&src.join("deep/app.py"));
    let event = w.next_event().await;
    assert_eq!(event.paths, [changed]);
    w.write("local.ts");
    w.expect_event(&["local.ts"]).await;
}

#[tokio::test]
async fn a_missing_base_dir_is_noted_once_and_watched_for_until_it_appears() {
    let mut w = watched(&["later/**/*.ts", "later/deep/*.ts"]);
    let note = next_note(&mut w.events).await;
    assert_eq!(
        note,
        format!(
            "{} does not exist; watching for it to appear",
            w.path("later").display()
        )
    );
    // Created at once with a file in it, before any watch can be set below.
    w.write("later/deep/er/x.ts");
    w.expect_event(&["later/deep/er/x.ts"]).await;
    // From now on it is watched like the rest, and no second note came.
    w.write("later/y.ts");
    w.expect_event(&["later/y.ts"]).await;

    // Removed (which changes the files in it), then back: noted again,
    // and seen again.
    fs::remove_dir_all(w.path("later")).unwrap();
    let note = next_note(&mut w.events).await;
    assert!(
        note.ends_with("does not exist; watching for it to appear"),
        "{note}"
    );
    let removed = w.next_event().await;
    assert_eq!(removed.paths.len(), 2, "{removed:?}");
    w.write("later/z.ts");
    w.expect_event(&["later/z.ts"]).await;
}

#[tokio::test]
async fn invalid_glob_is_an_error_naming_the_pattern() {
    let dir = tempfile::tempdir().expect("tempdir");
    let err = spec_error(dir.path(), &["**/*.ts", "src/[a-"]);
    assert!(matches!(err, WatchError::InvalidPattern { .. }), "{err:?}");
    let message = err.to_string();
    assert!(
        message.starts_with("service web: invalid watch pattern `src/[a-`: "),
        "{message}"
    );

    let err = spec_error(dir.path(), &[]);
    assert!(matches!(err, WatchError::NoPatterns { .. }), "{err:?}");
}

#[tokio::test]
async fn each_directory_is_watched_once_and_only_as_deep_as_the_patterns_reach() {
    let hub = WatchHub::start(1000).expect("file watcher");
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().canonicalize().unwrap();
    for sub in ["src/a/b", "src/c", "docs/x/y", "other/z"] {
        fs::create_dir_all(root.join(sub)).unwrap();
    }
    let before = inotify_watches();
    let (sender, _events) = mpsc::unbounded_channel();
    // src and everything below (4 dirs), docs itself and its children (2):
    // the nested `src/a/*.rs` and `docs/*.md` need nothing more, and the
    // root, docs/x/y and other/ are not watched at all.
    let patterns = ["src/**/*.rs", "src/a/*.rs", "docs/*/*.md", "docs/*.md"];
    let handle = hub
        .watch(spec(&root, &patterns, &[]), DEFAULT_DEBOUNCE, sender)
        .expect("watch");
    assert_eq!(inotify_watches() - before, 6);
    // A second service watching the same tree shares the kernel's watches.
    let (sender, _other_events) = mpsc::unbounded_channel();
    let other = hub
        .watch(spec(&root, &["src/**"], &[]), DEFAULT_DEBOUNCE, sender)
        .expect("watch");
    assert_eq!(inotify_watches() - before, 6);
    drop(handle);
    assert_eq!(inotify_watches() - before, 4);
    drop(other);
    assert_eq!(inotify_watches(), before);
}

#[tokio::test]
async fn past_its_budget_a_user_gets_a_note_and_the_rest_of_the_tree_is_left_out() {
    let hub = WatchHub::start(3).expect("file watcher");
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().canonicalize().unwrap();
    for sub in ["a", "b", "c", "d", "e"] {
        fs::create_dir_all(root.join(sub)).unwrap();
    }
    let (sender, mut events) = mpsc::unbounded_channel();
    let _handle = hub
        .watch(spec(&root, &["**/*.ts"], &[]), DEFAULT_DEBOUNCE, sender)
        .expect("watch");
    let note = next_note(&mut events).await;
    assert!(
        note.starts_with("uid 0 already has 3 directories watched, the most one user may; ")
            && note.ends_with("are left out (the service keeps running)"),
        "{note}"
    );
    assert_eq!(inotify_watches(), 3);
    // What is watched still works.
    write(&root.join("top.ts"));
    assert_eq!(next_event(&mut events).await.paths, [root.join("top.ts")]);
}

#[test]
fn watch_handle_can_move_to_an_actor_task() {
    fn assert_send<T: Send + 'static>() {}
    assert_send::<WatchHandle>();
    assert_send::<WatchReport>();
}
