//! `kepler import` through the real binaries: a realistic file of each
//! format (fixtures/import/<format>/) becomes exactly the expected kepler.yaml
//! and report, the result passes `kepler check`, and a small stack imported
//! from each format runs (`start -d --wait`, `ps`).
//!
//! Set KEPLER_BLESS=1 to rewrite the expected files after a deliberate change.

use std::fs;
use std::path::{Path, PathBuf};

use kepler_e2e::{Kepler, ServiceRow};

fn fixture_dir(format: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/import")
        .join(format)
}

/// Copies the fixture's files (not the expectations) into the scratch dir.
fn copy_tree(from: &Path, to: &Path) {
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name();
        if name.to_string_lossy().starts_with("expected.") {
            continue;
        }
        let target = to.join(&name);
        if entry.file_type().unwrap().is_dir() {
            fs::create_dir_all(&target).unwrap();
            copy_tree(&entry.path(), &target);
        } else {
            fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// `actual` equals the fixture's `expected.<name>`, or rewrites it when
/// blessing.
#[track_caller]
fn assert_golden(format: &str, name: &str, actual: &str) {
    let path = fixture_dir(format).join(format!("expected.{name}"));
    if std::env::var_os("KEPLER_BLESS").is_some() {
        fs::write(&path, actual).unwrap();
        return;
    }
    let expected = fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (KEPLER_BLESS=1 writes it)", path.display()));
    assert!(
        expected == actual,
        "{} differs from the import (KEPLER_BLESS=1 rewrites it after a deliberate change)\n--- expected\n{expected}\n--- actual\n{actual}",
        path.display()
    );
}

/// Imports the fixture of `format` and checks the config and the report
/// against the expected files, then `kepler check`.
fn imports_as_expected(format: &str, source: &str) -> String {
    let kepler = Kepler::new();
    copy_tree(&fixture_dir(format), kepler.dir());
    let run = kepler.kepler(&["import", source]);
    run.success();
    let written = fs::read_to_string(kepler.dir().join("kepler.yaml")).unwrap();
    assert_golden(format, "kepler.yaml", &written);
    assert_golden(format, "report.txt", &run.stderr);
    kepler.kepler(&["check"]).success();
    run.stderr.clone()
}

#[test]
fn a_procfile_imports_as_expected() {
    let report = imports_as_expected("procfile", "Procfile");
    assert!(
        report.contains("Procfile:7: line `this line is not a process entry`"),
        "{report}"
    );
}

#[test]
fn a_supervisord_conf_with_includes_imports_as_expected() {
    let report = imports_as_expected("supervisord", "supervisord.conf");
    assert!(
        report.contains("supervisord.conf:25: [program:api] startsecs:"),
        "{report}"
    );
    assert!(
        report.contains("conf.d/nginx.conf:5: [program:nginx] serverurl:"),
        "{report}"
    );
}

#[test]
fn a_process_compose_file_imports_as_expected() {
    let report = imports_as_expected("process-compose", "process-compose.yaml");
    assert!(
        report.contains("process-compose.yaml:60: process `api` ready_log_line:"),
        "{report}"
    );
}

#[test]
fn a_pm2_ecosystem_object_literal_imports_as_expected() {
    let report = imports_as_expected("pm2", "ecosystem.config.js");
    assert!(
        report.contains("ecosystem.config.js:28: app `api` max_memory_restart:"),
        "{report}"
    );
}

#[test]
fn a_docker_compose_file_imports_as_expected() {
    let report = imports_as_expected("compose", "docker-compose.yml");
    assert!(
        report.contains("docker-compose.yml:8: service `db` -> not imported"),
        "{report}"
    );
    assert!(
        report.contains("docker-compose.yml:30: service `web` ports:"),
        "{report}"
    );
}

/// Imports `source` (already written) and runs the result with
/// `start -d --wait`; returns the services' rows.
fn import_and_run(kepler: &Kepler, source: &str) -> std::collections::BTreeMap<String, ServiceRow> {
    kepler.kepler(&["import", source]).success();
    kepler.kepler(&["check"]).success();
    kepler.kepler(&["start", "-d", "--wait"]).success();
    kepler.ps("kepler.yaml")
}

#[track_caller]
fn assert_status(rows: &std::collections::BTreeMap<String, ServiceRow>, name: &str, status: &str) {
    let row = rows
        .get(name)
        .unwrap_or_else(|| panic!("no service {name}: {:?}", rows.keys().collect::<Vec<_>>()));
    assert_eq!(row.status(), status, "{name}: {:?}", row.0);
}

#[test]
fn a_stack_imported_from_a_procfile_runs() {
    let kepler = Kepler::started();
    kepler.write(
        "Procfile",
        "web: echo \"web $GREETING\"; exec sleep 600\nworker: echo worker up; exec sleep 600\n",
    );
    kepler.write(".env", "GREETING=hello\n");
    let rows = import_and_run(&kepler, "Procfile");
    assert_status(&rows, "web", "running");
    assert_status(&rows, "worker", "running");
    kepler.wait_for_log("kepler.yaml", "web hello");
    kepler.kepler(&["stop"]).success();
}

#[test]
fn a_stack_imported_from_supervisord_runs_numprocs_as_replicas() {
    let kepler = Kepler::started();
    kepler.write(
        "supervisord.conf",
        "[supervisord]\nenvironment=STACK=kepler\n\n[program:web]\ncommand=/bin/sh -c \"echo %(program_name)s in $STACK; exec sleep 600\"\nautorestart=true\n\n[program:worker]\ncommand=/bin/sh -c \"echo worker %(process_num)d; exec sleep 600\"\nnumprocs=2\n",
    );
    let rows = import_and_run(&kepler, "supervisord.conf");
    for name in ["web", "worker.1", "worker.2"] {
        assert_status(&rows, name, "running");
    }
    kepler.wait_for_log("kepler.yaml", "web in kepler");
    // %(process_num)d counts from 0 (numprocs_start), one per instance.
    kepler.wait_for_log("kepler.yaml", "worker 0");
    kepler.wait_for_log("kepler.yaml", "worker 1");
    kepler.kepler(&["stop"]).success();
}

#[test]
fn a_stack_imported_from_process_compose_runs_in_dependency_order() {
    let kepler = Kepler::started();
    kepler.write(
        "process-compose.yaml",
        r#"version: "0.5"
processes:
  setup:
    command: "echo setup done"
  db:
    command: "touch db.ready; exec sleep 600"
    readiness_probe:
      exec:
        command: "test -e db.ready"
      period_seconds: 1
  api:
    command: "echo api up; exec sleep 600"
    depends_on:
      setup:
        condition: process_completed_successfully
      db:
        condition: process_healthy
"#,
    );
    let rows = import_and_run(&kepler, "process-compose.yaml");
    assert_status(&rows, "setup", "exited");
    assert_eq!(rows["setup"].exit_code(), Some(0));
    assert_status(&rows, "db", "healthy");
    assert_status(&rows, "api", "running");
    kepler.kepler(&["stop"]).success();
}

#[test]
fn a_stack_imported_from_a_pm2_ecosystem_file_runs_its_instances() {
    let kepler = Kepler::started();
    kepler.write(
        "app.sh",
        "echo \"instance $NODE_APP_INSTANCE of $APP\"\nexec sleep 600\n",
    );
    kepler.write(
        "ecosystem.config.js",
        "module.exports = {\n  apps: [{\n    name: 'app',\n    script: 'app.sh',\n    instances: 2,\n    env: { APP: 'shop' },\n  }],\n};\n",
    );
    let rows = import_and_run(&kepler, "ecosystem.config.js");
    assert_status(&rows, "app.1", "running");
    assert_status(&rows, "app.2", "running");
    // pm2 numbers its instances from 0.
    kepler.wait_for_log("kepler.yaml", "instance 0 of shop");
    kepler.wait_for_log("kepler.yaml", "instance 1 of shop");
    kepler.kepler(&["stop"]).success();
}

#[test]
fn a_stack_imported_from_docker_compose_runs_the_services_with_commands() {
    let kepler = Kepler::started();
    kepler.write(
        "docker-compose.yml",
        r#"services:
  db:
    image: postgres:16
  cache:
    image: redis:7
    command: ["sh", "-c", "touch cache.ready; exec sleep 600"]
    healthcheck:
      test: ["CMD", "test", "-e", "cache.ready"]
      interval: 1s
  web:
    image: web
    command: sh -c 'echo web up; exec sleep 600'
    mem_limit: 256m
    cpus: 0.5
    pids_limit: 100
    depends_on:
      cache:
        condition: service_healthy
"#,
    );
    let rows = import_and_run(&kepler, "docker-compose.yml");
    assert!(
        !rows.contains_key("db"),
        "db has no command and is not imported"
    );
    assert_status(&rows, "cache", "healthy");
    assert_status(&rows, "web", "running");
    kepler.kepler(&["stop"]).success();
}

#[test]
fn import_refuses_to_overwrite_without_force_and_writes_to_stdout_with_a_dash() {
    let kepler = Kepler::new();
    kepler.write("Procfile", "web: sleep 600\n");
    kepler.write("kepler.yaml", "services: {}\n");
    kepler
        .kepler(&["import", "Procfile"])
        .failure()
        .stderr_has("kepler.yaml already exists; use --force");
    let run = kepler.kepler(&["import", "Procfile", "-o", "-"]);
    run.success()
        .stdout_has("  web:\n    command:\n    - sh\n    - -c\n    - sleep 600\n");
    assert!(
        run.stderr
            .contains("Procfile:1: process `web` -> service `web`"),
        "{run}"
    );
    kepler.kepler(&["import", "Procfile", "--force"]).success();
    assert!(fs::read_to_string(kepler.dir().join("kepler.yaml"))
        .unwrap()
        .contains("web:"));
}

#[test]
fn a_pm2_file_that_computes_its_export_is_refused_not_run() {
    let kepler = Kepler::new();
    kepler.write(
        "ecosystem.config.js",
        "require('fs').writeFileSync('ran', 'yes');\nmodule.exports = { apps: [] };\n",
    );
    kepler
        .kepler(&["import", "ecosystem.config.js"])
        .failure()
        .stderr_has("ecosystem.config.js:1: pm2 ecosystem files are read as data and never run");
    assert!(!kepler.dir().join("ran").exists());
    assert!(!kepler.dir().join("kepler.yaml").exists());
}

#[test]
fn the_format_is_recognised_from_content_or_named_with_from() {
    let kepler = Kepler::new();
    kepler.write("services.ini", "[program:web]\ncommand=/bin/sleep 600\n");
    kepler
        .kepler(&["import", "services.ini", "-o", "-"])
        .success()
        .stderr_has("services.ini (supervisord)");
    kepler.write("stack.txt", "web: sleep 600\n");
    kepler
        .kepler(&["import", "stack.txt", "-o", "-"])
        .failure()
        .stderr_has("--from procfile|supervisord|process-compose|pm2|compose");
    kepler
        .kepler(&["import", "stack.txt", "--from", "procfile", "-o", "-"])
        .success()
        .stderr_has("stack.txt (Procfile)");
}
