-- Port helpers shared by several services; reads the caller's ctx.
local ports = {}

function ports.for_service()
  return ctx.env.PORT or "8080"
end

function ports.describe()
  return ctx.service_name .. " on " .. ports.for_service()
end

return ports
