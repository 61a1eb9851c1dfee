//! What `kepler top` shows, apart from how: the services of the latest
//! frame with their sparkline history, the sort column, the name filter,
//! the selection, a pending confirmation and the log pane's lines.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;

use kepler_protocol::{ServiceInfo, ServiceStatus, TopFrame};

/// Samples kept per service for the sparklines.
pub const SPARK_SAMPLES: usize = 60;
/// Lines the log pane keeps.
pub const LOG_LINES: usize = 500;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortColumn {
    Name,
    Status,
    Cpu,
    Memory,
    Restarts,
    Uptime,
}

impl SortColumn {
    pub fn next(self) -> Self {
        match self {
            SortColumn::Name => SortColumn::Status,
            SortColumn::Status => SortColumn::Cpu,
            SortColumn::Cpu => SortColumn::Memory,
            SortColumn::Memory => SortColumn::Restarts,
            SortColumn::Restarts => SortColumn::Uptime,
            SortColumn::Uptime => SortColumn::Name,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            SortColumn::Name => "name",
            SortColumn::Status => "status",
            SortColumn::Cpu => "cpu",
            SortColumn::Memory => "mem",
            SortColumn::Restarts => "restarts",
            SortColumn::Uptime => "uptime",
        }
    }
}

/// What `r` and `x` do once confirmed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Restart,
    Stop,
}

impl Action {
    pub fn verb(self) -> &'static str {
        match self {
            Action::Restart => "restart",
            Action::Stop => "stop",
        }
    }
}

/// A service as a row: which config it belongs to and its state.
#[derive(Debug, Clone)]
pub struct Row {
    pub config: PathBuf,
    pub info: ServiceInfo,
}

impl Row {
    pub fn key(&self) -> (PathBuf, String) {
        (self.config.clone(), self.info.name.clone())
    }
}

/// Recent samples of one service, oldest first.
#[derive(Debug, Clone, Default)]
pub struct Sparks {
    pub cpu: VecDeque<Option<f32>>,
    pub memory: VecDeque<Option<u64>>,
}

impl Sparks {
    fn push(&mut self, cpu: Option<f32>, memory: Option<u64>) {
        self.cpu.push_back(cpu);
        self.memory.push_back(memory);
        while self.cpu.len() > SPARK_SAMPLES {
            self.cpu.pop_front();
            self.memory.pop_front();
        }
    }
}

/// The log pane of one service.
#[derive(Debug, Clone)]
pub struct LogPane {
    pub service: String,
    /// Already made safe for the screen.
    pub lines: VecDeque<String>,
}

impl LogPane {
    pub fn push(&mut self, line: String) {
        self.lines.push_back(line);
        while self.lines.len() > LOG_LINES {
            self.lines.pop_front();
        }
    }
}

/// What the user is typing into, if anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Prompt {
    None,
    Filter,
    Confirm(Action, PathBuf, String),
}

#[derive(Debug, Clone)]
pub struct Model {
    /// Shows config paths (`--all`).
    pub all: bool,
    pub title: String,
    pub rows: Vec<Row>,
    pub sparks: HashMap<(PathBuf, String), Sparks>,
    pub sort: SortColumn,
    pub filter: String,
    /// The selected service, kept by identity across re-sorts.
    pub selected: Option<(PathBuf, String)>,
    pub prompt: Prompt,
    /// The outcome of the last action, shown at the bottom.
    pub message: Option<String>,
    pub logs: Option<LogPane>,
}

impl Model {
    pub fn new(title: String, all: bool) -> Self {
        Model {
            all,
            title,
            rows: Vec::new(),
            sparks: HashMap::new(),
            sort: SortColumn::Name,
            filter: String::new(),
            selected: None,
            prompt: Prompt::None,
            message: None,
            logs: None,
        }
    }

    /// Takes a frame: new rows, history (first frame) or a sample (ticks).
    pub fn apply(&mut self, frame: TopFrame) {
        let mut rows = Vec::new();
        for config in frame.configs {
            for history in config.history {
                let sparks = self
                    .sparks
                    .entry((config.path.clone(), history.name.clone()))
                    .or_default();
                for (cpu, memory) in history.cpu_percent.into_iter().zip(history.memory_bytes) {
                    sparks.push(cpu, memory);
                }
            }
            for info in config.services {
                if frame.sampled {
                    self.sparks
                        .entry((config.path.clone(), info.name.clone()))
                        .or_default()
                        .push(info.cpu_percent.map(|c| c as f32), info.memory_bytes);
                }
                rows.push(Row {
                    config: config.path.clone(),
                    info,
                });
            }
        }
        self.rows = rows;
        if self.selected.is_none() {
            self.selected = self.visible().first().map(|row| row.key());
        }
    }

