//! `kepler stats [SERVICE...] [--since D]`: usage over a window, read from
//! the config's history on a blocking thread (the file may be large).

use kepler_protocol::{ConfigRef, ConfigStats, ErrorKind, Response};

use super::config_access::loaded_config;
use super::RequestContext;
use crate::config_actor::{ActorError, ConfigHandle};
use crate::metrics::history::{Layout, HISTORY_FILE};
use crate::metrics::summary;

pub async fn handle(
    ctx: &RequestContext,
    config: ConfigRef,
    services: Vec<String>,
    since_ms: Option<u64>,
) -> Result<Response, ActorError> {
    let Some(handle) = loaded_config(ctx, &config).await? else {
        return Ok(Response::NotLoaded { path: config.path });
    };
    let snapshot = handle.config();
    let names: Vec<String> = snapshot.services.keys().cloned().collect();
    // The history has a column per service; instances are summed in it.
    if let Some((instance, service)) =
        services
            .iter()
            .find_map(|name| match snapshot.instance_of(name) {
                Some((service, Some(_))) => Some((name, service)),
                _ => None,
            })
    {
        return Err(ActorError::new(
            ErrorKind::NotFound,
            format!(
                "the usage history is kept per service: `{instance}` is an instance of \
                 `{service}`, whose figures add up all its instances; ask for `{service}`"
            ),
        ));
    }
    let wanted = indexes(&handle, &names, &services)?;
    let settings = snapshot.kepler.metrics;
    let now_ms = crate::events::now_us() / 1000;
    let retention_ms = settings.retention.0.as_millis() as u64;
    // Rows older than the retention may still be in the ring (nothing was
    // written since): they are not reported.
    let window = since_ms.map_or(retention_ms, |since| since.min(retention_ms));
    let since_ms = now_ms.saturating_sub(window);
    let layout = Layout::of(names.iter().map(String::as_str), &settings);
    let store = handle.store().clone();
    let read_names = names.clone();
    let read_wanted = wanted.clone();
    let services = tokio::task::spawn_blocking(move || {
        let empty = || summary::summarize_nothing(&read_names, &read_wanted);
        let Some(layout) = layout else {
            return Ok(empty());
        };
        match store.open_read(HISTORY_FILE) {
            Ok(Some(file)) => {
                summary::summarize(&file, layout, &read_names, &read_wanted, since_ms)
            }
            Ok(None) => Ok(empty()),
            Err(e) => Err(std::io::Error::from(e)),
        }
    })
    .await
    .map_err(|e| {
        ActorError::new(
            ErrorKind::Failed,
            format!("reading the history failed: {e}"),
        )
    })?
    .map_err(|e| {
        ActorError::new(
            ErrorKind::Failed,
            format!(
                "cannot read the usage history of {}: {e}",
                handle.path().display()
            ),
        )
    })?;
    Ok(Response::Stats(ConfigStats {
        path: handle.path().to_path_buf(),
        interval_ms: if settings.enabled() {
            settings.interval.0.as_millis() as u64
        } else {
            0
        },
        retention_ms,
        since_ms,
        services,
    }))
}

/// Positions of `asked` among `names` (all when empty); an unknown name is
/// an error that lists the config's services.
pub fn indexes(
    handle: &ConfigHandle,
    names: &[String],
    asked: &[String],
) -> Result<Vec<usize>, ActorError> {
    if asked.is_empty() {
        return Ok((0..names.len()).collect());
    }
    asked
        .iter()
        .map(|name| {
            names.iter().position(|n| n == name).ok_or_else(|| {
                ActorError::new(
                    ErrorKind::NotFound,
                    format!(
                        "no service named `{name}` in {}; its services are: {}",
                        handle.path().display(),
                        names.join(", ")
                    ),
                )
            })
        })
        .collect()
}
