//! Unit tests of the evaluator's pieces; the behaviour as a whole is pinned
//! by `kepler-tests/tests/lua_sandbox.rs`.

use std::path::{Path, PathBuf};

use serde_yaml::Value as Yaml;

use super::files::{module_path, relative_file_path};
use super::*;

fn evaluator(lua_block: Option<&str>) -> LuaEvaluator {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("kepler.yaml");
    LuaEvaluator::new(&config, lua_block, 1, &LuaContext::default()).unwrap()
}

fn eval(code: &str) -> Result<Yaml, LuaError> {
    evaluator(None).eval_block(code, "services.app.command", 10, &LuaContext::default())
}

fn yaml(text: &str) -> Yaml {
    serde_yaml::from_str(text).unwrap()
}

#[test]
fn block_lines_are_padded_to_the_config_line() {
    assert_eq!(at_line("return 1", 1), "return 1");
    assert_eq!(at_line("return 1", 3), "\n\nreturn 1");
    assert_eq!(at_line("return 1", 0), "return 1");
}

#[test]
fn module_names_map_to_lua_files_under_the_config_dir() {
    assert_eq!(module_path("ports").unwrap(), PathBuf::from("ports.lua"));
    assert_eq!(
        module_path("lib.ports").unwrap(),
        PathBuf::from("lib/ports.lua")
    );
    for bad in [
        "",
        "/etc/passwd",
        "..",
        "../x",
        "lib..x",
        "lib/x",
        ".x",
        "x.",
        "a\0b",
    ] {
        assert!(module_path(bad).is_err(), "{bad:?} must be refused");
    }
}

#[test]
fn lua_file_paths_must_stay_relative() {
    assert_eq!(
        relative_file_path("./gen.lua").unwrap(),
        Path::new("gen.lua")
    );
    assert_eq!(relative_file_path("a/b.lua").unwrap(), Path::new("a/b.lua"));
    assert!(relative_file_path("/etc/passwd").is_err());
    assert!(relative_file_path("a/../../b.lua").is_err());
    assert!(relative_file_path(".").is_err());
}

#[test]
fn scalars_convert_to_their_yaml_types() {
    assert_eq!(eval("return 'x'").unwrap(), Yaml::String("x".into()));
    assert_eq!(eval("return 8080").unwrap(), yaml("8080"));
    assert!(eval("return 8080").unwrap().as_i64().is_some());
    assert_eq!(eval("return 1.5").unwrap(), yaml("1.5"));
    assert!(eval("return 1.5").unwrap().as_i64().is_none());
    assert_eq!(eval("return true").unwrap(), Yaml::Bool(true));
    assert_eq!(eval("return nil").unwrap(), Yaml::Null);
    assert_eq!(eval("local x = 1").unwrap(), Yaml::Null);
}

#[test]
fn tables_become_sequences_or_sorted_mappings() {
    assert_eq!(eval("return {}").unwrap(), yaml("[]"));
    assert_eq!(eval("return {'a', 2}").unwrap(), yaml("[a, 2]"));
    let nested = eval("return { b = {1, {x = true}}, a = 'y', [3] = 'z' }").unwrap();
    assert_eq!(nested, yaml("{'3': z, a: y, b: [1, {x: true}]}"));
    let keys: Vec<_> = nested.as_mapping().unwrap().keys().cloned().collect();
    assert_eq!(keys, vec![yaml("'3'"), yaml("a"), yaml("b")]);
    // A hole makes it a mapping keyed by the indices.
    assert_eq!(
        eval("return {[1] = 'a', [3] = 'c'}").unwrap(),
        yaml("{'1': a, '3': c}")
    );
}

