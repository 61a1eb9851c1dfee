//! Drawing `kepler top`: a title line, the table of services (only the rows
//! that fit are built, so a frame costs the screen's size, not the
//! config's), the log pane when open, and a line for keys, prompts and
//! outcomes. Text from services and configs is made safe before it is put
//! on screen.

use std::collections::VecDeque;

use kepler_protocol::ServiceStatus;
use ratatui::backend::TestBackend;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Cell, Paragraph, Row as TableRow, Table};
use ratatui::{Frame, Terminal};

use super::model::{Model, Prompt, Row};
use crate::human_size::{human_bytes, human_percent};
use crate::human_time::human_duration;
use crate::terminal_text::TextMode;

/// Samples shown per sparkline.
const SPARK_WIDTH: usize = 16;
const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];

/// Text someone else wrote, as the screen may show it: control characters
/// (escape sequences included) as visible escapes, tabs as spaces.
pub fn safe(text: &str) -> String {
    TextMode::Terminal.show(text).replace('\t', " ")
}

pub fn draw(frame: &mut Frame<'_>, model: &Model) {
    let [title, body, footer] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(1),
        Constraint::Length(1),
    ])
    .areas(frame.area());
    frame.render_widget(Paragraph::new(title_line(model)), title);
    match &model.logs {
        Some(pane) => {
            let [table, logs] =
                Layout::vertical([Constraint::Percentage(40), Constraint::Percentage(60)])
                    .areas(body);
            draw_table(frame, table, model);
            let block = Block::default()
                .borders(Borders::TOP)
                .title(format!(" logs of {} (Esc to close) ", safe(&pane.service)));
            let inner = block.inner(logs);
            frame.render_widget(block, logs);
            let lines = last_lines(&pane.lines, inner.height as usize);
            frame.render_widget(Paragraph::new(lines), inner);
        }
        None => draw_table(frame, body, model),
    }
    frame.render_widget(Paragraph::new(footer_line(model)), footer);
}

fn title_line(model: &Model) -> Line<'static> {
    let running = model.rows.iter().filter(|r| r.info.status.is_up()).count();
    // What changes comes first; the path, which may be long, last.
    let mut text = format!(
        "kepler top  {} services, {} up  sort: {}",
        model.rows.len(),
        running,
        model.sort.name()
    );
    if !model.filter.is_empty() {
        text.push_str(&format!("  filter: {}", safe(&model.filter)));
    }
    text.push_str(&format!("  {}", safe(&model.title)));
    Line::from(Span::styled(
        text,
        Style::default().add_modifier(Modifier::BOLD),
    ))
}

fn footer_line(model: &Model) -> Line<'static> {
    match &model.prompt {
        Prompt::Filter => Line::from(format!(
            "filter by name: {}_  (Enter to keep, Esc to clear)",
            safe(&model.filter)
        )),
        Prompt::Confirm(action, _, service) => Line::from(Span::styled(
            format!("{} {}? y/n", action.verb(), safe(service)),
            Style::default()
                .fg(Color::Yellow)
                .add_modifier(Modifier::BOLD),
        )),
        Prompt::None => match &model.message {
            Some(message) => Line::from(safe(message)),
            None => Line::from(Span::styled(
                "↑↓/jk select  s sort  / filter  Enter logs  r restart  x stop  q quit",
                Style::default().add_modifier(Modifier::DIM),
            )),
        },
    }
}

fn draw_table(frame: &mut Frame<'_>, area: Rect, model: &Model) {
    let visible = model.visible();
    // The header takes one line; only the rows that fit are built.
    let fits = area.height.saturating_sub(1) as usize;
    let selected = model.selected_index(&visible);
    let offset = selected.map_or(0, |s| (s + 1).saturating_sub(fits));
    let shown = &visible[offset.min(visible.len())..(offset + fits).min(visible.len())];
    draw_rows(
        frame,
        area,
        model,
        shown,
        selected.map(|s| s.wrapping_sub(offset)),
    );
}

/// The header and `rows` (`selected` counts from the first of them).
fn draw_rows(
    frame: &mut Frame<'_>,
    area: Rect,
    model: &Model,
    rows: &[&Row],
    selected: Option<usize>,
) {
    let mut header = Vec::new();
    if model.all {
        header.push("CONFIG");
    }
    header.extend([
        "  NAME",
        "STATUS",
        "HEALTH",
        "PID",
        "UPTIME",
        "RESTARTS",
        "CPU",
        "MEM",
        "CPU HISTORY",
        "MEM HISTORY",
    ]);
    let rows = rows
        .iter()
        .enumerate()
        .map(|(index, row)| table_row(model, row, Some(index) == selected));
    let mut widths = Vec::new();
    if model.all {
        widths.push(Constraint::Max(40));
    }
    widths.extend([
        Constraint::Min(12),
        Constraint::Length(12),
        Constraint::Length(9),
        Constraint::Length(8),
        Constraint::Length(8),
        Constraint::Length(8),
        Constraint::Length(7),
        Constraint::Length(7),
        Constraint::Length(SPARK_WIDTH as u16),
        Constraint::Length(SPARK_WIDTH as u16),
    ]);
    let table = Table::new(rows, widths)
        .header(TableRow::new(header).style(Style::default().add_modifier(Modifier::BOLD)))
        .column_spacing(1);
    frame.render_widget(table, area);
}

