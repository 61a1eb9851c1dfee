//! `restart.watch`: file changes restart a service, once per burst, only for
//! matching paths relative to its working dir.
//!
//! Every service appends a line to `<name>.starts` when it starts, so the
//! number of lines is the number of starts. To show that a change did *not*
//! restart a service, a `sentinel` service that does watch the change is
//! restarted by it first: once the sentinel has reacted, the other service's
//! watcher has seen the same change too.

use std::fs;

use kepler_e2e::Kepler;

fn watched(name: &str, patterns: &str, extra: &str) -> String {
    format!(
        "  {name}:\n    command: [\"sh\", \"-c\", \"echo start >> {name}.starts; exec sleep 1000\"]\n    restart:\n      policy: always\n      watch: {patterns}\n{extra}"
    )
}

fn starts(kepler: &Kepler, name: &str) -> usize {
    fs::read_to_string(kepler.dir().join(format!("{name}.starts")))
        .unwrap_or_default()
        .lines()
        .count()
}

fn wait_for_starts(kepler: &Kepler, name: &str, n: usize) {
    kepler.wait_for_lines(
        &format!("{name}.starts"),
        &format!("{name} started {n} times"),
        |l| l.len() >= n,
    );
}

fn watch_lines(kepler: &Kepler, name: &str) -> usize {
    kepler
        .logs("kepler.yaml", &[name])
        .lines()
        .filter(|l| l.starts_with(&format!("{name}[watch] | ")))
        .count()
}

