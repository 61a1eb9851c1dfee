//! One member's slow or hanging config load never delays anyone else's
//! (issue #12, finding 6, load locks): each path has its own load lock, and
//! a FIFO or device named as a config is refused at once, from its metadata.

use std::process::Stdio;
use std::time::{Duration, Instant};

use kepler_e2e::{wait_until, Kepler, TestUser, DEADLINE};

const RAW: &str = env!("CARGO_BIN_EXE_raw_request");
const SLEEPER: &str = "services:\n  app:\n    command: [\"sleep\", \"1000\"]\n";

/// How long another config's load may take while one is stuck: generous for
/// a loaded machine, and still far less than the stuck one needs (25 s).
const PROMPT: Duration = Duration::from_secs(10);

/// A config whose bake takes about `blocks / 2` seconds.
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

fn bake_workers_running() -> bool {
    std::fs::read_dir("/proc").unwrap().any(|entry| {
        entry
            .ok()
            .and_then(|e| std::fs::read(e.path().join("cmdline")).ok())
            .is_some_and(|cmd| {
                let cmd = String::from_utf8_lossy(&cmd);
                cmd.contains("--transfer") && cmd.contains("slow.yaml")
            })
    })
}

#[test]
fn a_slow_bake_of_a_members_config_does_not_delay_roots() {
    let kepler = Kepler::started();
    let member = TestUser::member();
    kepler.write_as(&member, "slow.yaml", &slow_config(50));
    kepler.write("root.yaml", SLEEPER);
    let mut slow = {
        let mut command = kepler.command("kepler");
        command
            .args(["-f", "slow.yaml", "start", "-d"])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        member.apply(&mut command);
        command.spawn().unwrap()
    };
    wait_until("the slow bake to start", DEADLINE, bake_workers_running);
    let started = Instant::now();
    kepler
        .kepler(&["-f", "root.yaml", "start", "-d", "--wait"])
        .success();
    let took = started.elapsed();
    assert!(
        took < PROMPT,
        "root's start waited {took:?} behind the member's bake"
    );
    assert!(
        slow.try_wait().unwrap().is_none(),
        "the slow bake finished first; the test proves nothing"
    );
    kepler.kepler(&["-f", "root.yaml", "stop"]).success();
    let _ = slow.kill();
    let _ = slow.wait();
}

#[test]
fn a_fifo_named_as_a_config_is_refused_at_once() {
    let kepler = Kepler::started();
    let member = TestUser::member();
    let dir = kepler.dir().join("member");
    std::fs::create_dir(&dir).unwrap();
    std::os::unix::fs::chown(&dir, Some(member.uid), Some(member.gid)).unwrap();
    let fifo = dir.join("kepler.yaml");
    kepler
        .sh_as(Some(&member), &format!("mkfifo {}", fifo.display()))
        .success();
    let started = Instant::now();
    kepler
        .raw_request(RAW, Some(&member), "start", &fifo)
        .success()
        .stdout_has("not a regular file");
    assert!(started.elapsed() < PROMPT, "{:?}", started.elapsed());
    // Root's request for it is refused the same way, without a bake.
    kepler
        .raw_request(RAW, None, "ps", &fifo)
        .success()
        .stdout_has("not a regular file");
    assert!(started.elapsed() < PROMPT, "{:?}", started.elapsed());
}
