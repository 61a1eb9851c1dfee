//! Sandboxed Luau evaluation of `!lua` / `!lua_file` blocks at bake time.
