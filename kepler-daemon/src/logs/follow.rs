//! Following: pumps publish each stored batch on the config's broadcast, and
//! a [`Follower`] turns the batches into the lines its client asked for.
//!
//! No polling and no re-reading of files: a follower is woken by the
//! broadcast. Joining the stored tail with live lines: the follower subscribes
//! first, then the tail is read. Lines are published only after they are
//! written, so a line published before the subscription is on disk and
//! covered by the tail. A line published after it may be on disk too: the
//! follower skips live lines whose timestamp is among the tail's (timestamps
//! are unique within a config), and, when the tail was full, lines older than
//! its oldest line (they were written before the tail was read and fall
//! outside the window the client asked for; they stay on disk).
//!
//! Every published batch carries the sequence number of its first line (per
//! config, counting only lines published while someone listens). A follower
//! that falls behind the broadcast's capacity does not slow writers down: it
//! loses the oldest batches and learns exactly how many lines it missed from
//! the next batch's sequence number.

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};

use tokio::sync::broadcast;

use super::{lock, LogLine, Origin};

/// Batches kept for slow followers before they start missing lines.
const CAPACITY: usize = 1024;

/// Lines stored together, as published.
#[derive(Debug)]
pub struct LogBatch {
    pub first_seq: u64,
    pub lines: Vec<LogLine>,
}

pub(crate) struct Publisher {
    tx: broadcast::Sender<Arc<LogBatch>>,
    /// Sequence number of the next published line; the lock also orders
    /// sends, so batches arrive in sequence order.
    next_seq: Mutex<u64>,
}

impl Publisher {
    pub(crate) fn new() -> Self {
        Publisher {
            tx: broadcast::channel(CAPACITY).0,
            next_seq: Mutex::new(0),
        }
    }

    pub(crate) fn has_followers(&self) -> bool {
        self.tx.receiver_count() > 0
    }

    pub(crate) fn publish(&self, lines: Vec<LogLine>) {
        let mut next_seq = lock(&self.next_seq);
        let count = lines.len() as u64;
        let batch = Arc::new(LogBatch {
            first_seq: *next_seq,
            lines,
        });
        *next_seq += count;
        // No receiver left is fine: nobody is following.
        let _ = self.tx.send(batch);
    }

    pub(crate) fn subscribe(&self, services: &[String], include_hooks: bool) -> Follower {
        let next_seq = lock(&self.next_seq);
        Follower {
            rx: self.tx.subscribe(),
            services: services.to_vec(),
            include_hooks,
            expected_seq: *next_seq,
            already_read: HashSet::new(),
            skip_before: 0,
            queue: VecDeque::new(),
        }
    }
}

/// What a follower receives next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FollowEvent {
    Line(LogLine),
    /// The follower fell behind and this many lines (of all services) were
    /// published without reaching it.
    Missed(u64),
}

/// Live lines of some services of one config.
pub struct Follower {
    rx: broadcast::Receiver<Arc<LogBatch>>,
    /// Empty: every service.
    services: Vec<String>,
    include_hooks: bool,
    expected_seq: u64,
    /// Timestamps of the tail read at subscription, to skip duplicates.
    already_read: HashSet<u64>,
    /// Live lines stamped before this are older than a full tail's window.
    skip_before: u64,
    queue: VecDeque<LogLine>,
}

impl Follower {
    /// Makes the follower continue after `lines`, the tail of `requested`
    /// lines read after subscribing.
    pub(crate) fn continue_after(&mut self, lines: &[LogLine], requested: usize) {
        self.already_read
            .extend(lines.iter().map(|line| line.timestamp_us));
        if lines.len() >= requested {
            self.skip_before = lines.iter().map(|l| l.timestamp_us).min().unwrap_or(0);
        }
    }

    fn wants(&self, line: &LogLine) -> bool {
        (self.include_hooks || line.origin == Origin::Service)
            && (self.services.is_empty() || self.services.contains(&line.service))
            && line.timestamp_us >= self.skip_before
            && !self.already_read.contains(&line.timestamp_us)
    }

    /// The next line or gap report; `None` when the store is gone.
    pub async fn next(&mut self) -> Option<FollowEvent> {
        loop {
            if let Some(line) = self.queue.pop_front() {
                return Some(FollowEvent::Line(line));
            }
            let batch = match self.rx.recv().await {
                Ok(batch) => batch,
                // The next batch tells how many lines were lost.
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return None,
            };
            let missed = batch.first_seq.saturating_sub(self.expected_seq);
            self.expected_seq = batch.first_seq + batch.lines.len() as u64;
            for line in &batch.lines {
                if self.wants(line) {
                    self.queue.push_back(line.clone());
                }
            }
            if missed > 0 {
                return Some(FollowEvent::Missed(missed));
            }
        }
    }
}