fn table_row<'a>(model: &Model, row: &Row, selected: bool) -> TableRow<'a> {
    let info = &row.info;
    let sparks = model.sparks.get(&row.key());
    let cpu_history = sparks.map_or_else(String::new, |s| {
        sparkline(s.cpu.iter().map(|v| v.map(f64::from)), 100.0)
    });
    let memory_history = sparks.map_or_else(String::new, |s| {
        sparkline(s.memory.iter().map(|v| v.map(|b| b as f64)), 1.0)
    });
    let mut cells = Vec::new();
    if model.all {
        cells.push(Cell::from(safe(&row.config.to_string_lossy())));
    }
    cells.extend([
        // A marker as well as reverse video, so the selection also shows
        // where attributes do not (a captured screen, a dumb terminal).
        Cell::from(format!(
            "{}{}",
            if selected { "> " } else { "  " },
            safe(&info.name)
        )),
        Cell::from(info.status.name()).style(status_style(info.status)),
        Cell::from(health(info.status, info.health_failures)),
        Cell::from(info.pid.map(|p| p.to_string()).unwrap_or_default()),
        Cell::from(info.uptime_secs.map(human_duration).unwrap_or_default()),
        Cell::from(info.restarts.to_string()),
        Cell::from(info.cpu_percent.map(human_percent).unwrap_or_default()),
        Cell::from(info.memory_bytes.map(human_bytes).unwrap_or_default()),
        Cell::from(cpu_history).style(Style::default().fg(Color::Cyan)),
        Cell::from(memory_history).style(Style::default().fg(Color::Magenta)),
    ]);
    let table_row = TableRow::new(cells);
    if selected {
        table_row.style(Style::default().add_modifier(Modifier::REVERSED))
    } else {
        table_row
    }
}

/// The newest samples as bars scaled to the largest of them (at least
/// `floor`, so an idle service shows low bars, not full ones); a blank
/// where the service did not run.
pub fn sparkline(
    values: impl DoubleEndedIterator<Item = Option<f64>> + ExactSizeIterator,
    floor: f64,
) -> String {
    let skip = values.len().saturating_sub(SPARK_WIDTH);
    let values: Vec<Option<f64>> = values.skip(skip).collect();
    let top = values.iter().flatten().fold(floor, |a, &b| a.max(b));
    values
        .iter()
        .map(|value| match value {
            None => ' ',
            Some(v) => {
                let level = ((v / top) * (BARS.len() - 1) as f64).round() as usize;
                BARS[level.min(BARS.len() - 1)]
            }
        })
        .collect()
}

fn health(status: ServiceStatus, failures: Option<u32>) -> String {
    match (status, failures) {
        (ServiceStatus::Healthy, _) => "healthy".into(),
        (ServiceStatus::Unhealthy, _) => "unhealthy".into(),
        (_, None) => String::new(),
        (_, Some(0)) => "ok".into(),
        (_, Some(n)) => format!("{n} fails"),
    }
}

fn status_style(status: ServiceStatus) -> Style {
    let color = match status {
        _ if crate::style::went_wrong(status) => Color::Red,
        ServiceStatus::Running | ServiceStatus::Healthy => Color::Green,
        ServiceStatus::Starting | ServiceStatus::Stopping | ServiceStatus::Unhealthy => {
            Color::Yellow
        }
        _ => Color::DarkGray,
    };
    Style::default().fg(color)
}

fn last_lines(lines: &VecDeque<String>, count: usize) -> Vec<Line<'static>> {
    let skip = lines.len().saturating_sub(count);
    lines
        .iter()
        .skip(skip)
        .map(|l| Line::from(l.clone()))
        .collect()
}