#[test]
fn a_matching_change_restarts_the_service_and_says_why_in_the_logs() {
    let kepler = Kepler::started();
    fs::create_dir_all(kepler.dir().join("src/deep")).unwrap();
    kepler.write(
        "kepler.yaml",
        &format!("services:\n{}", watched("app", r#"["src/**/*.txt"]"#, "")),
    );
    kepler.kepler(&["start", "-d", "--wait"]).success();
    wait_for_starts(&kepler, "app", 1);
    let old = kepler.service("kepler.yaml", "app").pid();

    kepler.write("src/deep/notes.txt", "changed");
    kepler.wait_for_service("kepler.yaml", "app", "running with a new pid", |r| {
        r.status() == "running" && r.pid().is_some() && r.pid() != old
    });
    assert!(!kepler_e2e::process_alive(old.unwrap()));
    wait_for_starts(&kepler, "app", 2);
    let logs = kepler.wait_for_log("kepler.yaml", "app[watch] |");
    assert!(
        logs.contains("app[watch] | files changed (src/deep/notes.txt); restarting"),
        "{logs}"
    );
    kepler.kepler(&["stop"]).success();
}

#[test]
fn a_change_that_matches_no_pattern_does_not_restart_the_service() {
    let kepler = Kepler::started();
    fs::create_dir_all(kepler.dir().join("src")).unwrap();
    let mut yaml = String::from("services:\n");
    yaml += &watched("app", r#"["src/**/*.txt"]"#, "");
    yaml += &watched("sentinel", r#"["src/**/*.log"]"#, "");
    kepler.write("kepler.yaml", &yaml);
    kepler.kepler(&["start", "-d", "--wait"]).success();
    wait_for_starts(&kepler, "app", 1);
    wait_for_starts(&kepler, "sentinel", 1);

    kepler.write("src/build.log", "not a txt");
    wait_for_starts(&kepler, "sentinel", 2);

    // Positive control: a matching change does restart it, exactly once.
    kepler.write("src/main.txt", "a txt");
    wait_for_starts(&kepler, "app", 2);
    kepler.wait_for_service("kepler.yaml", "app", "running", |r| r.status() == "running");
    assert_eq!(starts(&kepler, "app"), 2);
    assert_eq!(watch_lines(&kepler, "app"), 1);
    kepler.kepler(&["stop"]).success();
}

#[test]
fn a_burst_of_a_hundred_writes_restarts_the_service_once() {
    let kepler = Kepler::started();
    fs::create_dir_all(kepler.dir().join("src")).unwrap();
    kepler.write(
        "kepler.yaml",
        &format!("services:\n{}", watched("app", r#"["src/**/*.txt"]"#, "")),
    );
    kepler.kepler(&["start", "-d", "--wait"]).success();
    wait_for_starts(&kepler, "app", 1);

    for i in 0..100 {
        fs::write(
            kepler.dir().join(format!("src/file{}.txt", i % 10)),
            i.to_string(),
        )
        .unwrap();
    }
    wait_for_starts(&kepler, "app", 2);
    kepler.wait_for_service("kepler.yaml", "app", "running", |r| r.status() == "running");

    // Positive control: one more change is one more restart; a late second
    // restart from the burst would come before it.
    kepler.write("src/file0.txt", "again");
    wait_for_starts(&kepler, "app", 3);
    kepler.wait_for_service("kepler.yaml", "app", "running", |r| r.status() == "running");
    assert_eq!(starts(&kepler, "app"), 3);
    assert_eq!(watch_lines(&kepler, "app"), 2);
    kepler.kepler(&["stop"]).success();
}

#[test]
fn patterns_are_relative_to_the_services_working_dir() {
    let kepler = Kepler::started();
    fs::create_dir_all(kepler.dir().join("sub")).unwrap();
    let mut yaml = String::from("services:\n");
    // `*.txt` never crosses a `/`: the sentinel sees only top-level files.
    yaml += &watched("app", r#"["*.txt"]"#, "    working_dir: ./sub\n");
    yaml += &watched("sentinel", r#"["*.txt"]"#, "");
    kepler.write("kepler.yaml", &yaml);
    kepler.kepler(&["start", "-d", "--wait"]).success();
    wait_for_starts(&kepler, "sentinel", 1);
    kepler.wait_for_lines("sub/app.starts", "app started", |l| l.len() == 1);

    kepler.write("top.txt", "x");
    wait_for_starts(&kepler, "sentinel", 2);

    kepler.write("sub/inner.txt", "x");
    kepler.wait_for_lines("sub/app.starts", "app restarted", |l| l.len() == 2);
    kepler.wait_for_service("kepler.yaml", "app", "running", |r| r.status() == "running");
    assert_eq!(starts(&kepler, "sentinel"), 2);
    assert_eq!(watch_lines(&kepler, "app"), 1);
    kepler.kepler(&["stop"]).success();
}

#[test]
fn a_service_the_user_stopped_is_not_restarted_by_file_changes() {
    let kepler = Kepler::started();
    fs::create_dir_all(kepler.dir().join("src")).unwrap();
    let mut yaml = String::from("services:\n");
    yaml += &watched("app", r#"["src/*.txt"]"#, "");
    yaml += &watched("sentinel", r#"["src/*.txt"]"#, "");
    kepler.write("kepler.yaml", &yaml);
    kepler.kepler(&["start", "-d", "--wait"]).success();
    wait_for_starts(&kepler, "app", 1);
    wait_for_starts(&kepler, "sentinel", 1);
    kepler.kepler(&["stop", "app"]).success();

    kepler.write("src/main.txt", "x");
    wait_for_starts(&kepler, "sentinel", 2);
    let app = kepler.service("kepler.yaml", "app");
    assert_eq!(app.status(), "stopped", "{:?}", app.0);
    assert_eq!(app.pid(), None);
    assert_eq!(starts(&kepler, "app"), 1);
    kepler.kepler(&["stop"]).success();
}

/// The inodes the daemon holds inotify watches on, from its
/// `/proc/<pid>/fdinfo` (one `inotify wd:` line per watch).
fn daemon_watches(kepler: &Kepler) -> Vec<u64> {
    let pid = kepler.daemon_pid().expect("daemon pid");
    let mut inodes = Vec::new();
    for entry in fs::read_dir(format!("/proc/{pid}/fd")).unwrap().flatten() {
        let is_inotify = fs::read_link(entry.path())
            .is_ok_and(|target| target.to_string_lossy().contains("inotify"));
        if !is_inotify {
            continue;
        }
        let info = fs::read_to_string(format!(
            "/proc/{pid}/fdinfo/{}",
            entry.file_name().to_string_lossy()
        ))
        .unwrap_or_default();
        for line in info.lines().filter(|l| l.starts_with("inotify wd:")) {
            let ino = line
                .split_whitespace()
                .find_map(|field| field.strip_prefix("ino:"))
                .and_then(|hex| u64::from_str_radix(hex, 16).ok())
                .unwrap_or_else(|| panic!("no inode in {line:?}"));
            inodes.push(ino);
        }
    }
    inodes
}

/// The lines a service's watch wrote to its log, without the prefix.
fn watch_notes(kepler: &Kepler, file: &str, name: &str) -> Vec<String> {
    let prefix = format!("{name}[watch] | ");
    kepler
        .logs(file, &[name])
        .lines()
        .filter_map(|l| l.strip_prefix(&prefix).map(String::from))
        .collect()
}

#[test]
fn a_project_inside_the_state_dir_is_watched_but_keplers_own_files_are_not() {
    let kepler = Kepler::started();
    let project = kepler.state_dir().join("project");
    fs::create_dir_all(project.join("src")).unwrap();
    // The absolute patterns also match the state directory's logs and
    // state.json, which Kepler rewrites at every start: they must not count.
    let state = kepler.state_dir().display().to_string();
    let patterns = format!(r#"["src/*.txt", "{state}/**/*.log", "{state}/**/*.json"]"#);
    kepler.write(
        "state/project/kepler.yaml",
        &format!("services:\n{}", watched("app", &patterns, "")),
    );
    let config = "state/project/kepler.yaml";
    kepler
        .kepler(&["-f", config, "start", "-d", "--wait"])
        .success();
    wait_for_starts(&kepler, "state/project/app", 1);

    kepler.write("state/project/src/one.txt", "x");
    wait_for_starts(&kepler, "state/project/app", 2);
    kepler.wait_for_service(config, "app", "running", |r| r.status() == "running");
    kepler.write("state/project/src/two.txt", "x");
    wait_for_starts(&kepler, "state/project/app", 3);
    kepler.wait_for_service(config, "app", "running", |r| r.status() == "running");
    assert_eq!(
        watch_notes(&kepler, config, "app"),
        [
            "files changed (src/one.txt); restarting",
            "files changed (src/two.txt); restarting"
        ]
    );
    assert_eq!(starts(&kepler, "state/project/app"), 3);
    kepler.kepler(&["-f", config, "stop"]).success();
}

#[test]
fn absolute_patterns_outside_the_working_dir_restart_the_service_once_their_dir_appears() {
    let kepler = Kepler::started();
    fs::create_dir_all(kepler.dir().join("proj")).unwrap();
    fs::create_dir_all(kepler.dir().join("elsewhere/src/deep")).unwrap();
    let elsewhere = kepler.dir().join("elsewhere/src");
    let later = kepler.dir().join("later");
    // One pattern expanded from the environment, one whose base is missing.
    let extra = format!(
        "    working_dir: ./proj\n    environment:\n      - SRC_DIR={}\n",
        elsewhere.display()
    );
    let patterns = format!(
        r#"["${{SRC_DIR}}/**/*.txt", "{}/**/*.txt"]"#,
        later.display()
    );
    kepler.write(
        "kepler.yaml",
        &format!("services:\n{}", watched("app", &patterns, &extra)),
    );
    kepler.kepler(&["start", "-d", "--wait"]).success();
    wait_for_starts(&kepler, "proj/app", 1);
    kepler.wait_for_log(
        "kepler.yaml",
        &format!(
            "app[watch] | {} does not exist; watching for it to appear",
            later.display()
        ),
    );

    kepler.write("elsewhere/src/deep/a.txt", "x");
    wait_for_starts(&kepler, "proj/app", 2);
    kepler.wait_for_service("kepler.yaml", "app", "running", |r| r.status() == "running");
    // Created with its subdirectory and file at once.
    kepler.write("later/deep/b.txt", "x");
    wait_for_starts(&kepler, "proj/app", 3);
    kepler.wait_for_service("kepler.yaml", "app", "running", |r| r.status() == "running");
    let notes = watch_notes(&kepler, "kepler.yaml", "app");
    assert_eq!(
        notes,
        [
            format!(
                "{} does not exist; watching for it to appear",
                later.display()
            ),
            format!(
                "files changed ({}); restarting",
                elsewhere.join("deep/a.txt").display()
            ),
            format!(
                "files changed ({}); restarting",
                later.join("deep/b.txt").display()
            ),
        ]
    );
    kepler.kepler(&["stop"]).success();
}

#[test]
fn watches_are_held_only_while_a_service_runs_and_never_after_a_failed_start() {
    let kepler = Kepler::started();
    for i in 0..20 {
        fs::create_dir_all(kepler.dir().join(format!("tree/d{i}/e"))).unwrap();
    }
    let broken = "  broken:\n    command: [\"/nonexistent/program\"]\n    working_dir: ./tree\n    restart:\n      policy: always\n      watch: [\"**/*.txt\"]\n";
    kepler.write("broken.yaml", &format!("services:\n{broken}"));
    kepler
        .kepler(&["-f", "broken.yaml", "start", "-d"])
        .success();
    kepler.wait_for_service("broken.yaml", "broken", "failed", |r| {
        r.status() == "failed"
    });
    // In cgroup mode the failed spawn's cgroup is watched (cgroup.events)
    // until its child is reaped and it is removed, a moment after the
    // failure is recorded; a file watch left behind would never go.
    kepler_e2e::wait_until("no inotify watch left", kepler_e2e::DEADLINE, || {
        daemon_watches(&kepler).is_empty()
    });

    kepler.write(
        "kepler.yaml",
        &format!("services:\n{}", watched("app", r#"["tree/**/*.txt"]"#, "")),
    );
    kepler.kepler(&["start", "-d", "--wait"]).success();
    // tree, its 20 subdirectories and theirs.
    assert_eq!(daemon_watches(&kepler).len(), 41);
    kepler.kepler(&["stop"]).success();
    assert_eq!(daemon_watches(&kepler), Vec::<u64>::new());
}

#[test]
fn a_members_watch_cannot_tell_what_is_inside_a_directory_it_cannot_read() {
    use std::os::unix::fs::{chown, MetadataExt, PermissionsExt};

    let kepler = Kepler::started();
    let member = kepler_e2e::TestUser::member();
    // A root-only directory holding `secret/`; `absent/` is not there.
    let vault = kepler.dir().join("vault");
    fs::create_dir_all(vault.join("secret")).unwrap();
    fs::set_permissions(&vault, fs::Permissions::from_mode(0o700)).unwrap();
    let proj = kepler.dir().join("proj");
    fs::create_dir_all(proj.join("src")).unwrap();
    let mut yaml = String::from("services:\n");
    yaml += &watched(
        "app",
        &format!(
            r#"["{0}/secret/**/*.txt", "{0}/absent/**/*.txt"]"#,
            vault.display()
        ),
        "",
    );
    yaml += &watched("sentinel", r#"["src/*.txt"]"#, "");
    kepler.write("proj/kepler.yaml", &yaml);
    for path in [&proj, &proj.join("src"), &proj.join("kepler.yaml")] {
        chown(path, Some(member.uid), Some(member.gid)).unwrap();
    }
    kepler
        .kepler_as(
            &member,
            &["-f", "proj/kepler.yaml", "start", "-d", "--wait"],
        )
        .success();
    wait_for_starts(&kepler, "proj/app", 1);
    wait_for_starts(&kepler, "proj/sentinel", 1);

    // Both read exactly like a missing directory.
    let said = |name: &str| {
        let base = vault.join(name).display().to_string();
        vec![
            format!("{base} does not exist; watching for it to appear"),
            format!(
                "cannot watch {} (permission denied), so {base} is not seen if it appears",
                vault.display()
            ),
        ]
    };
    let mut expected = said("absent");
    expected.extend(said("secret"));
    kepler_e2e::wait_until("the watch notes", kepler_e2e::DEADLINE, || {
        watch_notes(&kepler, "proj/kepler.yaml", "app").len() >= 4
    });
    assert_eq!(watch_notes(&kepler, "proj/kepler.yaml", "app"), expected);

    // Nothing inside the vault is watched, and a change there is not seen.
    let watched_inodes = daemon_watches(&kepler);
    for dir in [&vault, &vault.join("secret")] {
        let ino = fs::metadata(dir).unwrap().ino();
        assert!(
            !watched_inodes.contains(&ino),
            "{} is watched",
            dir.display()
        );
    }
    fs::write(vault.join("secret/leak.txt"), "x").unwrap();
    kepler.write("proj/src/a.txt", "x");
    wait_for_starts(&kepler, "proj/sentinel", 2);
    assert_eq!(starts(&kepler, "proj/app"), 1);
    kepler
        .kepler_as(&member, &["-f", "proj/kepler.yaml", "stop"])
        .success();
}
