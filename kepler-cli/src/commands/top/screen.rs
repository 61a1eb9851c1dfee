//! The interactive part of `kepler top`: the terminal, keys, the log pane
//! and confirmed actions.

use std::io;
use std::path::PathBuf;

use anyhow::Result;
use kepler_protocol::{Event, LogRange, Request, Response, ServerMessage, StartMode};
use ratatui::backend::CrosstermBackend;
use ratatui::crossterm::event::{
    self, Event as TermEvent, KeyCode, KeyEvent, KeyEventKind, KeyModifiers,
};
use ratatui::crossterm::{cursor, execute, terminal};
use ratatui::Terminal;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::model::{Action, LogPane, Model, Prompt};
use super::render::{self, safe};
use super::{config_of, next_frame};
use crate::client::{into_result, Client};

/// Lines of history the log pane starts with.
const LOG_TAIL: usize = 200;

/// Raw mode and the alternate screen while alive; the terminal is restored
/// when dropped and by the panic hook.
struct TerminalGuard;

impl TerminalGuard {
    fn enter() -> io::Result<Self> {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            restore();
            previous(info);
        }));
        terminal::enable_raw_mode()?;
        let guard = TerminalGuard;
        execute!(io::stdout(), terminal::EnterAlternateScreen, cursor::Hide)?;
        Ok(guard)
    }
}

impl Drop for TerminalGuard {
    fn drop(&mut self) {
        restore();
    }
}

fn restore() {
    let _ = terminal::disable_raw_mode();
    let _ = execute!(io::stdout(), terminal::LeaveAlternateScreen, cursor::Show);
}

/// What the loop hears besides frames.
enum Note {
    /// A line for the log pane of the given generation.
    Log(u64, String),
    /// The outcome of an action.
    Done(String),
}

pub async fn run(mut client: Client, mut model: Model) -> Result<()> {
    let _guard = TerminalGuard::enter()?;
    let mut terminal = Terminal::new(CrosstermBackend::new(io::stdout()))?;
    terminal.clear()?;
    // crossterm's reads block: they get a thread of their own.
    let (keys_tx, mut keys) = mpsc::unbounded_channel();
    std::thread::spawn(move || {
        while let Ok(event) = event::read() {
            if keys_tx.send(event).is_err() {
                break;
            }
        }
    });
    let (notes_tx, mut notes) = mpsc::channel::<Note>(1024);
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sighup = signal(SignalKind::hangup())?;
    let mut logs = Logs {
        generation: 0,
        task: None,
    };
    // Lets the tests check that a panic restores the terminal (a panic is
    // otherwise never meant to happen).
    let panic_for_test = std::env::var_os("KEPLER_TEST_TOP_PANIC").is_some();
    loop {
        terminal.draw(|frame| render::draw(frame, &model))?;
        if panic_for_test {
            panic!("KEPLER_TEST_TOP_PANIC is set");
        }
        tokio::select! {
            frame = next_frame(&mut client, None) => match frame? {
                Some(frame) => model.apply(frame),
                None => break,
            },
            Some(event) = keys.recv() => {
                if let TermEvent::Key(key) = event {
                    if handle_key(&mut model, key, &mut logs, &notes_tx) == Flow::Quit {
                        break;
                    }
                }
                // A resize needs nothing: the next draw fits the new size.
            }
            Some(note) = notes.recv() => match note {
                Note::Log(generation, line) if generation == logs.generation => {
                    if let Some(pane) = &mut model.logs {
                        pane.push(line);
                    }
                }
                Note::Log(..) => {}
                Note::Done(message) => model.message = Some(message),
            },
            _ = sigterm.recv() => break,
            _ = sighup.recv() => break,
        }
    }
    logs.close();
    Ok(())
}

/// The log pane's follow, on a connection of its own.
struct Logs {
    /// Bumped on each open, so lines of a closed pane are dropped.
    generation: u64,
    task: Option<JoinHandle<()>>,
}

