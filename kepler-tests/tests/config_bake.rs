//! Baking behaviour through the public API: expansion stages, environment
//! priority and `sys_env`, path resolution, defaults, the dependency graph
//! queries, and (once the sandbox lands) the Lua stage order.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use kepler_daemon::config::{bake, Baked, ConfigErrors, HealthProbe, HumanDuration, RestartPolicy};

struct Dir(tempfile::TempDir);

impl Dir {
    fn new() -> Self {
        Self(tempfile::tempdir().unwrap())
    }
    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    }
    fn path(&self) -> &Path {
        self.0.path()
    }
}

fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn bake_text(dir: &Dir, yaml: &str, sys_env: &[(&str, &str)]) -> Result<Baked, ConfigErrors> {
    let file = dir.write("kepler.yaml", yaml);
    bake(&file, &env(sys_env))
}

#[test]
fn env_file_path_sees_only_the_system_env_and_environment_sees_the_env_file() {
    let dir = Dir::new();
    dir.write("prod.env", "FROM_FILE=file-${STAGE}\nSHARED=file\n");
    let baked = bake_text(
        &dir,
        "services:\n  app:\n    command: [./app]\n    env_file: ${STAGE}.env\n    environment:\n      - A=${FROM_FILE}\n      - B=${A}+${SHARED}\n      - SHARED=env\n",
        &[("STAGE", "prod")],
    )
    .unwrap();
    let app = &baked.config.services["app"];
    assert_eq!(
        app.env_file.as_deref(),
        Some(dir.path().join("prod.env").as_path())
    );
    assert_eq!(app.environment["A"], "file-prod");
    assert_eq!(
        app.environment["B"], "file-prod+file",
        "earlier entries are visible to later ones"
    );
    assert_eq!(
        app.environment["SHARED"], "env",
        "environment beats env_file"
    );
    assert_eq!(baked.env_files.len(), 1);
    assert!(baked.env_files[0].contents.contains("FROM_FILE"));
}

#[test]
fn other_fields_expand_with_system_env_file_and_environment() {
    let dir = Dir::new();
    dir.write(".env", "APP_DIR=srv\n");
    let baked = bake_text(
        &dir,
        "services:\n  app:\n    command: [\"sh\", \"-c\", \"echo ${NAME} $$HOME\"]\n    env_file: .env\n    environment: [NAME=world, MEM=256M]\n    working_dir: ~/${APP_DIR}/${NAME}\n    user: ${RUN_AS}\n    limits: {memory: \"${MEM}\"}\n    restart: {policy: always, watch: [\"${APP_DIR}/**\"]}\n",
        &[("HOME", "/home/ada"), ("RUN_AS", "1000:1000")],
    )
    .unwrap();
    let app = &baked.config.services["app"];
    assert_eq!(app.working_dir, Path::new("/home/ada/srv/world"));
    assert_eq!(app.user.as_ref().unwrap().to_string(), "1000:1000");
    assert_eq!(app.limits.memory.unwrap().bytes(), 256 << 20);
    assert_eq!(app.restart.watch, ["srv/**"]);
    assert_eq!(
        app.command[2], "echo ${NAME} $$HOME",
        "command is never expanded"
    );
}

#[test]
fn sys_env_clear_passes_nothing_and_inherit_passes_the_captured_env_only() {
    // A variable of the daemon's own environment must never reach a service.
    std::env::set_var("KEPLER_TEST_DAEMON_ONLY", "leak");
    let dir = Dir::new();
    let yaml = "kepler:\n  sys_env: inherit\nservices:\n  inherits:\n    command: [./a]\n  clears:\n    command: [./b]\n    sys_env: clear\n    environment: [\"X=${CAPTURED}\", \"Y=${KEPLER_TEST_DAEMON_ONLY}\"]\n";
    let baked = bake_text(&dir, yaml, &[("CAPTURED", "yes")]).unwrap();
    let services = &baked.config.services;
    assert_eq!(
        services["inherits"].environment,
        env(&[("CAPTURED", "yes")])
    );
    assert_eq!(
        services["clears"].environment,
        env(&[("X", "yes"), ("Y", "")])
    );
}

