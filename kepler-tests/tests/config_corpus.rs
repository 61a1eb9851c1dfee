//! The config corpus: every bad config fails with its expected message at
//! its expected line; every good config bakes, passes the checks a snapshot
//! from elsewhere gets, and survives a round-trip through the stored JSON
//! and the rendered YAML.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use kepler_daemon::config::{
    bake, check_snapshot, load_snapshot, render_snapshot, snapshot_from_json, snapshot_to_json,
};

fn corpus(kind: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(kind);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|err| panic!("{}: {err}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "yaml"))
        .collect();
    files.sort();
    files
}

/// The captured environment every corpus config is baked with.
fn sys_env() -> BTreeMap<String, String> {
    [
        ("HOME", "/home/tester"),
        ("DB_HOST", "db.internal"),
        ("BACKEND_URL", "http://backend:4000"),
        ("DB_URL", "postgres://db/app"),
        ("PATH", "/usr/bin:/bin"),
        ("USER", "tester"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

fn is_lua(path: &Path) -> bool {
    path.file_name()
        .is_some_and(|name| name.to_string_lossy().starts_with("lua_"))
}

/// `# expect: <fragment>` and `# line: <N>` from a bad config's header.
fn expectation(text: &str) -> Option<(String, usize)> {
    let header = |key: &str| {
        text.lines()
            .take_while(|line| line.starts_with('#'))
            .find_map(|line| {
                line.strip_prefix(&format!("# {key}:"))
                    .map(|v| v.trim().to_owned())
            })
    };
    Some((header("expect")?, header("line")?.parse().ok()?))
}

fn check_bad(path: &Path) -> Result<(), String> {
    let text = std::fs::read_to_string(path).map_err(|err| err.to_string())?;
    let (fragment, line) = expectation(&text).ok_or("missing `# expect:` or `# line:` header")?;
    let errors = match bake(path, &sys_env()) {
        Ok(_) => return Err("baked without errors".to_owned()),
        Err(errors) => errors,
    };
    let matched = errors
        .iter()
        .any(|error| error.line == Some(line) && error.to_string().contains(&fragment));
    if matched {
        Ok(())
    } else {
        Err(format!(
            "expected `{fragment}` at line {line}, got:\n      {}",
            errors.to_string().replace('\n', "\n      ")
        ))
    }
}

#[test]
fn every_bad_config_fails_with_its_message_at_its_line() {
    let files = corpus("bad");
    assert!(
        files.len() >= 45,
        "the bad corpus has only {} files",
        files.len()
    );
    let failures: Vec<String> = files
        .iter()
        .filter_map(|path| {
            check_bad(path)
                .err()
                .map(|why| format!("  {}: {why}", path.display()))
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} bad configs did not fail as expected:\n{}",
        failures.len(),
        files.len(),
        failures.join("\n")
    );
}

fn check_good(path: &Path) -> Result<(), String> {
    let baked = bake(path, &sys_env()).map_err(|errors| errors.to_string())?;
    check_snapshot(&baked.config)
        .map_err(|err| format!("a baked config fails the checks: {err}"))?;
    let stored =
        snapshot_from_json(&snapshot_to_json(&baked.config)).map_err(|err| err.to_string())?;
    if stored != baked.config {
        return Err("the JSON snapshot did not round-trip".to_owned());
    }
    let rendered = render_snapshot(&baked.config);
    let loaded = load_snapshot(&rendered).map_err(|err| format!("{err}\n{rendered}"))?;
    if loaded != baked.config {
        return Err(format!("the snapshot did not round-trip:\n{rendered}"));
    }
    Ok(())
}

fn check_all_good(lua: bool) {
    let failures: Vec<String> = corpus("good")
        .iter()
        .filter(|path| is_lua(path) == lua)
        .filter_map(|path| {
            check_good(path)
                .err()
                .map(|why| format!("  {}: {why}", path.display()))
        })
        .collect();
    assert!(
        failures.is_empty(),
        "good configs failed:\n{}",
        failures.join("\n")
    );
}

#[test]
fn every_good_config_bakes_and_round_trips_through_the_snapshot() {
    check_all_good(false);
}

#[test]
fn every_good_lua_config_bakes_and_round_trips_through_the_snapshot() {
    check_all_good(true);
}

#[test]
fn instance_names_of_replicated_services_are_unambiguous() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus/good/replicas.yaml");
    let config = bake(&path, &sys_env()).unwrap().config;
    assert_eq!(config.services["web"].replicas, Some(4));
    assert_eq!(config.services["worker"].replicas, Some(0));
    assert_eq!(config.services["api.v2-1"].replicas, None);
    // Any number a scale could reach names an instance of a replicated
    // service; plain services, even with dots, are themselves.
    assert_eq!(config.instance_of("web.3"), Some(("web", Some(3))));
    assert_eq!(config.instance_of("web.1024"), Some(("web", Some(1024))));
    assert_eq!(config.instance_of("worker.1"), Some(("worker", Some(1))));
    assert_eq!(config.instance_of("api.v2.1"), Some(("api.v2", Some(1))));
    assert_eq!(config.instance_of("api.v2-1"), Some(("api.v2-1", None)));
    assert_eq!(config.instance_of("proxy.1"), Some(("proxy.1", None)));
    for not_a_name in ["web.0", "web.01", "web.1025", "proxy.1.1", "db.1"] {
        assert_eq!(config.instance_of(not_a_name), None, "{not_a_name}");
    }
    // Instances run with their service's settings.
    assert_eq!(
        config.template("web.2").map(|s| &s.command),
        Some(&config.services["web"].command)
    );
}
