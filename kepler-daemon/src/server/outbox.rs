//! A connection's outgoing frames, queued for its one writer task and
//! bounded by bytes as well as by count.
//!
//! A client that stops reading (a terminal paused with Ctrl+S under
//! `logs --follow`) must not make the daemon hold its answers without
//! bound: each queued frame holds permits worth its size from the
//! connection's budget until the writer has sent it, so a handler pushing
//! more waits for the client instead of growing the queue. A frame larger
//! than the whole budget waits until the queue is empty and then goes alone.

use std::sync::Arc;

use kepler_protocol::{Event, Response, ServerMessage};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

/// Bytes of frames queued for one connection before handlers wait.
pub const OUTBOX_BYTES: usize = 4 * 1024 * 1024;
/// Frames queued for one connection before handlers wait.
const OUTBOX_DEPTH: usize = 1024;

/// The sending side, one clone per request handler.
#[derive(Clone)]
pub struct Outbox {
    tx: mpsc::Sender<Queued>,
    budget: Arc<Semaphore>,
}

/// A frame waiting for the writer, holding its share of the budget.
pub struct Queued {
    pub message: ServerMessage,
    _permit: OwnedSemaphorePermit,
}

/// The connection was closed: nothing more can be sent.
#[derive(Debug)]
pub struct Closed;

impl Outbox {
    pub fn new() -> (Outbox, mpsc::Receiver<Queued>) {
        let (tx, rx) = mpsc::channel(OUTBOX_DEPTH);
        let budget = Arc::new(Semaphore::new(OUTBOX_BYTES));
        (Outbox { tx, budget }, rx)
    }

    /// Queues `message`, waiting for room.
    pub async fn send(&self, message: ServerMessage) -> Result<(), Closed> {
        let weight = weight(&message).clamp(1, OUTBOX_BYTES) as u32;
        let permit = self
            .budget
            .clone()
            .acquire_many_owned(weight)
            .await
            .map_err(|_| Closed)?;
        self.tx
            .send(Queued {
                message,
                _permit: permit,
            })
            .await
            .map_err(|_| Closed)
    }
}

/// About what a message takes in memory and on the wire.
fn weight(message: &ServerMessage) -> usize {
    const SMALL: usize = 256;
    let line = |line: &kepler_protocol::LogLine| line.bytes.len() + line.service.len() + 64;
    match message {
        ServerMessage::Event { event, .. } => match event {
            Event::Logs(lines) => lines.iter().map(line).sum::<usize>() + SMALL,
            Event::Log(one) => line(one),
            Event::Progress { message } => message.len() + SMALL,
            Event::Top(frame) => frame_weight(frame) + SMALL,
            _ => SMALL,
        },
        ServerMessage::Response { response, .. } => match response {
            Response::LogPage { lines, .. } => lines.text_len() + 16 * lines.len() + SMALL,
            Response::Stats(stats) => stats.services.len() * 128 + SMALL,
            Response::Inspect(inspection) => inspection_weight(inspection) + SMALL,
            _ => SMALL,
        },
    }
}

fn frame_weight(frame: &kepler_protocol::TopFrame) -> usize {
    frame
        .configs
        .iter()
        .map(|config| {
            let history: usize = config
                .history
                .iter()
                .map(|h| 64 + 24 * h.cpu_percent.len())
                .sum();
            config.services.len() * 160 + history
        })
        .sum()
}

fn inspection_weight(inspection: &kepler_protocol::ConfigInspection) -> usize {
    inspection
        .services
        .iter()
        .map(|service| {
            let environment: usize = service
                .environment
                .iter()
                .flatten()
                .map(|(k, v)| k.len() + v.len() + 16)
                .sum();
            service.config_json.len() + environment + 256
        })
        .sum()
}