#[test]
fn unconvertible_results_name_their_path() {
    let err = eval("return {'a', {f = print}}").unwrap_err();
    assert!(err.message.contains("services.app.command[1].f"), "{err}");
    assert!(err.message.contains("function"), "{err}");
    let err = eval("return {[true] = 1}").unwrap_err();
    assert!(err.message.contains("boolean key"), "{err}");
    let err = eval("return {[1.5] = 1}").unwrap_err();
    assert!(err.message.contains("non-integer key 1.5"), "{err}");
    let err = eval("local t = {} t.me = t return t").unwrap_err();
    assert!(err.message.contains("contains itself"), "{err}");
}

#[test]
fn results_that_would_explode_in_yaml_are_refused() {
    // 2^30 leaves from 30 small tables.
    let code = "local t = {'x'} for _ = 1, 30 do t = {t, t} end return t";
    let err = eval(code).unwrap_err();
    assert!(err.message.contains("too large"), "{err}");
    let code = "local t = {} for _ = 1, 200 do t = {t} end return t";
    let err = eval(code).unwrap_err();
    assert!(err.message.contains("nested more than"), "{err}");
}

#[test]
fn runtime_errors_carry_the_config_line_without_noise() {
    let err = eval("local x = 1\nerror('boom')").unwrap_err();
    assert_eq!(err.line, Some(11), "{err:?}");
    assert_eq!(err.message, "boom");
    assert_eq!(err.yaml_path, "services.app.command");
    assert!(err.file.ends_with("kepler.yaml"));
}

#[test]
fn error_with_a_non_string_value_asks_for_a_message() {
    let err = eval("error({code = 1})").unwrap_err();
    assert!(err.message.contains("pass a string message"), "{err:?}");
}

#[test]
fn lua_block_errors_point_at_the_lua_block_line() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("kepler.yaml");
    let ctx = LuaContext::default();
    let err = LuaEvaluator::new(&config, Some("x = 1\nx()"), 4, &ctx)
        .err()
        .unwrap();
    assert_eq!(err.line, Some(5), "{err:?}");
    assert_eq!(err.yaml_path, "");
    assert!(err.to_string().contains("kepler.yaml:5: lua: "), "{err}");
}

#[test]
fn readonly_writes_say_what_is_read_only() {
    let err = eval("ctx.env.X = '1'").unwrap_err();
    assert!(err.message.contains("read-only"), "{err}");
    let err = eval("string.upper = nil").unwrap_err();
    assert!(err.message.contains("read-only"), "{err}");
}

#[test]
fn the_shared_environment_cannot_be_frozen_or_rewired() {
    // Either would break every later block of the bake.
    assert!(eval("table.freeze(_G)").is_err());
    assert!(eval("setmetatable(_G, {})").is_err());
    assert_eq!(
        eval("return type(getmetatable(_G))").unwrap(),
        yaml("string")
    );
}

#[test]
fn collectgarbage_only_counts() {
    assert!(eval("return collectgarbage('count')")
        .unwrap()
        .as_f64()
        .is_some());
    assert!(eval("collectgarbage('stop')").is_err());
}

#[test]
fn evaluator_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<LuaEvaluator>();
}

#[test]
fn block_globals_stay_in_their_block_but_lua_block_globals_are_shared() {
    let lua = evaluator(Some("greeting = 'hi'"));
    let ctx = LuaContext::default();
    lua.eval_block("stray = 1", "a", 1, &ctx).unwrap();
    assert_eq!(
        lua.eval_block("return stray", "b", 1, &ctx).unwrap(),
        Yaml::Null
    );
    assert_eq!(
        lua.eval_block("return greeting", "c", 1, &ctx).unwrap(),
        yaml("hi")
    );
    // Shadowing a `lua:` global is local to the block too.
    lua.eval_block("greeting = 'bye'", "d", 1, &ctx).unwrap();
    assert_eq!(
        lua.eval_block("return greeting", "e", 1, &ctx).unwrap(),
        yaml("hi")
    );
}

#[test]
fn print_is_harmless_and_bounded() {
    let code = "for i = 1, 10000 do print('line', i, string.rep('x', 10000)) end return 'done'";
    assert_eq!(eval(code).unwrap(), yaml("done"));
}
