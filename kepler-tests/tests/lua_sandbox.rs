//! The Lua sandbox as config baking uses it: values generated from `ctx`,
//! state shared through `lua:` and `global`, `require` confined to the config
//! directory, no way out of the sandbox, time and memory limits, and errors
//! that point at the right file and line.
//!
//! The evaluator never reads the config file itself (baking hands it each
//! block), so `project/kepler.yaml` only names the config's directory.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use kepler_daemon::lua_eval::{LuaContext, LuaError, LuaEvaluator};
use serde_yaml::Value as Yaml;

/// The time limit is 1 s of CPU time; on a loaded machine that can take
/// much longer in wall time, so "stopped" is checked with a generous bound.
const STOPPED_WITHIN: Duration = Duration::from_secs(30);

fn fixture_config() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("lua_fixtures/project/kepler.yaml")
}

fn vars(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn service(name: &str, env: &[(&str, &str)]) -> LuaContext {
    LuaContext {
        env: vars(env),
        service_name: Some(name.to_string()),
        ..LuaContext::default()
    }
}

fn evaluator(lua_block: Option<&str>) -> LuaEvaluator {
    LuaEvaluator::new(&fixture_config(), lua_block, 2, &LuaContext::default()).unwrap()
}

/// Evaluates `code` as a block at line 10 of a fresh evaluator's config.
fn eval(code: &str) -> Result<Yaml, LuaError> {
    evaluator(None).eval_block(code, "services.app.command", 10, &service("app", &[]))
}

fn yaml(text: &str) -> Yaml {
    serde_yaml::from_str(text).unwrap()
}

fn assert_refused(result: Result<Yaml, LuaError>, expected: &str) {
    let err = result.expect_err("must be refused");
    assert!(err.message.contains(expected), "{expected:?} not in {err}");
}

#[test]
fn spec_example_generates_command_array_and_environment_list() {
    let lua = evaluator(Some(
        "function get_port()\n  return ctx.env.PORT or \"8080\"\nend\n",
    ));
    let ctx = service("backend", &[("PORT", "3000"), ("DEBUG", "1")]);
    let command = lua
        .eval_block(
            "return {\"node\", \"server.js\", \"--port\", get_port()}",
            "services.backend.command",
            12,
            &ctx,
        )
        .unwrap();
    assert_eq!(command, yaml("[node, server.js, --port, '3000']"));

    let environment = r#"
local result = {"NODE_ENV=production"}
if ctx.env.DEBUG then
  table.insert(result, "DEBUG=true")
end
return result"#;
    let env = lua
        .eval_block(environment, "services.backend.environment", 14, &ctx)
        .unwrap();
    assert_eq!(env, yaml("[NODE_ENV=production, DEBUG=true]"));
}

#[test]
fn lua_block_function_sees_the_ctx_of_the_block_calling_it() {
    let lua = evaluator(Some(
        "function describe()\n  return ctx.service_name .. ':' .. (ctx.env.PORT or '8080')\nend",
    ));
    let web = lua
        .eval_block(
            "return describe()",
            "services.web.command",
            20,
            &service("web", &[("PORT", "80")]),
        )
        .unwrap();
    let api = lua
        .eval_block(
            "return describe()",
            "services.api.command",
            30,
            &service("api", &[]),
        )
        .unwrap();
    assert_eq!(web, yaml("'web:80'"));
    assert_eq!(api, yaml("'api:8080'"));
}

#[test]
fn ctx_carries_the_values_baking_passed() {
    let ctx = LuaContext {
        env: vars(&[("PORT", "3000")]),
        sys_env: vars(&[("HOME", "/root")]),
        env_file: vars(&[("DB", "postgres")]),
        service_name: Some("app".into()),
        hook_name: Some("pre_start".into()),
    };
    let code = "return { ctx.env.PORT, ctx.sys_env.HOME, ctx.env_file.DB, ctx.service_name, ctx.hook_name }";
    let all = evaluator(None).eval_block(code, "x", 1, &ctx).unwrap();
    assert_eq!(all, yaml("['3000', /root, postgres, app, pre_start]"));

    let code =
        "return { hook = ctx.hook_name == nil, service = ctx.service_name == nil, n = #ctx.env }";
    let empty = evaluator(None)
        .eval_block(code, "x", 1, &LuaContext::default())
        .unwrap();
    assert_eq!(empty, yaml("{hook: true, n: 0, service: true}"));

    let code = "local keys = {} for k in pairs(ctx.env) do table.insert(keys, k) end table.sort(keys) return keys";
    let keys = evaluator(None)
        .eval_block(code, "x", 1, &service("a", &[("B", "2"), ("A", "1")]))
        .unwrap();
    assert_eq!(keys, yaml("[A, B]"));
}

#[test]
fn writing_to_ctx_or_its_tables_raises_a_read_only_error() {
    for write in [
        "ctx.service_name = 'other'",
        "ctx.extra = 1",
        "ctx.env.PORT = '1'",
        "ctx.sys_env.PATH = '/tmp'",
        "ctx.env_file.X = '1'",
        "rawset(ctx.env, 'PORT', '1')",
        "table.insert(ctx.env, 'x')",
        "setmetatable(ctx, {})",
    ] {
        assert_refused(eval(write), "read-only");
    }
}

#[test]
fn global_is_one_table_shared_by_all_blocks_and_files() {
    let lua = evaluator(None);
    let ctx = service("app", &[]);
    lua.eval_block("global.ports = {8080}", "a", 1, &ctx)
        .unwrap();
    let seen = lua
        .eval_block(
            "table.insert(global.ports, 8081) return global.ports",
            "b",
            1,
            &ctx,
        )
        .unwrap();
    assert_eq!(seen, yaml("[8080, 8081]"));
    // A module shares it too: it counts its own loads in `global`.
    let loads = lua
        .eval_block(
            "require('lib.counter') return global.counter_loads",
            "c",
            1,
            &ctx,
        )
        .unwrap();
    assert_eq!(loads, yaml("1"));
}

#[test]
fn require_loads_a_module_beside_the_config_once_per_evaluator() {
    let lua = evaluator(Some("ports = require('lib.ports')"));
    let described = lua
        .eval_block(
            "return ports.describe()",
            "a",
            1,
            &service("web", &[("PORT", "80")]),
        )
        .unwrap();
    assert_eq!(described, yaml("web on 80"));
    let direct = lua
        .eval_block(
            "return require('lib.ports').for_service()",
            "b",
            1,
            &service("api", &[]),
        )
        .unwrap();
    assert_eq!(direct, yaml("'8080'"));

    let code = "return require('lib.counter').loads";
    assert_eq!(
        lua.eval_block(code, "c", 1, &service("a", &[])).unwrap(),
        yaml("1")
    );
    assert_eq!(
        lua.eval_block(code, "d", 1, &service("b", &[])).unwrap(),
        yaml("1")
    );
}

#[test]
fn require_and_lua_file_refuse_paths_that_leave_the_config_dir() {
    assert_refused(eval("require('..secret')"), "`..`");
    assert_refused(eval("require('../outside/secret')"), "`..`");
    assert_refused(eval("require('lib/../../x')"), "`..`");
    assert_refused(eval("require('/etc/passwd')"), "absolute");
    assert_refused(eval("require('lib/ports')"), "dot-separated");
    let lua = evaluator(None);
    let ctx = service("app", &[]);
    assert_refused(lua.eval_file("../outside.lua", "x", &ctx), "`..`");
    assert_refused(lua.eval_file("/etc/hostname", "x", &ctx), "absolute");
}

#[test]
fn symlinks_pointing_out_of_the_config_dir_are_refused() {
    let root = tempfile::tempdir().unwrap();
    let outside = root.path().join("outside");
    let project = root.path().join("project");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::create_dir_all(&project).unwrap();
    std::fs::write(outside.join("secret.lua"), "return 'secret'").unwrap();
    std::fs::write(project.join("real.lua"), "return 'inside'").unwrap();
    std::os::unix::fs::symlink("../outside/secret.lua", project.join("leak.lua")).unwrap();
    std::os::unix::fs::symlink("../outside", project.join("linked")).unwrap();
    std::os::unix::fs::symlink("real.lua", project.join("alias.lua")).unwrap();

    let ctx = LuaContext::default();
    let lua = LuaEvaluator::new(&project.join("kepler.yaml"), None, 1, &ctx).unwrap();
    assert_refused(
        lua.eval_block("return require('leak')", "a", 1, &ctx),
        "outside the config directory",
    );
    assert_refused(
        lua.eval_block("return require('linked.secret')", "b", 1, &ctx),
        "outside the config directory",
    );
    assert_refused(
        lua.eval_file("leak.lua", "c", &ctx),
        "outside the config directory",
    );
    assert_refused(
        lua.eval_file("linked/secret.lua", "d", &ctx),
        "outside the config directory",
    );
    // A symlink that stays inside is fine.
    assert_eq!(
        lua.eval_block("return require('alias')", "e", 1, &ctx)
            .unwrap(),
        yaml("inside")
    );
}

#[test]
fn forbidden_globals_are_absent() {
    let names = [
        "io",
        "os.execute",
        "os.remove",
        "os.rename",
        "os.exit",
        "os.getenv",
        "os.tmpname",
        "loadfile",
        "dofile",
        "load",
        "loadstring",
        "debug",
        "package",
        "string.dump",
        "getfenv",
        "setfenv",
        "newproxy",
        "coroutine",
        "buffer",
    ];
    for name in names {
        let check = format!("return {name} == nil");
        let absent = eval(&check).unwrap_or_else(|err| panic!("{name}: {err}"));
        assert_eq!(absent, Yaml::Bool(true), "{name} must be absent");
    }
}

#[test]
fn native_and_missing_modules_cannot_be_required() {
    for name in ["socket", "socket.core", "ffi", "os", "io"] {
        assert_refused(
            eval(&format!("return require('{name}')")),
            "cannot load module",
        );
    }
}

#[test]
fn safe_libraries_are_present_and_cannot_be_poisoned() {
    let present = eval(
        "return { string.upper('a'), table.concat({'b', 'c'}), math.max(1, 2), utf8.char(72), \
         bit32.band(6, 3), type(os.time()), type(os.date('%Y')), type(os.clock()), tostring(12), \
         select('#', 1, 2), ('x'):rep(2) }",
    )
    .unwrap();
    assert_eq!(
        present,
        yaml("[A, bc, 2, H, 2, number, string, number, '12', 2, xx]")
    );

    let lua = evaluator(None);
    let ctx = service("app", &[]);
    for poison in [
        "string.upper = function() return 'pwned' end",
        "getmetatable('').__index = { upper = function() return 'pwned' end }",
        "table.insert = nil",
        "rawset(string, 'upper', nil)",
    ] {
        assert_refused(lua.eval_block(poison, "p", 1, &ctx), "read-only");
    }
    assert_eq!(
        lua.eval_block("return ('a'):upper()", "q", 1, &ctx)
            .unwrap(),
        yaml("A")
    );
}

#[test]
fn an_infinite_loop_is_stopped_by_the_time_limit() {
    let lua = evaluator(None);
    let ctx = service("app", &[]);
    let started = Instant::now();
    let err = lua
        .eval_block(
            "local n = 0\nwhile true do n = n + 1 end",
            "services.app.command",
            10,
            &ctx,
        )
        .unwrap_err();
    let took = started.elapsed();
    assert!(err.message.contains("time limit"), "{err}");
    assert_eq!(err.line, Some(11), "{err:?}");
    assert!(
        took >= Duration::from_millis(900) && took < STOPPED_WITHIN,
        "{took:?}"
    );
    // The same evaluator and a new one both work afterwards.
    assert_eq!(lua.eval_block("return 1", "x", 1, &ctx).unwrap(), yaml("1"));
    assert_eq!(eval("return 2").unwrap(), yaml("2"));
}

#[test]
fn the_time_limit_cannot_be_caught_with_pcall() {
    let started = Instant::now();
    let err = eval("while true do pcall(function() while true do end end) end").unwrap_err();
    assert!(err.message.contains("time limit"), "{err}");
    assert!(started.elapsed() < STOPPED_WITHIN);
}

#[test]
fn a_pathological_pattern_is_stopped_by_the_time_limit() {
    let started = Instant::now();
    let err =
        eval("return string.find(string.rep('a', 40), string.rep('a*', 40) .. 'b')").unwrap_err();
    assert!(err.message.contains("time limit"), "{err}");
    assert!(started.elapsed() < STOPPED_WITHIN);
}

#[test]
fn memory_bombs_are_stopped_by_the_memory_limit() {
    for bomb in [
        "local s = 'x' while true do s = s .. s end",
        // Chunks big enough to reach the limit in a few thousand steps: on a
        // loaded machine, 4 KiB ones could hit the 1 s time limit first.
        "local t = {} for i = 1, 1e9 do t[i] = string.rep('x', 65536) .. i end",
        "global.hoard = {} for i = 1, 1e9 do global.hoard[i] = table.create(512, i) end",
        "return string.rep('x', 2^30)",
    ] {
        let err = eval(bomb).unwrap_err();
        assert!(err.message.contains("memory limit"), "{bomb}: {err}");
    }
    assert_eq!(
        eval("return 'still healthy'").unwrap(),
        yaml("still healthy")
    );
}

#[test]
fn lua_file_is_evaluated_with_the_callers_ctx() {
    let lua = evaluator(None);
    let ctx = service("worker", &[("DEBUG", "1")]);
    let env = lua
        .eval_file("gen_env.lua", "services.worker.environment", &ctx)
        .unwrap();
    assert_eq!(env, yaml("[SERVICE=worker, DEBUG=true]"));
}

#[test]
fn a_runtime_error_in_a_lua_file_reports_that_file_and_line() {
    let lua = evaluator(None);
    let err = lua
        .eval_file(
            "broken_file.lua",
            "services.app.command",
            &service("app", &[]),
        )
        .unwrap_err();
    assert!(err.file.ends_with("broken_file.lua"), "{err:?}");
    assert_eq!(err.line, Some(4), "{err:?}");
    assert_eq!(err.yaml_path, "services.app.command");
    assert!(err.message.contains("attempt to index nil"), "{err}");
    assert!(!err.message.contains("stack traceback"), "{err}");
}

#[test]
fn an_error_in_a_module_reports_the_module_file_and_line() {
    let err = eval("local x = 1\nreturn require('lib.broken')").unwrap_err();
    assert!(err.file.ends_with("lib/broken.lua"), "{err:?}");
    assert_eq!(err.line, Some(3), "{err:?}");
    assert_eq!(err.message, "broken module");
    assert_eq!(err.yaml_path, "services.app.command");
}

#[test]
fn a_missing_module_is_reported_at_the_requiring_line() {
    let err = eval("local x = 1\nreturn require('lib.nope')").unwrap_err();
    assert!(err.file.ends_with("kepler.yaml"), "{err:?}");
    assert_eq!(err.line, Some(11), "{err:?}");
    assert!(err.message.contains("lib/nope.lua"), "{err}");
}

#[test]
fn a_syntax_error_in_a_block_reports_the_config_line() {
    let err = evaluator(None)
        .eval_block(
            "local a = 1\nlocal = 2",
            "services.app.command",
            20,
            &service("app", &[]),
        )
        .unwrap_err();
    assert!(err.file.ends_with("kepler.yaml"), "{err:?}");
    assert_eq!(err.line, Some(21), "{err:?}");
    let shown = err.to_string();
    assert!(
        shown.contains("kepler.yaml:21: services.app.command: lua: "),
        "{shown}"
    );
}

#[test]
fn results_convert_to_yaml_by_shape() {
    let nested =
        eval("return { name = 'app', ports = {80, 443}, ratio = 0.5, debug = false, none = nil }")
            .unwrap();
    assert_eq!(
        nested,
        yaml("{debug: false, name: app, ports: [80, 443], ratio: 0.5}")
    );
    assert!(nested["ports"][0].is_i64());
    assert!(nested["ratio"].is_f64());
    assert_eq!(eval("return nil").unwrap(), Yaml::Null);
    assert_refused(
        eval("return { hook = function() end }"),
        "services.app.command.hook",
    );
}

#[test]
fn a_deep_require_chain_is_refused_before_it_exhausts_the_native_stack() {
    let root = tempfile::tempdir().unwrap();
    let depth = 300;
    for i in 0..depth {
        let next = format!("return require('m{}')", i + 1);
        std::fs::write(root.path().join(format!("m{i}.lua")), next).unwrap();
    }
    std::fs::write(root.path().join(format!("m{depth}.lua")), "return 'bottom'").unwrap();
    let config = root.path().join("kepler.yaml");
    // The default stack of std and tokio blocking threads.
    let evaluation = std::thread::Builder::new()
        .stack_size(2 * 1024 * 1024)
        .spawn(move || {
            let ctx = LuaContext::default();
            let lua = LuaEvaluator::new(&config, None, 1, &ctx).unwrap();
            lua.eval_block("return require('m0')", "x", 1, &ctx)
        })
        .unwrap();
    let err = evaluation.join().unwrap().unwrap_err();
    assert!(err.message.contains("nested more than"), "{err}");
}

#[test]
fn an_error_object_whose_tostring_loops_is_still_stopped() {
    let started = Instant::now();
    let code = "error(setmetatable({}, {__tostring = function() while true do end end}))";
    assert!(eval(code).is_err());
    assert!(started.elapsed() < STOPPED_WITHIN);
}

#[test]
fn a_module_cycle_is_reported_not_followed() {
    let root = tempfile::tempdir().unwrap();
    std::fs::write(root.path().join("a.lua"), "return require('b')").unwrap();
    std::fs::write(root.path().join("b.lua"), "return require('a')").unwrap();
    let ctx = LuaContext::default();
    let lua = LuaEvaluator::new(&root.path().join("kepler.yaml"), None, 1, &ctx).unwrap();
    let err = lua
        .eval_block("return require('a')", "x", 1, &ctx)
        .unwrap_err();
    assert!(err.message.contains("circular require"), "{err}");
    assert!(err.file.ends_with("b.lua"), "{err:?}");
}

#[test]
fn deeply_nested_source_is_a_compile_error_not_a_crash() {
    let n = 100_000;
    let sources = [
        format!("return {}1{}", "(".repeat(n), ")".repeat(n)),
        format!("return {}1{}", "{".repeat(n), "}".repeat(n)),
        format!("{} return 1 {}", "do ".repeat(n), " end".repeat(n)),
        format!("return 1 {}", "+ 1 ".repeat(n)),
    ];
    for source in sources {
        let compiled = std::thread::Builder::new()
            .stack_size(2 * 1024 * 1024)
            .spawn(move || eval(&source))
            .unwrap()
            .join()
            .unwrap();
        assert_refused(compiled, "recursion depth");
    }
}

#[test]
fn a_fifo_named_like_a_module_is_refused_without_blocking() {
    let root = tempfile::tempdir().unwrap();
    let fifo = root.path().join("pipe.lua");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
    let ctx = LuaContext::default();
    let lua = LuaEvaluator::new(&root.path().join("kepler.yaml"), None, 1, &ctx).unwrap();
    assert_refused(
        lua.eval_block("return require('pipe')", "x", 1, &ctx),
        "not a regular file",
    );
    assert_refused(lua.eval_file("pipe.lua", "y", &ctx), "not a regular file");
}
