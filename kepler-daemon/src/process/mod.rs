//! Process manager: spawning services as process-group leaders, reaping, stopping.
