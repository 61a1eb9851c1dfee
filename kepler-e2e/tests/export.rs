//! `kepler export` through the real binaries, with no daemon running and
//! nothing written to the state directory: systemd units that pass
//! `systemd-analyze verify`, a Nomad job checked against the structure of
//! Nomad's job API, and Kubernetes manifests that pass `kubernetes-validate`
//! (installed by scripts/test-env) for Kubernetes 1.30.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use kepler_e2e::Kepler;
use serde_json::Value;

#[path = "export/nomad_api.rs"]
mod nomad_api;
use nomad_api::{check_shape, nomad_job_shape};

/// A stack using every exported feature, with programs and users that
/// exist on the test machine (scripts/test-env).
const STACK: &str = r#"kepler:
  hooks:
    pre_start:
      run: echo starting
services:
  db:
    command: ["python3", "-m", "http.server", "5500", "--bind", "127.0.0.1"]
    user: www-data
    environment:
      - PGDATA=/var/lib/db
      - PRICE=100% of $5
    healthcheck:
      tcp: localhost:5500
      interval: 2s
      retries: 5
    restart: always
    limits:
      memory: 512M
      cpus: 0.5
      pids: 200
      io_weight: 300
      max_fds: 4096
    stop_signal: SIGINT
    stop_grace_period: 30s
  migrate:
    command: ["sh", "-c", "echo migrating \"$DB\"; sleep 1"]
    environment:
      - DB=shop
    depends_on:
      db:
        condition: service_healthy
  web:
    command: ["sleep", "600"]
    working_dir: ./web
    user: "33:33"
    depends_on:
      db:
        condition: service_healthy
        restart: true
        timeout: 60s
      migrate:
        condition: service_completed_successfully
    restart:
      policy: on-failure
      max_attempts: 5
      watch: ["src/**"]
    healthcheck:
      http: http://localhost:8000/health
      start_period: 5s
    hooks:
      pre_start:
        run: echo pre
      post_stop:
        command: ["echo", "bye"]
      post_start:
        run: echo post
  probe:
    command: ["sleep", "600"]
    limits:
      cpus: 2
    healthcheck:
      test: ["CMD", "true"]
  alert:
    command: ["sh", "-c", "echo alert"]
    depends_on:
      web:
        condition: service_failed
  worker:
    command: ["sh", "-c", "echo worker $KEPLER_REPLICA of $KEPLER_REPLICAS; exec sleep 600"]
    replicas: 2
  gateway:
    command: ["sleep", "600"]
    depends_on: [worker]
"#;

fn stack() -> Kepler {
    let kepler = Kepler::new();
    kepler.write("shop/kepler.yaml", STACK);
    kepler
}

fn in_shop(kepler: &Kepler, args: &[&str]) -> kepler_e2e::Run {
    let mut all = vec!["-f", "shop/kepler.yaml"];
    all.extend_from_slice(args);
    kepler.kepler(&all)
}

