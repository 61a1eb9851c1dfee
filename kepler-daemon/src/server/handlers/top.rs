//! `kepler top`: a subscription. The first frame carries recent history for
//! the sparklines; then a frame follows each burst of state changes and each
//! sampling tick of the configs watched, until the client goes away (its
//! connection then cancels this handler).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use kepler_protocol::{ConfigRef, Event, Response, TopConfig, TopFrame};
use tokio::sync::{broadcast, Notify};
use tokio::task::JoinSet;

use super::config_access::{loaded_config, may_act_on};
use super::RequestContext;
use crate::config_actor::{ActorError, ConfigHandle};
use crate::metrics::history::{Layout, HISTORY_FILE};
use crate::metrics::summary;

/// Changes that arrive within this time of the first go in one frame: a
/// start of many services is one redraw, not hundreds.
const COALESCE: Duration = Duration::from_millis(100);
/// The most history samples a first frame carries per service.
const MAX_HISTORY: u32 = 120;

/// What happened since the last frame.
#[derive(Default)]
struct Pending {
    notify: Notify,
    sampled: AtomicBool,
}

pub async fn handle(
    ctx: &RequestContext,
    config: Option<ConfigRef>,
    history: u32,
) -> Result<Response, ActorError> {
    let handles: Vec<ConfigHandle> = match config {
        Some(config) => match loaded_config(ctx, &config).await? {
            Some(handle) => vec![handle],
            None => return Ok(Response::NotLoaded { path: config.path }),
        },
        None => ctx
            .daemon
            .registry()
            .all()
            .into_iter()
            .filter(|h| may_act_on(ctx, h))
            .collect(),
    };
    // Subscribed before the first frame, so nothing between is missed.
    let pending = Arc::new(Pending::default());
    let mut watchers = JoinSet::new();
    for handle in &handles {
        watchers.spawn(watch_config(handle.clone(), pending.clone()));
    }
    let mut first = frame(&handles, false).await;
    for (config, handle) in first.configs.iter_mut().zip(&handles) {
        config.history = recent_history(handle, history.min(MAX_HISTORY)).await;
    }
    if !ctx.emit(Event::Top(first)).await {
        return Ok(Response::Done);
    }
    loop {
        pending.notify.notified().await;
        tokio::time::sleep(COALESCE).await;
        let sampled = pending.sampled.swap(false, Ordering::Relaxed);
        if !ctx.emit(Event::Top(frame(&handles, sampled).await)).await {
            return Ok(Response::Done);
        }
        while watchers.try_join_next().is_some() {}
        if watchers.is_empty() {
            // Every config watched was unloaded.
            return Ok(Response::Done);
        }
    }
}

/// Wakes the handler on each state change and sampling tick of `handle`.
async fn watch_config(handle: ConfigHandle, pending: Arc<Pending>) {
    let mut states = handle.events().states.subscribe();
    let mut ticks = handle.events().ticks.subscribe();
    loop {
        let open = tokio::select! {
            change = states.recv() => !matches!(change, Err(broadcast::error::RecvError::Closed)),
            changed = ticks.changed() => {
                pending.sampled.store(true, Ordering::Relaxed);
                changed.is_ok()
            }
        };
        // A config that went away is one last change: the handler sees it
        // leave the frame.
        pending.notify.notify_one();
        if !open {
            return;
        }
    }
}

/// Every watched config's services now, with the last tick's usage; a
/// config whose actor has gone is left out.
async fn frame(handles: &[ConfigHandle], sampled: bool) -> TopFrame {
    let mut configs = Vec::with_capacity(handles.len());
    for handle in handles {
        let Ok(observation) = handle.observe().await else {
            continue;
        };
        configs.push(TopConfig {
            path: handle.path().to_path_buf(),
            services: observation.services.into_iter().map(|s| s.info).collect(),
            history: Vec::new(),
        });
    }
    TopFrame { sampled, configs }
}

/// The newest `count` samples of each service within the retention.
async fn recent_history(handle: &ConfigHandle, count: u32) -> Vec<kepler_protocol::ServiceHistory> {
    let snapshot = handle.config();
    let settings = snapshot.kepler.metrics;
    let names: Vec<String> = snapshot.services.keys().cloned().collect();
    let Some(layout) = Layout::of(names.iter().map(String::as_str), &settings) else {
        return Vec::new();
    };
    if count == 0 {
        return Vec::new();
    }
    let since_ms =
        (crate::events::now_us() / 1000).saturating_sub(settings.retention.0.as_millis() as u64);
    let store = handle.store().clone();
    tokio::task::spawn_blocking(move || {
        let file = store.open_read(HISTORY_FILE).ok().flatten()?;
        summary::recent(&file, layout, &names, count as u64, since_ms).ok()
    })
    .await
    .ok()
    .flatten()
    .unwrap_or_default()
}
