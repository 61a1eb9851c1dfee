//! Lua-generated configs through the real binaries: evaluated once at bake
//! time, stored in the snapshot, sandboxed, and located when they fail.

use kepler_e2e::{Kepler, DEADLINE};
use nix::sys::signal::Signal;

const GENERATED: &str = r#"
lua: |
  function port()
    return ctx.env.PORT or "8080"
  end
  function stamp()
    return tostring(os.time())
  end

services:
  web:
    command: !lua |
      return {"sh", "-c", "echo port=" .. port() .. " name=" .. ctx.service_name .. " seen=$SEEN > out.txt; sleep 1000"}
    environment: !lua |
      global.baked_at = stamp()
      return {"SEEN=" .. (ctx.env_file.FROM_FILE or "none"), "BAKED=" .. global.baked_at}
    env_file: .env
"#;

fn output(kepler: &Kepler) -> String {
    kepler.wait_for_file("out.txt").trim().to_string()
}

#[test]
fn command_and_environment_come_from_lua_with_lua_block_functions_seeing_ctx() {
    let kepler = Kepler::started();
    kepler.write(".env", "FROM_FILE=dotenv\n");
    kepler.write("kepler.yaml", GENERATED);
    kepler
        .run_with_env(&["start", "-d", "--wait"], &[("PORT", "9001")])
        .success();
    assert_eq!(output(&kepler), "port=9001 name=web seen=dotenv");
    kepler.kepler(&["stop"]).success();
}

#[test]
fn lua_results_are_baked_once_and_change_only_on_recreate() {
    let mut kepler = Kepler::started();
    kepler.write(".env", "FROM_FILE=one\n");
    kepler.write("kepler.yaml", GENERATED);
    kepler
        .run_with_env(&["start", "-d", "--wait"], &[("PORT", "1")])
        .success();
    assert_eq!(output(&kepler), "port=1 name=web seen=one");

    // A daemon restart resumes from the snapshot: the scripts do not run again.
    kepler.write(".env", "FROM_FILE=two\n");
    std::fs::remove_file(kepler.dir().join("out.txt")).unwrap();
    kepler.signal_daemon(Signal::SIGTERM);
    kepler.wait_daemon_exit();
    kepler.start_daemon();
    assert_eq!(output(&kepler), "port=1 name=web seen=one");
    kepler.kepler(&["stop"]).success();

    std::fs::remove_file(kepler.dir().join("out.txt")).unwrap();
    kepler
        .run_with_env(&["recreate"], &[("PORT", "2")])
        .success();
    kepler.kepler(&["start", "-d", "--wait"]).success();
    assert_eq!(output(&kepler), "port=2 name=web seen=two");
    kepler.kepler(&["stop"]).success();
}

#[test]
fn require_loads_a_module_beside_the_config() {
    let kepler = Kepler::started();
    kepler.write(
        "lib/ports.lua",
        "local M = {}\nfunction M.http() return '7070' end\nreturn M\n",
    );
    kepler.write(
        "kepler.yaml",
        "services:\n  web:\n    command: !lua |\n      local ports = require('lib.ports')\n      return {'sh', '-c', 'echo ' .. ports.http() .. ' > out.txt; sleep 1000'}\n",
    );
    kepler.kepler(&["start", "-d", "--wait"]).success();
    assert_eq!(output(&kepler), "7070");
    kepler.kepler(&["stop"]).success();
}

#[test]
fn a_runtime_error_in_a_lua_file_points_at_that_file_and_line() {
    let kepler = Kepler::started();
    kepler.write(
        "gen.lua",
        "local x = 1\nlocal y = 2\nerror('boom from gen')\n",
    );
    kepler.write(
        "kepler.yaml",
        "services:\n  web:\n    command: !lua_file gen.lua\n",
    );
    kepler
        .kepler(&["start", "-d"])
        .failure()
        .stderr_has("gen.lua:3")
        .stderr_has("services.web.command")
        .stderr_has("boom from gen");
}

#[test]
fn forbidden_globals_are_absent_and_ctx_is_read_only() {
    let kepler = Kepler::new();
    for (name, code) in [
        ("io", "return {tostring(io)}"),
        ("exec", "return {tostring(os.execute)}"),
        ("dofile", "return {tostring(dofile)}"),
        ("debug", "return {tostring(debug)}"),
    ] {
        kepler.write(
            &format!("{name}.yaml"),
            &format!("services:\n  s:\n    command: !lua |\n      {code}\n"),
        );
        kepler
            .kepler(&["-f", &format!("{name}.yaml"), "check"])
            .success()
            .stdout_has("- nil");
    }
    kepler.write(
        "ro.yaml",
        "services:\n  s:\n    command: !lua |\n      ctx.env.X = '1'\n      return {'true'}\n",
    );
    kepler
        .kepler(&["-f", "ro.yaml", "check"])
        .failure()
        .stderr_has("read-only");
}

#[test]
fn an_endless_script_is_stopped_while_other_configs_keep_running() {
    let kepler = Kepler::started();
    kepler.write(
        "ok/kepler.yaml",
        "services:\n  steady:\n    command: [sleep, '1000']\n",
    );
    kepler
        .kepler(&["-f", "ok/kepler.yaml", "start", "-d", "--wait"])
        .success();
    let steady = kepler.service("ok/kepler.yaml", "steady").pid();

    kepler.write(
        "loop/kepler.yaml",
        "services:\n  spin:\n    command: !lua |\n      while true do end\n",
    );
    let started = std::time::Instant::now();
    kepler
        .kepler(&["-f", "loop/kepler.yaml", "start", "-d"])
        .failure()
        .stderr_has("time limit");
    assert!(started.elapsed() < DEADLINE);

    kepler.write(
        "bomb/kepler.yaml",
        "services:\n  hog:\n    command: !lua |\n      local t = {}\n      local s = string.rep('x', 1024 * 1024)\n      for i = 1, 1000 do t[i] = s .. i end\n      return {'true'}\n",
    );
    kepler
        .kepler(&["-f", "bomb/kepler.yaml", "start", "-d"])
        .failure()
        .stderr_has("memory");

    // The daemon and the other config are unharmed.
    assert_eq!(kepler.service("ok/kepler.yaml", "steady").pid(), steady);
    kepler.kepler(&["daemon", "status"]).success();
    kepler.kepler(&["-f", "ok/kepler.yaml", "stop"]).success();
}
