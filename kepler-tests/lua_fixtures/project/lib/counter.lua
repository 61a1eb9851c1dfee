-- Counts how often its body runs, to show require caches modules.
global.counter_loads = (global.counter_loads or 0) + 1
return { loads = global.counter_loads }