#[test]
fn relative_paths_resolve_against_the_config_dir_and_hooks_against_the_service_dir() {
    let dir = Dir::new();
    let baked = bake_text(
        &dir,
        "kepler:\n  hooks:\n    pre_start: {run: echo hi, working_dir: scripts}\nservices:\n  app:\n    command: [./app]\n    working_dir: ./apps/../app\n    user: node\n    group: staff\n    hooks:\n      pre_start: {run: ./prep.sh, working_dir: ./hooks, environment: [H=1]}\n      pre_stop: {run: ./stop.sh, user: \"0\"}\n",
        &[],
    )
    .unwrap();
    let app = &baked.config.services["app"];
    let app_dir = dir.path().join("app");
    assert_eq!(app.working_dir, app_dir);
    let pre_start = &app.hooks[&kepler_daemon::config::ServiceHookKind::PreStart];
    assert_eq!(pre_start.working_dir, app_dir.join("hooks"));
    assert_eq!(pre_start.user.as_ref().unwrap().to_string(), "node");
    assert_eq!(pre_start.group.as_ref().unwrap().to_string(), "staff");
    assert_eq!(pre_start.environment["H"], "1");
    let pre_stop = &app.hooks[&kepler_daemon::config::ServiceHookKind::PreStop];
    assert_eq!(pre_stop.user.as_ref().unwrap().to_string(), "0");
    assert_eq!(pre_stop.group, None);
    let global = &baked.config.kepler.hooks[&kepler_daemon::config::GlobalHookKind::PreStart];
    assert_eq!(global.working_dir, dir.path().join("scripts"));
}

#[test]
fn hooks_inherit_the_service_env_then_their_env_file_then_their_environment() {
    let dir = Dir::new();
    dir.write("hook.env", "LAYER=hook-file\nFILE_ONLY=1\n");
    let baked = bake_text(
        &dir,
        "services:\n  app:\n    command: [./app]\n    environment: [LAYER=service, SERVICE_ONLY=1]\n    hooks:\n      post_exit:\n        run: echo\n        env_file: hook.env\n        environment: [\"LAYER=hook-${LAYER}\"]\n",
        &[],
    )
    .unwrap();
    let hook =
        &baked.config.services["app"].hooks[&kepler_daemon::config::ServiceHookKind::PostExit];
    assert_eq!(hook.environment["SERVICE_ONLY"], "1");
    assert_eq!(hook.environment["FILE_ONLY"], "1");
    assert_eq!(hook.environment["LAYER"], "hook-hook-file");
}

#[test]
fn defaults_are_filled() {
    let dir = Dir::new();
    let baked = bake_text(
        &dir,
        "kepler:\n  timeout: 20s\n  logs: {max_size: 5M, timestamp: true}\nservices:\n  db:\n    command: [db]\n    healthcheck: {test: \"pg_isready\"}\n  app:\n    command: [./app]\n    depends_on: [db]\n    logs: {buffer_size: 4K}\n",
        &[],
    )
    .unwrap();
    let config = &baked.config;
    let app = &config.services["app"];
    assert_eq!(app.restart.policy, RestartPolicy::No);
    assert_eq!(app.restart.delay, HumanDuration::from_millis(100));
    assert_eq!(app.restart.max_delay, HumanDuration::from_secs(30));
    assert_eq!(app.stop_signal.to_string(), "SIGTERM");
    assert_eq!(app.stop_grace_period, HumanDuration::from_secs(10));
    assert_eq!(
        app.depends_on["db"].timeout,
        Some(HumanDuration::from_secs(20))
    );
    assert!(app.depends_on["db"].wait);
    assert_eq!(
        app.logs.max_size.unwrap().bytes(),
        5 << 20,
        "global log default"
    );
    assert!(app.logs.timestamp);
    assert_eq!(app.logs.buffer_size.bytes(), 4096, "service override");
    let health = config.services["db"].healthcheck.as_ref().unwrap();
    assert_eq!(
        health.probe,
        HealthProbe::Test(vec!["sh".into(), "-c".into(), "pg_isready".into()])
    );
    assert_eq!(
        (health.interval, health.timeout, health.retries),
        (
            HumanDuration::from_secs(30),
            HumanDuration::from_secs(30),
            3
        )
    );
}

#[test]
fn all_errors_of_a_file_are_reported_at_once_in_file_order() {
    let dir = Dir::new();
    let errors = bake_text(
        &dir,
        "services:\n  a:\n    command: [./a]\n    workdir: x\n  b:\n    command: []\n    depends_on: [nope]\n    stop_signal: SIGNOPE\n",
        &[],
    )
    .unwrap_err();
    let lines: Vec<usize> = errors.iter().map(|e| e.line.unwrap()).collect();
    assert_eq!(lines, [4, 6, 7, 8], "{errors}");
    assert_eq!(errors.to_string().lines().count(), 4);
}

