//! `kepler logs`: stored output merged in time order, paged through
//! server-side cursors, or followed live (pushed, never polled).

use futures::FutureExt;
use std::time::Duration;

use kepler_protocol::{ConfigRef, ErrorKind, Event, LogFilter, LogLine, LogRange, Response};
use tokio::sync::watch;

use super::config_access::loaded_config;
use super::RequestContext;
use crate::config::values::{instance_name, MAX_REPLICAS};
use crate::config::BakedConfig;
use crate::config_actor::{ActorError, ConfigHandle};
use crate::logs::{self, FilterError, FollowEvent, LineFilter, LogCursorId, LogStore, PageLimit};

/// Lines per page of a paged read (a page also stops at
/// [`logs::cursor::PAGE_TEXT_BYTES`]).
const PAGE: usize = 50_000;
/// A follow's backlog goes in events of at most this many lines and bytes of
/// text: smaller than a cursor page, since a follow's client may stop reading
/// while an event is prepared, queued and in the writer.
const BACKLOG_EVENT_LINES: usize = 10_000;
const BACKLOG_EVENT_BYTES: usize = 1024 * 1024;
/// Live lines gathered into one event of a follow, at most (and at most
/// [`LIVE_EVENT_BYTES`] of text): whatever has arrived since the last event.
const LIVE_EVENT_LINES: usize = 1_000;
const LIVE_EVENT_BYTES: usize = 256 * 1024;
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
    let replica = config.replica_of(&line.service);
    line.into_wire(show_time, replica)
}

/// Marks a page's origins as its config says: time shown, replica.
fn mark_origins(batch: &mut kepler_protocol::LogBatch, config: &BakedConfig) {
    batch.mark_show_time(|service| config.log_config(service).timestamp);
    batch.mark_replicas(|service| config.replica_of(service));
}

/// The log names `services` stand for (all when empty). A service with
/// `replicas:` stands for every instance it has, and every instance whose
/// logs remain after a scale-down (and its own name, for logs from before
/// it had replicas); an instance (`web.2`) stands for itself, running or
/// not, as long as it is running or its logs remain. Unknown names are an
/// error listing the config's services.
async fn log_names(
    handle: &ConfigHandle,
    services: Vec<String>,
) -> Result<Vec<String>, ActorError> {
    if services.is_empty() {
        return Ok(services);
    }
    let config = handle.config();
    let running: Vec<String> = handle.ps().await?.into_iter().map(|s| s.name).collect();
    let stored: Vec<String> = if config.services.values().any(|s| s.replicas.is_some()) {
        let store = handle.logs().clone();
        tokio::task::spawn_blocking(move || logs::log_files(store.dir()))
            .await
            .map_err(failed)?
            .map_err(failed)?
            .into_iter()
            .map(|(name, _)| name)
            .collect()
    } else {
        Vec::new()
    };
    let instance_of = |name: &str| {
        config
            .instance_of(name)
            .map(|(service, _)| service.to_owned())
    };
    let mut names = Vec::new();
    let mut unknown = Vec::new();
    for name in services {
        match config.services.get(&name) {
            Some(service) if service.replicas.is_some() => {
                let mut instances: Vec<&String> = running
                    .iter()
                    .chain(&stored)
                    .filter(|n| *n != &name && instance_of(n).as_deref() == Some(name.as_str()))
                    .collect();
                instances.sort();
                instances.dedup();
                names.extend(instances.into_iter().cloned());
                names.push(name);
            }
            Some(_) => names.push(name),
            None if running.contains(&name) => names.push(name),
            None if instance_of(&name).is_some() && stored.contains(&name) => names.push(name),
            None => unknown.push(name),
        }
    }
    if unknown.is_empty() {
        return Ok(names);
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
            config
                .services
                .keys()
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        ),
    ))
}

/// A search's filter compiled, or why its pattern was refused.
fn line_filter(filter: &LogFilter) -> Result<LineFilter, ActorError> {
    LineFilter::compile(filter).map_err(|e| {
        let kind = match e {
            FilterError::TooLong(_) => ErrorKind::LimitReached,
            FilterError::Pattern(_) => ErrorKind::Failed,
        };
        ActorError::new(kind, e.to_string())
    })
}