#[test]
fn systemd_units_pass_systemd_analyze_verify() {
    let kepler = stack();
    let run = in_shop(&kepler, &["export", "systemd", "-o", "units"]);
    run.success();
    assert!(
        !kepler.state_dir().exists(),
        "export must not touch the state directory"
    );
    let dir = kepler.dir().join("units");
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let names: Vec<String> = files
        .iter()
        .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        [
            "shop-alert.service",
            "shop-db.service",
            "shop-gateway.service",
            "shop-migrate.service",
            "shop-probe.service",
            "shop-web.service",
            "shop-worker@.service",
            "shop.target"
        ]
    );
    let Some(analyze) = which("systemd-analyze") else {
        panic!("systemd-analyze is missing: run `sudo scripts/test-env` (it installs systemd)");
    };
    let output = Command::new(analyze)
        .arg("verify")
        .arg("--man=no")
        .args(&files)
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    // verify exits 0 on some problems (an unknown key), so any word from it fails.
    assert!(
        output.status.success() && said.trim().is_empty(),
        "systemd-analyze verify:\n{said}"
    );

    let unit = |name: &str| fs::read_to_string(dir.join(name)).unwrap();
    let db = unit("shop-db.service");
    for line in [
        "ExecStart=/usr/bin/python3 -m http.server 5500 --bind 127.0.0.1",
        "User=www-data",
        "Environment=\"PRICE=100%% of $5\"",
        "Restart=always",
        "StartLimitIntervalSec=0",
        "KillSignal=SIGINT",
        "TimeoutStopSec=30s",
        "MemoryMax=536870912",
        "MemorySwapMax=0",
        "CPUQuota=50%",
        "TasksMax=200",
        "IOWeight=300",
        "LimitNOFILE=4096",
        "#   healthcheck (tcp localhost:5500): systemd has no health checks",
    ] {
        assert!(
            db.lines().any(|l| l == line),
            "no `{line}` in shop-db.service:\n{db}"
        );
    }
    let migrate = unit("shop-migrate.service");
    for line in [
        "Type=oneshot",
        "RemainAfterExit=yes",
        "Requires=shop-db.service",
        "After=shop-db.service",
        r#"ExecStart=/usr/bin/sh -c "echo migrating \"$$DB\"; sleep 1""#,
    ] {
        assert!(
            migrate.lines().any(|l| l == line),
            "no `{line}` in shop-migrate.service:\n{migrate}"
        );
    }
    let web = unit("shop-web.service");
    for line in [
        "Requires=shop-db.service shop-migrate.service",
        "PartOf=shop-db.service",
        "OnFailure=shop-alert.service",
        "StartLimitBurst=6",
        "Restart=on-failure",
        "ExecStartPre=/usr/bin/sh -c \"echo pre\"",
        "ExecStopPost=/usr/bin/echo bye",
        "User=33",
        "Group=33",
        "#   restart.watch (src/**): systemd does not restart on file changes (a .path unit could)",
    ] {
        assert!(
            web.lines().any(|l| l == line),
            "no `{line}` in shop-web.service:\n{web}"
        );
    }
    // A replicated service is a template; the target wants each instance,
    // and a dependent requires every one.
    let worker = unit("shop-worker@.service");
    for line in [
        "Description=worker instance %i (Kepler service of {config})",
        "Environment=KEPLER_REPLICA=%i",
        "Environment=KEPLER_REPLICAS=2",
        r#"ExecStart=/usr/bin/sh -c "echo worker $$KEPLER_REPLICA of $$KEPLER_REPLICAS; exec sleep 600""#,
    ] {
        let line = line.replace(
            "{config}",
            &kepler.dir().join("shop/kepler.yaml").display().to_string(),
        );
        assert!(
            worker.lines().any(|l| l == line),
            "no `{line}` in shop-worker@.service:\n{worker}"
        );
    }
    let gateway = unit("shop-gateway.service");
    assert!(
        gateway
            .lines()
            .any(|l| l == "Requires=shop-worker@1.service shop-worker@2.service"),
        "{gateway}"
    );
    assert!(unit("shop.target").contains("Wants=shop-alert.service shop-db.service shop-gateway.service shop-migrate.service shop-probe.service shop-web.service shop-worker@1.service shop-worker@2.service"));
    run.stderr_has("worker -> shop-worker@.service, instances @1 … @2 wanted by shop.target");
    run.stderr_has("web: hook post_start:")
        .stderr_has("warning: Environment= lines hold the baked environment values");

    // A second export into the same directory must be asked for.
    in_shop(&kepler, &["export", "systemd", "-o", "units"])
        .failure()
        .stderr_has("use --force");
    in_shop(&kepler, &["export", "systemd", "-o", "units", "--force"]).success();
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(program))
            .find(|p| p.is_file())
    })
}