impl Logs {
    fn open(&mut self, config: PathBuf, service: String, notes: mpsc::Sender<Note>) {
        self.close();
        self.generation += 1;
        let generation = self.generation;
        self.task = Some(tokio::spawn(async move {
            let said = |text: String| Note::Log(generation, text);
            let mut client = match Client::connect().await {
                Ok(client) => client,
                Err(e) => {
                    let _ = notes
                        .send(said(format!("cannot follow the logs: {e}")))
                        .await;
                    return;
                }
            };
            let request = Request::Logs {
                config: config_of(&config),
                services: vec![service],
                range: LogRange::Tail(LOG_TAIL),
                include_hooks: true,
                follow: true,
                filter: Default::default(),
            };
            if client.send(request).await.is_err() {
                return;
            }
            while let Ok(message) = client.next_message().await {
                let lines = match message {
                    ServerMessage::Event {
                        event: Event::Logs(lines),
                        ..
                    } => lines,
                    ServerMessage::Event {
                        event: Event::Log(line),
                        ..
                    } => vec![line],
                    ServerMessage::Event {
                        event: Event::Progress { message },
                        ..
                    } => {
                        let _ = notes.send(said(safe(&message))).await;
                        continue;
                    }
                    ServerMessage::Event { .. } => continue,
                    ServerMessage::Response { response, .. } => {
                        if let Response::Error { message, .. } = response {
                            let _ = notes.send(said(safe(&message))).await;
                        }
                        return;
                    }
                };
                for line in lines {
                    let text = safe(&String::from_utf8_lossy(&line.bytes));
                    let text = match (&line.hook, line.stderr) {
                        (Some(hook), _) => format!("[{}] {text}", safe(hook)),
                        (None, true) => format!("! {text}"),
                        (None, false) => text,
                    };
                    if notes.send(said(text)).await.is_err() {
                        return;
                    }
                }
            }
        }));
    }

    fn close(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

#[derive(PartialEq, Eq)]
enum Flow {
    Continue,
    Quit,
}

fn handle_key(
    model: &mut Model,
    key: KeyEvent,
    logs: &mut Logs,
    notes: &mpsc::Sender<Note>,
) -> Flow {
    if key.kind != KeyEventKind::Press {
        return Flow::Continue;
    }
    if key.modifiers.contains(KeyModifiers::CONTROL) && key.code == KeyCode::Char('c') {
        return Flow::Quit;
    }
    match model.prompt.clone() {
        Prompt::Filter => {
            match key.code {
                KeyCode::Char(c) => model.filter.push(c),
                KeyCode::Backspace => {
                    model.filter.pop();
                }
                KeyCode::Enter => model.prompt = Prompt::None,
                KeyCode::Esc => {
                    model.filter.clear();
                    model.prompt = Prompt::None;
                }
                _ => {}
            }
            model.keep_selection_visible();
            return Flow::Continue;
        }
        Prompt::Confirm(action, config, service) => {
            model.prompt = Prompt::None;
            if matches!(key.code, KeyCode::Char('y') | KeyCode::Char('Y')) {
                model.message = Some(format!("{}ing {}...", action.verb(), service));
                spawn_action(action, config, service, notes.clone());
            } else {
                model.message = Some(format!("{} {}: cancelled", action.verb(), service));
            }
            return Flow::Continue;
        }
        Prompt::None => {}
    }
    match key.code {
        KeyCode::Char('q') => return Flow::Quit,
        KeyCode::Esc if model.logs.is_some() => {
            model.logs = None;
            logs.close();
        }
        KeyCode::Up | KeyCode::Char('k') => model.move_selection(-1),
        KeyCode::Down | KeyCode::Char('j') => model.move_selection(1),
        KeyCode::PageUp => model.move_selection(-10),
        KeyCode::PageDown => model.move_selection(10),
        KeyCode::Home => model.move_selection(isize::MIN / 2),
        KeyCode::End => model.move_selection(isize::MAX / 2),
        KeyCode::Char('s') => model.sort = model.sort.next(),
        KeyCode::Char('/') => model.prompt = Prompt::Filter,
        KeyCode::Enter => {
            if let Some((config, service)) = model.selected.clone() {
                model.logs = Some(LogPane {
                    service: service.clone(),
                    lines: Default::default(),
                });
                logs.open(config, service, notes.clone());
            }
        }
        KeyCode::Char('r') | KeyCode::Char('x') => {
            if let Some((config, service)) = model.selected.clone() {
                let action = if key.code == KeyCode::Char('r') {
                    Action::Restart
                } else {
                    Action::Stop
                };
                model.prompt = Prompt::Confirm(action, config, service);
            }
        }
        _ => {}
    }
    Flow::Continue
}

/// Sends a confirmed restart or stop on a connection of its own; the
/// outcome comes back as a note.
fn spawn_action(action: Action, config: PathBuf, service: String, notes: mpsc::Sender<Note>) {
    tokio::spawn(async move {
        let outcome = async {
            let request = match action {
                Action::Restart => Request::Restart {
                    config: config_of(&config),
                    sys_env: crate::config_ref::sys_env()?,
                    services: vec![service.clone()],
                    mode: StartMode::Detached,
                },
                Action::Stop => Request::Stop {
                    config: config_of(&config),
                    services: vec![service.clone()],
                    signal: None,
                    clean: false,
                },
            };
            let mut client = Client::connect().await?;
            into_result(client.request(request).await?)?;
            anyhow::Ok(())
        }
        .await;
        let message = match outcome {
            Ok(()) => format!("{}: {} done", service, action.verb()),
            Err(e) => format!("{}: {} failed: {e}", service, action.verb()),
        };
        let _ = notes.send(Note::Done(message)).await;
    });
}
