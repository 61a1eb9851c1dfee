//! Envelopes: every request carries an id, and everything the daemon sends back
//! (the final response and any events pushed before it) carries the same id, so
//! several requests can share one connection without waiting on each other.

use serde::{Deserialize, Serialize};

use crate::{Event, Request, Response};

pub type RequestId = u64;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClientMessage {
    pub id: RequestId,
    pub request: Request,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ServerMessage {
    /// The final answer to request `id`; nothing more is sent for it.
    Response { id: RequestId, response: Response },
    /// Something pushed while request `id` is still running (progress, a log line).
    Event { id: RequestId, event: Event },
}