const GRAPH: &str = "services:
  db:
    command: [db]
    healthcheck: {tcp: \"localhost:5432\"}
  migrate:
    command: [migrate]
    depends_on: {db: {condition: service_healthy}}
  api:
    command: [api]
    depends_on:
      db: {condition: service_healthy}
      migrate: {condition: service_completed_successfully}
  batch:
    command: [batch]
    depends_on: {db: {condition: service_started, wait: false}}
  report:
    command: [report]
    depends_on: [batch]
  alert:
    command: [alert]
    depends_on: {db: {condition: service_unhealthy}}
  watchdog:
    command: [watchdog]
    depends_on: {db: {condition: service_failed, wait: true}}
";

#[test]
fn topological_order_puts_dependencies_first() {
    let dir = Dir::new();
    let config = bake_text(&dir, GRAPH, &[]).unwrap().config;
    let order = config.topological_order();
    let position = |name: &str| order.iter().position(|n| *n == name).unwrap();
    assert_eq!(order.len(), 7);
    assert!(position("db") < position("migrate") && position("migrate") < position("api"));
    assert!(position("batch") < position("report"));
    // The index the orchestrator reacts with: dependents of each service.
    let index = kepler_daemon::deps::DependencyIndex::build(&config);
    assert_eq!(
        index.dependents("db"),
        ["alert", "api", "batch", "migrate", "watchdog"]
    );
    // Everything that depends on batch, transitively, is report alone.
    assert_eq!(index.dependents("batch"), ["report"]);
    assert!(index.dependents("report").is_empty());
}

#[test]
fn startup_cluster_follows_edge_classes_wait_overrides_and_propagates() {
    let dir = Dir::new();
    let config = bake_text(&dir, GRAPH, &[]).unwrap().config;
    let cluster: Vec<&str> = config.startup_cluster().into_iter().collect();
    // batch: wait: false on a startup edge; report: depends on a deferred service;
    // alert: deferred condition; watchdog: deferred condition forced to wait.
    assert_eq!(cluster, ["api", "db", "migrate", "watchdog"]);
    assert!(!config.is_startup("report"));
}

#[test]
fn a_services_own_wait_overrides_what_its_edges_say() {
    let dir = Dir::new();
    let text = "services:
  db:
    command: [db]
    wait: false
  api:
    command: [api]
    depends_on: [db]
  alert:
    command: [alert]
    depends_on: {api: {condition: service_failed}}
    wait: true
  solo:
    command: [solo]
";
    let config = bake_text(&dir, text, &[]).unwrap().config;
    let cluster: Vec<&str> = config.startup_cluster().into_iter().collect();
    // db is deferred by its own `wait`, so api (waiting on it) is too;
    // alert waits on a deferred edge but asks to be waited for.
    assert_eq!(cluster, ["alert", "solo"]);
    assert_eq!(config.services["alert"].wait, Some(true));
    assert_eq!(config.services["solo"].wait, None);
}

fn lua_sys_env() -> BTreeMap<String, String> {
    env(&[("HOME", "/home/ada"), ("PORT", "9000")])
}

#[test]
fn lua_blocks_see_the_env_of_their_stage() {
    let dir = Dir::new();
    dir.write("app.env", "FROM_FILE=f\n");
    let file = dir.write(
        "kepler.yaml",
        "lua: |\n  function port() return ctx.env.PORT end\nservices:\n  app:\n    env_file: !lua return 'app.env'\n    environment: !lua |\n      return {'SEEN=' .. (ctx.env.FROM_FILE or 'none'), 'P=' .. port()}\n    command: !lua |\n      return {'./app', ctx.env.SEEN, ctx.service_name}\n    hooks:\n      pre_start:\n        run: !lua return 'echo ' .. ctx.hook_name\n",
    );
    let baked = bake(&file, &lua_sys_env()).unwrap();
    let app = &baked.config.services["app"];
    assert_eq!(app.environment["SEEN"], "f");
    assert_eq!(app.environment["P"], "9000");
    assert_eq!(app.command, ["./app", "f", "app"]);
    let hook = &app.hooks[&kepler_daemon::config::ServiceHookKind::PreStart];
    assert_eq!(
        hook.action,
        kepler_daemon::config::HookAction::Run("echo pre_start".into())
    );
}

#[test]
fn a_lua_value_of_the_wrong_type_is_a_validation_error_at_the_tag() {
    let dir = Dir::new();
    let file = dir.write(
        "kepler.yaml",
        "services:\n  app:\n    command: [./app]\n    limits:\n      max_fds: !lua return 'many'\n",
    );
    let errors = bake(&file, &lua_sys_env()).unwrap_err();
    let error = errors.iter().next().unwrap();
    assert_eq!(error.line, Some(5));
    assert_eq!(error.path, "services.app.limits.max_fds");
    assert!(
        error.message.contains("expected a whole number"),
        "{errors}"
    );
}

#[test]
fn lua_blocks_run_in_file_order_sharing_global() {
    let dir = Dir::new();
    let file = dir.write(
        "kepler.yaml",
        "kepler:\n  timeout: !lua |\n    global.n = 1\n    return '5s'\nservices:\n  a:\n    command: !lua |\n      global.n = global.n + 1\n      return {'a', tostring(global.n)}\n  b:\n    command: !lua |\n      global.n = global.n + 1\n      return {'b', tostring(global.n)}\n",
    );
    let baked = bake(&file, &lua_sys_env()).unwrap();
    assert_eq!(baked.config.services["a"].command, ["a", "2"]);
    assert_eq!(baked.config.services["b"].command, ["b", "3"]);
}
