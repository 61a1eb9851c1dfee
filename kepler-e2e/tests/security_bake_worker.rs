//! A member against the bake worker (issue #12, finding 2): the worker runs
//! as the config's owner, so the owner controls it; it must start with a
//! fixed environment (no `LD_PRELOAD` from the member), and die with the
//! daemon. (What the daemon does with a forged answer anyway is pinned
//! in-process by `kepler-tests/tests/fuzz_snapshot.rs`.)

use std::path::Path;
use std::process::{Child, Stdio};

use kepler_e2e::{process_alive, wait_until, Kepler, TestUser, DEADLINE};
use nix::sys::signal::Signal;

/// A config whose bake takes about `blocks / 2` seconds: each Lua block
/// spins half a second (under the one-second limit per block).
fn slow_config(blocks: usize) -> String {
    let mut text =
        String::from("services:\n  app:\n    command: [\"sleep\", \"1000\"]\n    environment:\n");
    for index in 0..blocks {
        text.push_str(&format!(
            "      SLOW{index}: !lua \"local t = os.clock() while os.clock() - t < 0.5 do end return 'x'\"\n"
        ));
    }
    text
}

/// Pids of bake workers for `config`.
fn workers_for(config: &Path) -> Vec<i32> {
    let wanted = format!("check\0--transfer\0{}\0", config.display());
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|cmd| String::from_utf8_lossy(&cmd).contains(&wanted))
                .unwrap_or(false)
        })
        .collect()
}

/// Starts `kepler -f <config> start -d` as `user` without waiting for it.
fn start_in_background(
    kepler: &Kepler,
    user: &TestUser,
    config: &str,
    env: &[(&str, &str)],
) -> Child {
    let mut command = kepler.command("kepler");
    command
        .args(["-f", config, "start", "-d"])
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    user.apply(&mut command);
    command.spawn().unwrap()
}

#[test]
fn the_worker_starts_with_a_fixed_environment_not_the_members() {
    let kepler = Kepler::started();
    let member = TestUser::member();
    let config = kepler.write_as(&member, "slow.yaml", &slow_config(40));
    let mut cli = start_in_background(
        &kepler,
        &member,
        "slow.yaml",
        &[
            ("LD_PRELOAD", "/nonexistent/forge.so"),
            ("KEPLER_TEST_MARK", "1"),
        ],
    );
    let mut worker = 0;
    wait_until("the bake worker", DEADLINE, || {
        worker = workers_for(&config).first().copied().unwrap_or(0);
        worker != 0
    });
    let environ = std::fs::read(format!("/proc/{worker}/environ")).unwrap();
    let mut vars: Vec<String> = environ
        .split(|b| *b == 0)
        .filter(|v| !v.is_empty())
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .collect();
    vars.sort();
    assert_eq!(vars, ["LANG=C", "PATH=/usr/sbin:/usr/bin:/sbin:/bin"]);
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(worker), Signal::SIGKILL);
    let _ = cli.wait();
}

#[test]
fn the_worker_dies_with_the_daemon() {
    let mut kepler = Kepler::started();
    let member = TestUser::member();
    let config = kepler.write_as(&member, "slow.yaml", &slow_config(50));
    let mut cli = start_in_background(&kepler, &member, "slow.yaml", &[]);
    let mut worker = 0;
    wait_until("the bake worker", DEADLINE, || {
        worker = workers_for(&config).first().copied().unwrap_or(0);
        worker != 0
    });
    kepler.signal_daemon(Signal::SIGKILL);
    kepler.reap_killed_daemon();
    wait_until(
        "the bake worker to die with the daemon",
        std::time::Duration::from_secs(5),
        || !process_alive(worker),
    );
    let _ = cli.wait();
}

/// Source of a preload library that makes a bake worker answer with the
/// file `KEPLER_FORGE` names instead of baking.
const FORGE_C: &str = r#"
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
__attribute__((constructor)) static void forge(int argc, char **argv) {
    const char *answer = getenv("KEPLER_FORGE");
    if (answer && argc > 2 && strcmp(argv[1], "check") == 0 && strcmp(argv[2], "--transfer") == 0)
        execl("/bin/cat", "cat", answer, (char *)0);
}
"#;

#[test]
fn ld_preload_from_the_member_cannot_forge_the_workers_answer() {
    let kepler = Kepler::started();
    let member = TestUser::member();
    let source = kepler.write("forge.c", FORGE_C);
    let library = kepler.dir().join("forge.so");
    let built = std::process::Command::new("cc")
        .args(["-shared", "-fPIC", "-o"])
        .arg(&library)
        .arg(&source)
        .output();
    match built {
        Ok(output) if output.status.success() => {}
        other => {
            eprintln!("SKIP: cannot build the preload library because cc failed: {other:?}");
            return;
        }
    }
    // The answer an older daemon would have taken: a service whose name
    // walks out of the log directory into the scratch directory.
    kepler.write_as(
        &member,
        "mine.yaml",
        "services:\n  app:\n    command: [\"sleep\", \"1000\"]\n",
    );
    let check = kepler
        .command("kepler-daemon")
        .args(["check", "mine.yaml"])
        .output()
        .unwrap();
    let snapshot = String::from_utf8(check.stdout)
        .unwrap()
        .replace("\n  app:\n", "\n  ../../../../escaped:\n");
    let forged = serde_json::json!({
        "snapshot": snapshot,
        "source_text": "",
        "env_files": [],
    });
    kepler.write("forged.json", &forged.to_string());
    let run = {
        let mut command = kepler.command("kepler");
        command
            .args(["-f", "mine.yaml", "start", "-d", "--wait"])
            .env("LD_PRELOAD", &library)
            .env("KEPLER_FORGE", kepler.dir().join("forged.json"));
        member.apply(&mut command);
        command.output().unwrap()
    };
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    // What runs is the member's real config, and nothing escaped.
    let app = kepler.wait_for_service("mine.yaml", "app", "running", |r| r.status() == "running");
    assert!(app.pid().is_some());
    assert!(!kepler.dir().join("escaped.stdout.log").exists());
    kepler
        .kepler_as(&member, &["-f", "mine.yaml", "stop"])
        .success();
}
