//! Draining a service's stdout/stderr pipes into the config's log broadcast.
//!
//! Every pipe is read to its end by its own task, so a chatty service never
//! blocks on a full pipe and never delays another service's output.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use kepler_protocol::LogLine;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::unix::pipe;

use crate::events::ConfigEvents;

/// Longest line kept as one; longer ones are split, never dropped.
const MAX_LINE: usize = 64 * 1024;

pub fn pump(service: Arc<str>, stderr: bool, pipe: pipe::Receiver, events: ConfigEvents) {
    tokio::spawn(async move {
        let mut reader = BufReader::with_capacity(64 * 1024, pipe);
        let mut line = Vec::new();
        loop {
            line.clear();
            match (&mut reader)
                .take(MAX_LINE as u64)
                .read_until(b'\n', &mut line)
                .await
            {
                Ok(0) => break,
                Ok(_) => {
                    if line.last() == Some(&b'\n') {
                        line.pop();
                    }
                    events.publish_log(LogLine {
                        service: service.to_string(),
                        hook: None,
                        stderr,
                        timestamp_us: now_us(),
                        bytes: line.clone(),
                    });
                }
                Err(e) => {
                    tracing::warn!(%service, "cannot read output: {e}");
                    break;
                }
            }
        }
    });
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

use tokio::io::AsyncReadExt;