#[test]
fn a_nomad_job_has_the_structure_of_the_job_api() {
    let kepler = stack();
    let run = in_shop(&kepler, &["export", "nomad"]);
    run.success();
    assert!(
        !kepler.state_dir().exists(),
        "export must not touch the state directory"
    );
    let job: Value =
        serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("not JSON: {e}\n{run}"));
    let mut problems = Vec::new();
    check_shape(&job, &nomad_job_shape(), "", &mut problems);
    assert!(problems.is_empty(), "{problems:#?}\n{}", run.stdout);

    let job = &job["Job"];
    for key in ["ID", "Name", "Type", "TaskGroups"] {
        assert!(!job[key].is_null(), "the API requires Job.{key}");
    }
    assert_eq!(job["Type"], "service");
    let group = &job["TaskGroups"][0];
    let labels: Vec<&str> = group["Networks"][0]["ReservedPorts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["Label"].as_str().unwrap())
        .collect();
    let tasks = group["Tasks"].as_array().unwrap();
    let task = |name: &str| {
        tasks
            .iter()
            .find(|t| t["Name"] == name)
            .unwrap_or_else(|| panic!("no task {name}"))
    };
    for task in tasks {
        assert_eq!(task["Driver"], "raw_exec");
        assert!(
            task["Config"]["command"].as_str().unwrap().starts_with('/'),
            "{task}"
        );
        for service in task["Services"].as_array().into_iter().flatten() {
            // A script check needs Consul, which then serves every check.
            assert_eq!(service["Provider"], "consul");
            for check in service["Checks"].as_array().unwrap() {
                assert!(["script", "http", "tcp"].contains(&check["Type"].as_str().unwrap()));
                if let Some(label) = check["PortLabel"].as_str() {
                    assert!(
                        labels.contains(&label),
                        "check port {label} is not a group port {labels:?}"
                    );
                }
            }
        }
    }
    let db = task("db");
    assert_eq!(db["Config"]["command"], "/usr/bin/python3");
    assert_eq!(db["User"], "www-data");
    assert_eq!(db["KillSignal"], "SIGINT");
    assert_eq!(db["KillTimeout"], 30_000_000_000u64);
    assert_eq!(db["Resources"]["MemoryMB"], 512);
    assert_eq!(task("probe")["Resources"]["Cores"], 2);
    run.stderr_has("db: limits.cpus with a fraction");
    assert_eq!(db["Env"]["PRICE"], "100% of $5");
    assert_eq!(db["Services"][0]["Checks"][0]["Type"], "tcp");
    assert_eq!(db["Services"][0]["Checks"][0]["Interval"], 2_000_000_000u64);
    assert_eq!(task("migrate")["Lifecycle"]["Hook"], "prestart");
    assert_eq!(task("web")["Services"][0]["Checks"][0]["Path"], "/health");
    assert_eq!(task("web")["RestartPolicy"]["Attempts"], 5);
    assert_eq!(task("probe")["Services"][0]["Checks"][0]["Command"], "true");
    assert_eq!(task("alert")["RestartPolicy"]["Attempts"], 0);
    // One task per instance, each knowing its number.
    assert!(tasks.iter().all(|t| t["Name"] != "worker"));
    for replica in ["1", "2"] {
        let worker = task(&format!("worker.{replica}"));
        assert_eq!(worker["Env"]["KEPLER_REPLICA"], replica);
        assert_eq!(worker["Env"]["KEPLER_REPLICAS"], "2");
        assert_eq!(worker["Config"]["command"], "/usr/bin/sh");
    }
    assert_eq!(group["Count"], 1);
    run.stderr_has("web: restart.watch: Nomad does not restart on file changes");
}

fn kubernetes_validate() -> PathBuf {
    let installed = Path::new("/opt/kepler-test-tools/bin/kubernetes-validate");
    if installed.is_file() {
        return installed.to_owned();
    }
    which("kubernetes-validate")
        .unwrap_or_else(|| panic!("kubernetes-validate is missing: run `sudo scripts/test-env` (it installs it from PyPI)"))
}