/// One frame as plain text, `width` columns wide and as tall as the
/// services need: what `top --once` prints. A ratatui buffer holds at most
/// `u16::MAX` cells, so the table is drawn a page of rows at a time (the
/// columns depend on the width only, so pages line up).
pub fn plain_frame(model: &Model, width: u16) -> String {
    let width = width.max(1);
    let visible = model.visible();
    let selected = model.selected_index(&visible);
    let page = usize::from(u16::MAX / width).saturating_sub(1).max(1);
    let mut text = plain_lines(width, 1, |frame| {
        frame.render_widget(Paragraph::new(title_line(model)), frame.area())
    });
    let mut start = 0;
    loop {
        let rows = &visible[start..(start + page).min(visible.len())];
        let height = rows.len() as u16 + 1;
        let lines = plain_lines(width, height, |frame| {
            let area = frame.area();
            draw_rows(
                frame,
                area,
                model,
                rows,
                selected.map(|s| s.wrapping_sub(start)),
            )
        });
        // Every page after the first drops its copy of the header.
        let skip = if start == 0 { 0 } else { 1 };
        for line in lines.lines().skip(skip) {
            text.push_str(line);
            text.push('\n');
        }
        start += page;
        if start >= visible.len() {
            break;
        }
    }
    text.push_str(&plain_lines(width, 1, |frame| {
        frame.render_widget(Paragraph::new(footer_line(model)), frame.area())
    }));
    text
}

/// What `draw` puts in a `width` x `height` buffer, as lines of text
/// without trailing blanks.
fn plain_lines(width: u16, height: u16, draw: impl FnOnce(&mut Frame<'_>)) -> String {
    let mut terminal =
        Terminal::new(TestBackend::new(width, height)).expect("an in-memory terminal");
    terminal.draw(draw).expect("drawing in memory cannot fail");
    let buffer = terminal.backend().buffer();
    let mut text = String::new();
    for y in 0..buffer.area.height {
        let mut line = String::new();
        for x in 0..buffer.area.width {
            line.push_str(buffer[(x, y)].symbol());
        }
        text.push_str(line.trim_end());
        text.push('\n');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use kepler_protocol::{ServiceInfo, TopConfig, TopFrame};

    #[test]
    fn sparklines_scale_to_their_largest_sample() {
        let values = [Some(0.0), Some(50.0), None, Some(100.0)];
        assert_eq!(sparkline(values.into_iter(), 100.0), "▁▅ █");
        // Idle stays low rather than filling the scale.
        assert_eq!(sparkline([Some(0.1)].into_iter(), 100.0), "▁");
    }

    fn service(name: &str) -> ServiceInfo {
        ServiceInfo {
            name: name.into(),
            status: ServiceStatus::Running,
            pid: Some(42),
            uptime_secs: Some(61),
            restarts: 2,
            health_failures: None,
            reason: None,
            cpu_percent: Some(12.5),
            memory_bytes: Some(3 << 20),
            cpu_seconds: Some(1.0),
            service: name.into(),
            replica: None,
        }
    }

    #[test]
    fn a_plain_frame_lists_every_service_without_escape_codes() {
        let mut model = Model::new("/srv/kepler.yaml".into(), false);
        model.apply(TopFrame {
            sampled: true,
            configs: vec![TopConfig {
                path: "/srv/kepler.yaml".into(),
                services: (0..30).map(|i| service(&format!("svc{i}"))).collect(),
                history: Vec::new(),
            }],
        });
        let text = plain_frame(&model, 120);
        assert!(!text.contains('\u{1b}'), "{text}");
        for i in 0..30 {
            let line = text
                .lines()
                .find(|l| l.contains(&format!(" svc{i} ")))
                .unwrap_or_else(|| panic!("svc{i} in {text}"));
            assert!(line.contains("12.5%") && line.contains("3.0M"), "{line}");
        }
    }

    #[test]
    fn a_plain_frame_longer_than_one_buffer_lists_every_service_once() {
        let mut model = Model::new("/srv/kepler.yaml".into(), false);
        model.apply(TopFrame {
            sampled: false,
            configs: vec![TopConfig {
                path: "/srv/kepler.yaml".into(),
                services: (0..1200).map(|i| service(&format!("s{i:04}"))).collect(),
                history: Vec::new(),
            }],
        });
        // 140 columns: 467 rows fit one buffer of u16::MAX cells.
        let text = plain_frame(&model, 140);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 1200 + 3, "title, header, rows, footer");
        assert!(
            lines[0].starts_with("kepler top  1200 services"),
            "{}",
            lines[0]
        );
        assert!(lines[1].contains("NAME") && lines[1].contains("MEM HISTORY"));
        for (i, line) in lines[2..1202].iter().enumerate() {
            let marker = if i == 0 { "> " } else { "  " };
            assert!(
                line.starts_with(&format!("{marker}s{i:04} ")),
                "row {i}: {line}"
            );
            assert!(line.contains("12.5%"), "{line}");
        }
        assert!(lines[1202].contains("q quit"), "{}", lines[1202]);
    }

    #[test]
    fn escape_sequences_from_services_are_shown_not_sent() {
        assert_eq!(safe("a\u{1b}]0;x\u{7}\tb"), "a\\x1b]0;x\\x07 b");
    }
}
