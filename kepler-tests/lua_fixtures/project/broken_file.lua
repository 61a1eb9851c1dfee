-- A !lua_file that fails at run time on line 4.
local settings = {}
local name = "app"
return settings[name].port