#[test]
fn kubernetes_manifests_pass_kubernetes_validate() {
    let kepler = stack();
    let run = in_shop(
        &kepler,
        &[
            "export",
            "kubernetes",
            "--image",
            "db=postgres:16",
            "--image",
            "web=shop/web:1.4",
            "--image",
            "migrate=shop/web:1.4",
            "--image",
            "probe=busybox:1.36",
            "--image",
            "worker=busybox:1.36",
            "-o",
            "k8s.yaml",
        ],
    );
    run.success();
    assert!(
        !kepler.state_dir().exists(),
        "export must not touch the state directory"
    );
    run.stderr_has("alert -> not exported: no --image given for it");
    let file = kepler.dir().join("k8s.yaml");
    let output = Command::new(kubernetes_validate())
        .args(["--strict", "--quiet", "--kubernetes-version", "1.30.0"])
        .arg(&file)
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success() && !said.contains("ERROR"),
        "kubernetes-validate:\n{said}"
    );

    let text = fs::read_to_string(&file).unwrap();
    let documents: Vec<serde_json::Value> = text
        .split("\n---\n")
        .skip(1)
        .map(|doc| serde_json::to_value(serde_yaml_doc(doc)).unwrap())
        .collect();
    let kinds: Vec<String> = documents
        .iter()
        .map(|d| {
            format!(
                "{}/{}",
                d["kind"].as_str().unwrap(),
                d["metadata"]["name"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "Deployment/db",
            "Job/migrate",
            "Deployment/probe",
            "Deployment/web",
            "Deployment/worker",
            "ServiceAccount/shop-waiter",
            "Role/shop-waiter",
            "RoleBinding/shop-waiter"
        ]
    );
    let db = &documents[0];
    assert_eq!(db["spec"]["replicas"], 1);
    let container = &db["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["command"][0], "python3");
    assert_eq!(container["securityContext"]["runAsUser"], 33);
    assert_eq!(container["resources"]["limits"]["memory"], "512Mi");
    assert_eq!(container["resources"]["limits"]["cpu"], "500m");
    assert_eq!(container["readinessProbe"]["tcpSocket"]["port"], 5500);
    assert_eq!(container["livenessProbe"]["failureThreshold"], 5);
    assert_eq!(
        db["spec"]["template"]["spec"]["terminationGracePeriodSeconds"],
        30
    );
    let worker = &documents[4];
    assert_eq!(worker["spec"]["replicas"], 2);
    assert_eq!(
        worker["spec"]["template"]["spec"]["containers"][0]["env"][0],
        serde_json::json!({ "name": "KEPLER_REPLICAS", "value": "2" })
    );
    run.stderr_has("worker: replicas 2: pods are interchangeable, so KEPLER_REPLICA is not set");
    let web = &documents[3]["spec"]["template"]["spec"];
    let waits: Vec<String> = web["initContainers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            c["command"]
                .as_array()
                .unwrap()
                .iter()
                .map(|w| w.as_str().unwrap())
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    assert_eq!(
        waits,
        [
            "kubectl wait --for=condition=Available --timeout=60s deployment/db",
            "kubectl wait --for=condition=Complete --timeout=-1s job/migrate",
        ]
    );
    assert_eq!(web["serviceAccountName"], "shop-waiter");
    assert_eq!(
        web["containers"][0]["readinessProbe"]["httpGet"]["path"],
        "/health"
    );
    assert_eq!(
        web["containers"][0]["readinessProbe"]["initialDelaySeconds"],
        5
    );
}

/// One YAML document as JSON, through the CLI's own dependency-free path:
/// the manifests are plain maps, lists and scalars.
fn serde_yaml_doc(doc: &str) -> serde_json::Value {
    serde_yaml::from_str(doc).unwrap_or_else(|e| panic!("not YAML: {e}\n{doc}"))
}

#[test]
fn kubernetes_export_refuses_unknown_services_and_needs_an_image() {
    let kepler = stack();
    in_shop(&kepler, &["export", "kubernetes", "--image", "nope=x:1"])
        .failure()
        .stderr_has("`nope` is not a service of")
        .stderr_has("services: alert, db, gateway, migrate, probe, web, worker");
    in_shop(&kepler, &["export", "kubernetes"])
        .failure()
        .stderr_has("give --image SERVICE=IMAGE");
}

#[test]
fn export_of_an_invalid_config_shows_the_bake_errors() {
    let kepler = Kepler::new();
    kepler.write("kepler.yaml", "services:\n  web:\n    command: sleep 1\n");
    kepler
        .kepler(&["export", "nomad"])
        .failure()
        .stderr_has("is not a valid config")
        .stderr_has("kepler.yaml:3:14: services.web.command");
}