pub async fn handle(
    ctx: &RequestContext,
    config: ConfigRef,
    services: Vec<String>,
    range: LogRange,
    include_hooks: bool,
    follow: bool,
    filter: LogFilter,
) -> Result<Response, ActorError> {
    let filter = line_filter(&filter)?;
    let Some(handle) = loaded_config(ctx, &config).await? else {
        return Ok(Response::NotLoaded { path: config.path });
    };
    let services = log_names(&handle, services).await?;
    let store = handle.logs().clone();
    if follow {
        let services = with_future_instances(&handle.config(), services);
        return follow_logs(ctx, &handle, services, range, include_hooks, filter).await;
    }
    // A short tail is answered at once (the common `--tail 100` needs no
    // cursor); anything that could outgrow a message goes through a cursor,
    // page by page, like a whole log.
    let page = match range {
        LogRange::Tail(n) if n <= DIRECT_LINES => {
            let reader = store.clone();
            tokio::task::spawn_blocking(move || {
                logs::tail_matching(reader.dir(), &services, n, include_hooks, &filter)
            })
            .await
            .map_err(failed)?
            .map_err(failed)?
        }
        LogRange::Tail(n) => {
            let wanted = services.clone();
            let reader = store.clone();
            let search = filter.clone();
            let start = tokio::task::spawn_blocking(move || {
                logs::tail_start_matching(reader.dir(), &wanted, n, include_hooks, &search)
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
                .open_search(&services, include_hooks, &filter, after, Some(n));
            return next_page(&handle, id).await;
        }
        LogRange::Head(n) => {
            let id = store
                .cursors()
                .open_search(&services, include_hooks, &filter, None, Some(n));
            return next_page(&handle, id).await;
        }
        LogRange::All => {
            let id = store
                .cursors()
                .open_search(&services, include_hooks, &filter, None, None);
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
    mark_origins(&mut page.lines, &config);
    Ok(Response::LogPage {
        lines: page.lines,
        cursor: page.more.then_some(id.0),
    })
}

/// A follow of a replicated service also follows the instances a later
/// `kepler scale` adds: every name it could give one.
fn with_future_instances(config: &BakedConfig, mut names: Vec<String>) -> Vec<String> {
    let replicated: Vec<String> = names
        .iter()
        .filter(|n| {
            config
                .services
                .get(*n)
                .is_some_and(|s| s.replicas.is_some())
        })
        .cloned()
        .collect();
    let mut known: std::collections::HashSet<String> = names.iter().cloned().collect();
    for service in replicated {
        for replica in 1..=MAX_REPLICAS {
            let name = instance_name(&service, replica);
            if known.insert(name.clone()) {
                names.push(name);
            }
        }
    }
    names
}

/// A follow of a search: the stored lines it keeps, then the live ones.
/// With `--since` the backlog is every stored line since then; with
/// `--until` the follow ends once that time has passed (and a second for
/// lines stamped before it still on their way).
async fn follow_logs(
    ctx: &RequestContext,
    handle: &ConfigHandle,
    services: Vec<String>,
    range: LogRange,
    include_hooks: bool,
    filter: LineFilter,
) -> Result<Response, ActorError> {
    let store: &LogStore = handle.logs();
    let config = handle.config();
    let backlog_lines = match range {
        LogRange::Tail(n) => n,
        _ if filter.since.is_some() => usize::MAX,
        LogRange::All | LogRange::Head(_) => FOLLOW_BACKLOG,
    };
    let (mut backlog, mut follower) = store
        .follow_matching(&services, backlog_lines, include_hooks, &filter)
        .await
        .map_err(failed)?;
    let window_ends = window_end(&filter);
    tokio::pin!(window_ends);
    let mut closing = ctx.daemon.closing_connections();
    // The stored lines, a page per event, each read when the last one left.
    let page = PageLimit {
        lines: BACKLOG_EVENT_LINES,
        text_bytes: BACKLOG_EVENT_BYTES,
    };
    loop {
        let (next, rest) = tokio::task::spawn_blocking(move || {
            let next = backlog.next_page(page);
            (next, backlog)
        })
        .await
        .map_err(failed)?;
        backlog = rest;
        match next.map_err(failed)? {
            Some(mut batch) => {
                mark_origins(&mut batch, &config);
                if !emit(ctx, &mut closing, Event::Logs(batch.to_lines())).await {
                    return Ok(Response::Done);
                }
            }
            None => break,
        }
    }
    drop(backlog);
    loop {
        let first = tokio::select! {
            event = follower.next() => event,
            _ = crate::daemon::raised(&mut closing) => return Ok(Response::Done),
            () = &mut window_ends => return Ok(Response::Done),
        };
        // What has arrived meanwhile goes in the same event.
        let mut lines = Vec::new();
        let mut text = 0;
        let mut gap = None;
        // The store is gone (the config was unloaded).
        let mut ended = false;
        let mut event = first;
        loop {
            match event {
                Some(FollowEvent::Line(line)) => {
                    if filter.keeps(line.timestamp_us, &line.bytes) {
                        text += line.bytes.len();
                        lines.push(wire_line(line, &config));
                    }
                }
                Some(FollowEvent::Missed(n)) => {
                    gap = Some(n);
                    break;
                }
                None => {
                    ended = true;
                    break;
                }
            }
            if lines.len() >= LIVE_EVENT_LINES || text >= LIVE_EVENT_BYTES {
                break;
            }
            match follower.next().now_or_never() {
                Some(next) => event = next,
                None => break,
            }
        }
        if !lines.is_empty() && !emit(ctx, &mut closing, Event::Logs(lines)).await {
            return Ok(Response::Done);
        }
        if let Some(n) = gap {
            let message = format!(
                "({n} lines were written while this client was not reading; those still stored are in `kepler logs`)"
            );
            if !emit(ctx, &mut closing, Event::Progress { message }).await {
                return Ok(Response::Done);
            }
        }
        if ended {
            return Ok(Response::Done);
        }
    }
}

/// Resolves a second after a search's `--until` (never without one): lines
/// stamped up to it may still be on their way when the clock reaches it.
async fn window_end(filter: &LineFilter) {
    let Some(until) = filter.until else {
        return std::future::pending().await;
    };
    let left = until.saturating_sub(crate::events::now_us());
    tokio::time::sleep(Duration::from_micros(left) + Duration::from_secs(1)).await;
}

/// Pushes an event, waiting for room in the connection's outbox; false when
/// the client is gone or the daemon closes connections. A client that stops
/// reading holds its follow here, while its follower drops what it cannot
/// keep (told as a gap once the client reads again).
async fn emit(ctx: &RequestContext, closing: &mut watch::Receiver<bool>, event: Event) -> bool {
    tokio::select! {
        sent = ctx.emit(event) => sent,
        _ = crate::daemon::raised(closing) => false,
    }
}
