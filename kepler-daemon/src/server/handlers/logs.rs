//! `kepler logs`: stored output merged in time order, paged through
//! server-side cursors, or followed live (pushed, never polled).

use kepler_protocol::{ConfigRef, ErrorKind, Event, LogLine, LogRange, Response};

use super::config_access::loaded_config;
use super::RequestContext;
use crate::config::BakedConfig;
use crate::config_actor::{ActorError, ConfigHandle};
use crate::logs::{self, FollowEvent, LogCursorId, LogStore};

/// Lines per page of a paged read (a page also stops at
/// [`logs::cursor::PAGE_TEXT_BYTES`]) and per event of a follow's backlog.
const PAGE: usize = 50_000;
/// The longest `--tail` answered in one message: even lines of the longest
/// record (64 KiB) fit in a frame.
const DIRECT_LINES: usize = 200;
/// Lines a follow without `--tail` starts with.
const FOLLOW_BACKLOG: usize = 10_000;

fn failed(e: impl std::fmt::Display) -> ActorError {
    ActorError::new(ErrorKind::Failed, e.to_string())
}

/// A stored line as sent, shown with its time when its service's
/// `logs.timestamp` asks for it.
fn wire_line(line: logs::LogLine, config: &BakedConfig) -> LogLine {
    let show_time = config.log_config(&line.service).timestamp;
    line.into_wire(show_time)
}

/// Unknown service names are an error listing the config's services.
async fn check_services(handle: &ConfigHandle, services: &[String]) -> Result<(), ActorError> {
    if services.is_empty() {
        return Ok(());
    }
    let known: Vec<String> = handle.ps().await?.into_iter().map(|s| s.name).collect();
    let unknown: Vec<&String> = services.iter().filter(|s| !known.contains(s)).collect();
    if unknown.is_empty() {
        return Ok(());
    }
    Err(ActorError::new(
        ErrorKind::NotFound,
        format!(
            "no service named {} in {}; its services are: {}",
            unknown
                .iter()
                .map(|n| format!("`{n}`"))
                .collect::<Vec<_>>()
                .join(", "),
            handle.path().display(),
            known.join(", ")
        ),
    ))
}

pub async fn handle(
    ctx: &RequestContext,
    config: ConfigRef,
    services: Vec<String>,
    range: LogRange,
    include_hooks: bool,
    follow: bool,
) -> Result<Response, ActorError> {
    let Some(handle) = loaded_config(ctx, &config).await? else {
        return Ok(Response::NotLoaded { path: config.path });
    };
    check_services(&handle, &services).await?;
    let store = handle.logs().clone();
    if follow {
        return follow_logs(ctx, &handle, services, range, include_hooks).await;
    }
    let dir = store.dir().to_path_buf();
    // A short tail is answered at once (the common `--tail 100` needs no
    // cursor); anything that could outgrow a message goes through a cursor,
    // page by page, like a whole log.
    let page = match range {
        LogRange::Tail(n) if n <= DIRECT_LINES => {
            tokio::task::spawn_blocking(move || logs::tail(&dir, &services, n, include_hooks))
                .await
                .map_err(failed)?
                .map_err(failed)?
        }
        LogRange::Tail(n) => {
            let wanted = services.clone();
            let start = tokio::task::spawn_blocking(move || {
                logs::tail_start(&dir, &wanted, n, include_hooks)
            })
            .await
            .map_err(failed)?
            .map_err(failed)?;
            let Some(start) = start else {
                return Ok(Response::LogPage {
                    lines: Default::default(),
                    cursor: None,
                });
            };
            // Timestamps are unique: the tail is the n lines from `start` on.
            let after = start.checked_sub(1);
            let id = store
                .cursors()
                .open_range(&services, include_hooks, after, Some(n));
            return next_page(&handle, id).await;
        }
        LogRange::Head(n) => {
            let id = store
                .cursors()
                .open_range(&services, include_hooks, None, Some(n));
            return next_page(&handle, id).await;
        }
        LogRange::All => {
            let id = store.cursors().open(&services, include_hooks);
            return next_page(&handle, id).await;
        }
    };
    let config = handle.config();
    Ok(Response::LogPage {
        lines: page
            .into_iter()
            .map(|line| wire_line(line, &config))
            .collect(),
        cursor: None,
    })
}

pub async fn page(
    ctx: &RequestContext,
    config: ConfigRef,
    cursor: u64,
) -> Result<Response, ActorError> {
    let Some(handle) = loaded_config(ctx, &config).await? else {
        return Ok(Response::NotLoaded { path: config.path });
    };
    next_page(&handle, LogCursorId(cursor)).await
}

async fn next_page(handle: &ConfigHandle, id: LogCursorId) -> Result<Response, ActorError> {
    let store = handle.logs();
    let reader = store.clone();
    let mut page = tokio::task::spawn_blocking(move || reader.cursors().next_page(id, PAGE))
        .await
        .map_err(failed)?
        .map_err(|e| ActorError::new(ErrorKind::NotFound, e.to_string()))?;
    if !page.more {
        store.cursors().close(id);
    }
    let config = handle.config();
    page.lines
        .mark_show_time(|service| config.log_config(service).timestamp);
    Ok(Response::LogPage {
        lines: page.lines,
        cursor: page.more.then_some(id.0),
    })
}

async fn follow_logs(
    ctx: &RequestContext,
    handle: &ConfigHandle,
    services: Vec<String>,
    range: LogRange,
    include_hooks: bool,
) -> Result<Response, ActorError> {
    let store: &LogStore = handle.logs();
    let config = handle.config();
    let backlog = match range {
        LogRange::Tail(n) => n,
        LogRange::All | LogRange::Head(_) => FOLLOW_BACKLOG,
    };
    let (lines, mut follower) = store
        .follow(&services, backlog, include_hooks)
        .await
        .map_err(failed)?;
    // The backlog goes in events of at most a page's lines and text.
    let mut chunk: Vec<LogLine> = Vec::new();
    let mut text = 0;
    for line in lines {
        if chunk.len() >= PAGE || text >= logs::cursor::PAGE_TEXT_BYTES {
            if !ctx.emit(Event::Logs(std::mem::take(&mut chunk))).await {
                return Ok(Response::Done);
            }
            text = 0;
        }
        text += line.bytes.len();
        chunk.push(wire_line(line, &config));
    }
    if !chunk.is_empty() && !ctx.emit(Event::Logs(chunk)).await {
        return Ok(Response::Done);
    }
    let mut closing = ctx.daemon.closing_connections();
    loop {
        let event = tokio::select! {
            event = follower.next() => event,
            _ = crate::daemon::raised(&mut closing) => return Ok(Response::Done),
        };
        let event = match event {
            Some(FollowEvent::Line(line)) => Event::Logs(vec![wire_line(line, &config)]),
            Some(FollowEvent::Missed(n)) => Event::Progress {
                message: format!("({n} lines were written too fast to follow; they are stored)"),
            },
            None => return Ok(Response::Done),
        };
        if !ctx.emit(event).await {
            return Ok(Response::Done);
        }
    }
}
