//! Running lifecycle hooks: both action forms, output forwarding, error
//! messages, timeouts and cancellation that leave no process behind, and the
//! hook's environment, working dir and user.

mod process_support;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use kepler_daemon::config::{HookAction, HookConfig, HumanDuration};
use kepler_daemon::hooks::{run_hook, HookError, HookOutputLine, HookRun, MAX_LINE_BYTES};
use kepler_daemon::process::{become_subreaper, wait_group_gone};
use kepler_daemon::user::resolve_user;
use process_support::{group_exists, process_exists, within, KillOnDrop};

fn hook(name: &str, service: Option<&str>, action: HookAction) -> HookRun {
    // Hooks may leave orphans behind; the test process must reap them as the
    // daemon does, or they would linger as zombies of init.
    become_subreaper().expect("subreaper");
    HookRun {
        name: name.to_owned(),
        service: service.map(str::to_owned),
        action,
        env: BTreeMap::from([("PATH".to_owned(), "/usr/bin:/bin".to_owned())]),
        working_dir: PathBuf::from("/"),
        user: None,
        umask: 0o022,
        timeout: None,
        cgroups: None,
    }
}

fn script(text: &str) -> HookAction {
    HookAction::Run(text.to_owned())
}

fn command(argv: &[&str]) -> HookAction {
    HookAction::Command(argv.iter().map(|arg| arg.to_string()).collect())
}

/// Runs `run` and returns its result with every output line.
async fn run_collecting(run: &HookRun) -> (Result<(), HookError>, Vec<HookOutputLine>) {
    let mut lines = Vec::new();
    let result = within("hook", run_hook(run, |line| lines.push(line))).await;
    (result, lines)
}

fn texts(lines: &[HookOutputLine], stderr: bool) -> Vec<String> {
    lines
        .iter()
        .filter(|line| line.stderr == stderr)
        .map(|line| String::from_utf8_lossy(&line.bytes).into_owned())
        .collect()
}

/// The pids a hook printed as its first line (`echo $$ $!`).
fn pids(line: &HookOutputLine) -> Vec<i32> {
    String::from_utf8_lossy(&line.bytes)
        .split_whitespace()
        .map(|pid| pid.parse().expect("pid"))
        .collect()
}

#[tokio::test]
async fn script_output_lines_arrive_in_order_tagged_and_with_stderr_flagged() {
    let run = hook(
        "pre_start",
        Some("web"),
        script("echo one; echo oops >&2; printf 'two\\n\\nthree'; echo again >&2"),
    );
    let (result, lines) = run_collecting(&run).await;
    result.expect("hook succeeds");
    assert_eq!(texts(&lines, false), ["one", "two", "", "three"]);
    assert_eq!(texts(&lines, true), ["oops", "again"]);
    assert!(lines
        .iter()
        .all(|line| line.hook == "pre_start" && line.service.as_deref() == Some("web")));
}

#[tokio::test]
async fn command_hook_runs_its_argv_without_a_shell() {
    let run = hook(
        "pre_stop",
        None,
        command(&["printf", "%s|", "two words", "$HOME", "*"]),
    );
    let (result, lines) = run_collecting(&run).await;
    result.expect("hook succeeds");
    assert_eq!(texts(&lines, false), ["two words|$HOME|*|"]);
    assert_eq!(lines[0].service, None);
}

#[tokio::test]
async fn output_lines_are_raw_bytes_and_overlong_lines_arrive_in_pieces() {
    let run = hook(
        "post_start",
        Some("web"),
        script("printf '\\377\\376\\n'; head -c 150000 /dev/zero | tr '\\0' a; echo"),
    );
    let (result, lines) = run_collecting(&run).await;
    result.expect("hook succeeds");
    assert_eq!(lines[0].bytes, [0xff, 0xfe]);
    let long = &lines[1..];
    assert!(long.iter().all(|line| line.bytes.len() <= MAX_LINE_BYTES));
    assert_eq!(
        long.iter().map(|line| line.bytes.len()).sum::<usize>(),
        150_000
    );
}

