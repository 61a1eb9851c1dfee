-- A module that fails while loading, on line 3.
local M = {}
error("broken module")
return M