    /// Rows that pass the filter, in the sort order.
    pub fn visible(&self) -> Vec<&Row> {
        let filter = self.filter.to_lowercase();
        let mut rows: Vec<&Row> = self
            .rows
            .iter()
            .filter(|row| filter.is_empty() || row.info.name.to_lowercase().contains(&filter))
            .collect();
        let by_name =
            |a: &&Row, b: &&Row| (&a.config, &a.info.name).cmp(&(&b.config, &b.info.name));
        match self.sort {
            SortColumn::Name => rows.sort_by(by_name),
            SortColumn::Status => rows.sort_by(|a, b| {
                status_rank(a.info.status)
                    .cmp(&status_rank(b.info.status))
                    .then_with(|| by_name(a, b))
            }),
            // Busiest first.
            SortColumn::Cpu => rows.sort_by(|a, b| {
                let cpu = |r: &&Row| r.info.cpu_percent.unwrap_or(-1.0);
                cpu(b).total_cmp(&cpu(a)).then_with(|| by_name(a, b))
            }),
            SortColumn::Memory => rows.sort_by(|a, b| {
                b.info
                    .memory_bytes
                    .cmp(&a.info.memory_bytes)
                    .then_with(|| by_name(a, b))
            }),
            SortColumn::Restarts => rows.sort_by(|a, b| {
                b.info
                    .restarts
                    .cmp(&a.info.restarts)
                    .then_with(|| by_name(a, b))
            }),
            SortColumn::Uptime => rows.sort_by(|a, b| {
                b.info
                    .uptime_secs
                    .cmp(&a.info.uptime_secs)
                    .then_with(|| by_name(a, b))
            }),
        }
        rows
    }

    /// Position of the selection among the visible rows.
    pub fn selected_index(&self, visible: &[&Row]) -> Option<usize> {
        let selected = self.selected.as_ref()?;
        visible
            .iter()
            .position(|row| row.config == selected.0 && row.info.name == selected.1)
    }

    /// Moves the selection by `delta` rows within the visible ones.
    pub fn move_selection(&mut self, delta: isize) {
        let visible = self.visible();
        if visible.is_empty() {
            return;
        }
        let index = self.selected_index(&visible).unwrap_or(0) as isize;
        let next = (index + delta).clamp(0, visible.len() as isize - 1) as usize;
        self.selected = Some(visible[next].key());
    }

    /// Keeps a selection among the visible rows after the filter changed.
    pub fn keep_selection_visible(&mut self) {
        let visible = self.visible();
        if self.selected_index(&visible).is_none() {
            self.selected = visible.first().map(|row| row.key());
        }
    }
}

/// Problems first, then what is up, then what is down.
fn status_rank(status: ServiceStatus) -> u8 {
    match status {
        ServiceStatus::Failed | ServiceStatus::Unhealthy => 0,
        ServiceStatus::Exited(code) if code != 0 => 0,
        ServiceStatus::Starting | ServiceStatus::Stopping => 1,
        ServiceStatus::Running | ServiceStatus::Healthy => 2,
        _ => 3,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kepler_protocol::{ServiceHistory, TopConfig};

    fn info(name: &str, cpu: Option<f64>) -> ServiceInfo {
        ServiceInfo {
            name: name.into(),
            status: ServiceStatus::Running,
            pid: Some(1),
            uptime_secs: Some(1),
            restarts: 0,
            health_failures: None,
            reason: None,
            cpu_percent: cpu,
            memory_bytes: Some(1024),
            cpu_seconds: None,
            service: name.into(),
            replica: None,
        }
    }

    fn frame(sampled: bool, services: Vec<ServiceInfo>, history: Vec<ServiceHistory>) -> TopFrame {
        TopFrame {
            sampled,
            configs: vec![TopConfig {
                path: "/srv/kepler.yaml".into(),
                services,
                history,
            }],
        }
    }

    #[test]
    fn history_then_ticks_fill_the_sparklines() {
        let mut model = Model::new("t".into(), false);
        let history = ServiceHistory {
            name: "web".into(),
            cpu_percent: vec![Some(1.0), None],
            memory_bytes: vec![Some(10), None],
        };
        model.apply(frame(false, vec![info("web", Some(5.0))], vec![history]));
        model.apply(frame(true, vec![info("web", Some(7.0))], vec![]));
        model.apply(frame(false, vec![info("web", Some(9.0))], vec![]));
        let sparks = &model.sparks[&("/srv/kepler.yaml".into(), "web".into())];
        assert_eq!(Vec::from(sparks.cpu.clone()), [Some(1.0), None, Some(7.0)]);
    }

    #[test]
    fn sorting_filtering_and_selection_follow_the_service() {
        let mut model = Model::new("t".into(), false);
        model.apply(frame(
            false,
            vec![
                info("api", Some(1.0)),
                info("web", Some(50.0)),
                info("worker", Some(9.0)),
            ],
            vec![],
        ));
        assert_eq!(model.selected.as_ref().unwrap().1, "api");
        model.sort = SortColumn::Cpu;
        let names: Vec<_> = model
            .visible()
            .iter()
            .map(|r| r.info.name.clone())
            .collect();
        assert_eq!(names, ["web", "worker", "api"]);
        model.move_selection(-1);
        assert_eq!(model.selected.as_ref().unwrap().1, "worker");
        model.filter = "w".into();
        model.keep_selection_visible();
        assert_eq!(model.selected.as_ref().unwrap().1, "worker");
        model.filter = "api".into();
        model.keep_selection_visible();
        assert_eq!(model.selected.as_ref().unwrap().1, "api");
    }
}