#[tokio::test]
async fn non_zero_exit_is_an_error_naming_hook_service_and_code() {
    let run = hook("pre_start", Some("web"), script("echo before; exit 3"));
    let (result, lines) = run_collecting(&run).await;
    let err = result.expect_err("must fail");
    assert!(matches!(err, HookError::Exited { code: 3, .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        "hook pre_start of service web exited with code 3"
    );
    assert_eq!(texts(&lines, false), ["before"]);

    let global = hook("pre_cleanup", None, command(&["false"]));
    let err = run_collecting(&global).await.0.expect_err("must fail");
    assert_eq!(
        err.to_string(),
        "global hook pre_cleanup exited with code 1"
    );
}

#[tokio::test]
async fn hook_killed_by_a_signal_says_which() {
    let run = hook("post_exit", Some("api"), script("kill -TERM $$"));
    let err = run_collecting(&run).await.0.expect_err("must fail");
    assert_eq!(
        err.to_string(),
        "hook post_exit of service api was killed by SIGTERM"
    );
}

#[tokio::test]
async fn hook_that_cannot_start_reports_the_os_error() {
    let run = hook("pre_start", Some("web"), command(&["/nonexistent/hook.sh"]));
    let err = run_collecting(&run).await.0.expect_err("must fail");
    assert!(matches!(err, HookError::Spawn { .. }), "{err:?}");
    let message = err.to_string();
    assert!(
        message.starts_with("hook pre_start of service web could not start: ")
            && message.contains("/nonexistent/hook.sh")
            && message.contains("No such file or directory"),
        "{message}"
    );
}

#[tokio::test]
async fn timed_out_hook_has_its_whole_group_killed() {
    let mut run = hook(
        "pre_start",
        Some("web"),
        script("sleep 100 & echo $$ $!; sleep 100"),
    );
    run.timeout = Some(Duration::from_millis(300));
    let started = Instant::now();
    let (result, lines) = run_collecting(&run).await;
    let err = result.expect_err("must time out");
    assert!(matches!(err, HookError::TimedOut { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        "hook pre_start of service web timed out after 300ms and was killed; \
         raise its `timeout` or make it finish sooner"
    );
    let pids = pids(&lines[0]);
    let (pgid, background) = (pids[0], pids[1]);
    let _cleanup = KillOnDrop(pgid);
    assert!(
        !group_exists(pgid),
        "a process of the hook's group survived"
    );
    assert!(!process_exists(background), "the background sleep survived");
    // SIGTERM ends `sleep` at once, so the grace period was not needed.
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn timed_out_hook_ignoring_sigterm_is_killed_after_the_grace_period() {
    let mut run = hook(
        "pre_stop",
        Some("web"),
        script("trap '' TERM; echo $$; while :; do sleep 0.05; done"),
    );
    run.timeout = Some(Duration::from_millis(200));
    let (result, lines) = run_collecting(&run).await;
    assert!(
        matches!(result, Err(HookError::TimedOut { .. })),
        "{result:?}"
    );
    let pgid = pids(&lines[0])[0];
    let _cleanup = KillOnDrop(pgid);
    assert!(
        !group_exists(pgid),
        "a process of the hook's group survived"
    );
}

#[tokio::test]
async fn dropping_the_hook_future_kills_its_group() {
    let run = hook(
        "pre_start",
        Some("web"),
        script("sleep 100 & echo $$ $!; sleep 100"),
    );
    let (sender, mut receiver) = tokio::sync::mpsc::unbounded_channel();
    let first_line = within("the hook's first line", async {
        tokio::select! {
            result = run_hook(&run, |line| { let _ = sender.send(line); }) => {
                panic!("the hook ended early: {result:?}")
            }
            line = receiver.recv() => line.expect("a line"),
        }
    })
    .await;
    // The select! above has dropped the hook's future.
    let pids = pids(&first_line);
    let (pgid, background) = (pids[0], pids[1]);
    let _cleanup = KillOnDrop(pgid);
    within(
        "the cancelled hook's group to be gone",
        wait_group_gone(pgid),
    )
    .await;
    assert!(!process_exists(background));
}

#[tokio::test]
async fn processes_left_behind_by_a_finished_hook_are_killed() {
    let run = hook("on_init", Some("web"), script("sleep 100 & echo $$ $!"));
    let (result, lines) = run_collecting(&run).await;
    result.expect("the hook itself succeeded");
    let pids = pids(&lines[0]);
    let _cleanup = KillOnDrop(pids[0]);
    assert!(!group_exists(pids[0]));
    assert!(!process_exists(pids[1]));
}

#[tokio::test]
async fn hook_gets_exactly_its_environment_and_working_dir() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut run = hook("pre_start", Some("web"), command(&["env"]));
    run.env = BTreeMap::from([
        ("ONLY".to_owned(), "this".to_owned()),
        ("WITH SPACE".to_owned(), "a b".to_owned()),
    ]);
    let (result, lines) = run_collecting(&run).await;
    result.expect("hook succeeds");
    let mut env = texts(&lines, false);
    env.sort();
    assert_eq!(env, ["ONLY=this", "WITH SPACE=a b"]);

    let mut run = hook("pre_start", Some("web"), script("pwd -P"));
    run.working_dir = dir.path().to_owned();
    let (result, lines) = run_collecting(&run).await;
    result.expect("hook succeeds");
    let expected = dir.path().canonicalize().expect("canonical tempdir");
    assert_eq!(texts(&lines, false), [expected.to_string_lossy()]);
}

#[tokio::test]
async fn hook_run_from_a_baked_hook_keeps_its_settings() {
    let baked = HookConfig {
        action: script("echo \"$GREETING from $(pwd)\""),
        user: None,
        group: None,
        umask: None,
        working_dir: PathBuf::from("/tmp"),
        env_file: None,
        environment: BTreeMap::from([("GREETING".to_owned(), "hello".to_owned())]),
        timeout: Some(HumanDuration::from_secs(5)),
    };
    become_subreaper().expect("subreaper");
    let run = HookRun::new("post_start", Some("web"), &baked, None);
    assert_eq!(run.timeout, Some(Duration::from_secs(5)));
    assert_eq!(run.id().to_string(), "hook post_start of service web");
    let (result, lines) = run_collecting(&run).await;
    result.expect("hook succeeds");
    assert_eq!(texts(&lines, false), ["hello from /tmp"]);
}

#[tokio::test]
async fn hook_runs_as_its_user() {
    const TEST_USER: &str = "kepler-test-a";
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipping: switching users needs root");
        return;
    }
    let Ok(user) = resolve_user(TEST_USER, None) else {
        eprintln!("skipping: user `{TEST_USER}` does not exist");
        return;
    };
    let uid = user.uid;
    let mut run = hook("pre_start", Some("web"), command(&["id", "-u"]));
    run.user = Some(user);
    let (result, lines) = run_collecting(&run).await;
    result.expect("hook succeeds");
    assert_eq!(texts(&lines, false), [uid.to_string()]);
}
