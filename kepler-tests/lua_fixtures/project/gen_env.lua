-- A !lua_file: builds a service's environment list from ctx.
local env = { "SERVICE=" .. ctx.service_name }
if ctx.env.DEBUG then
  table.insert(env, "DEBUG=true")
end
return env
