//! What one user may hold of the daemon: connections and requests in flight.
//!
//! Every bound is per user (by the kernel's peer uid), so a member with many
//! connections cannot queue unbounded work, and root has a pool of its own
//! that no member can use up: however many connections members hold, root's
//! `kepler daemon status` is accepted at once. A refusal says which bound was
//! reached and by whom.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The bounds, with their defaults in [`ConnectionLimits::default`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Connections one non-root user may have open at once.
    pub per_member: usize,
    /// Connections all non-root users together may have open at once.
    pub members_total: usize,
    /// Connections root may have open at once; members never take these.
    pub root: usize,
    /// Requests running at once on one connection; more wait unread.
    pub in_flight_per_connection: usize,
    /// Requests running at once over all of one non-root user's connections;
    /// more are answered with an error at once.
    pub in_flight_per_member: usize,
    /// A connection with no request running for this long is closed.
    pub idle_timeout: Duration,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            per_member: 64,
            members_total: 1024,
            root: 64,
            in_flight_per_connection: 64,
            in_flight_per_member: 128,
            idle_timeout: Duration::from_secs(5 * 60),
        }
    }
}

/// Open connections and in-flight budgets, by uid. A user's entry lives
/// only while it has a connection open.
pub struct Budgets {
    limits: ConnectionLimits,
    open: Mutex<Open>,
}

#[derive(Default)]
struct Open {
    users: HashMap<u32, UserBudget>,
    members_total: usize,
}

struct UserBudget {
    connections: usize,
    /// Shared by all of this user's connections; `None` for root.
    in_flight: Option<Arc<Semaphore>>,
}

/// One admitted connection; dropping it gives its slot back.
pub struct ConnectionTicket {
    budgets: Arc<Budgets>,
    uid: u32,
    in_flight: Option<Arc<Semaphore>>,
}

impl Budgets {
    pub fn new(limits: ConnectionLimits) -> Arc<Self> {
        Arc::new(Budgets {
            limits,
            open: Mutex::new(Open::default()),
        })
    }

    /// A slot for a new connection of `uid`, or why there is none.
    pub fn admit(self: &Arc<Self>, uid: u32) -> Result<ConnectionTicket, String> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let limits = &self.limits;
        let held = open.users.get(&uid).map_or(0, |user| user.connections);
        if uid == 0 {
            if held >= limits.root {
                return Err(format!(
                    "too many connections: root already has {held} open, the most the daemon \
                     serves for root at once; end some `kepler` commands and try again"
                ));
            }
        } else {
            if held >= limits.per_member {
                return Err(format!(
                    "too many connections: uid {uid} already has {held} open, the most one user \
                     may have; end some `kepler` commands (e.g. `logs --follow`) and try again"
                ));
            }
            if open.members_total >= limits.members_total {
                return Err(format!(
                    "too many connections: users other than root have {} open, the most the \
                     daemon serves at once; try again later",
                    open.members_total
                ));
            }
            open.members_total += 1;
        }
        let per_member = limits.in_flight_per_member;
        let user = open.users.entry(uid).or_insert_with(|| UserBudget {
            connections: 0,
            in_flight: (uid != 0).then(|| Arc::new(Semaphore::new(per_member))),
        });
        user.connections += 1;
        Ok(ConnectionTicket {
            budgets: self.clone(),
            uid,
            in_flight: user.in_flight.clone(),
        })
    }
}

impl ConnectionTicket {
    /// Room for one more request of this user: a permit to hold while it
    /// runs (none is needed for root), or why there is no room.
    pub fn start_request(&self) -> Result<Option<OwnedSemaphorePermit>, String> {
        let Some(in_flight) = &self.in_flight else {
            return Ok(None);
        };
        in_flight
            .clone()
            .try_acquire_owned()
            .map(Some)
            .map_err(|_| {
                format!(
                    "too many requests: uid {} already has {} running, the most one user may have \
                 at once; end some `kepler` commands (e.g. `logs --follow`) and try again",
                    self.uid, self.budgets.limits.in_flight_per_member
                )
            })
    }
}

impl Drop for ConnectionTicket {
    fn drop(&mut self) {
        let mut open = self.budgets.open.lock().unwrap_or_else(|e| e.into_inner());
        if self.uid != 0 {
            open.members_total -= 1;
        }
        if let Some(user) = open.users.get_mut(&self.uid) {
            user.connections -= 1;
            if user.connections == 0 {
                open.users.remove(&self.uid);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> Arc<Budgets> {
        Budgets::new(ConnectionLimits {
            per_member: 2,
            members_total: 3,
            root: 1,
            in_flight_per_member: 2,
            ..ConnectionLimits::default()
        })
    }

    #[test]
    fn a_member_gets_its_own_share_and_no_more() {
        let budgets = small();
        let _a = budgets.admit(1000).unwrap();
        let _b = budgets.admit(1000).unwrap();
        let err = budgets.admit(1000).err().unwrap();
        assert!(err.contains("uid 1000 already has 2 open"), "{err}");
        let _c = budgets.admit(1001).unwrap();
        let err = budgets.admit(1002).err().unwrap();
        assert!(err.contains("users other than root have 3 open"), "{err}");
    }

    #[test]
    fn root_has_slots_members_cannot_take() {
        let budgets = small();
        let _held: Vec<_> = [1000, 1000, 1001]
            .into_iter()
            .map(|uid| budgets.admit(uid).unwrap())
            .collect();
        let root = budgets.admit(0).unwrap();
        assert!(budgets.admit(0).is_err(), "root's own pool is bounded too");
        assert_eq!(root.start_request().unwrap().map(|_| ()), None);
    }

    #[test]
    fn a_closed_connection_gives_its_slot_back_and_the_entry_goes() {
        let budgets = small();
        let a = budgets.admit(1000).unwrap();
        let b = budgets.admit(1000).unwrap();
        drop(a);
        let _c = budgets.admit(1000).unwrap();
        drop(b);
        drop(_c);
        let open = budgets.open.lock().unwrap();
        assert!(open.users.is_empty());
        assert_eq!(open.members_total, 0);
    }

    #[test]
    fn requests_in_flight_are_counted_over_all_of_a_users_connections() {
        let budgets = small();
        let a = budgets.admit(1000).unwrap();
        let b = budgets.admit(1000).unwrap();
        let first = a.start_request().unwrap();
        let _second = b.start_request().unwrap();
        let err = a.start_request().err().unwrap();
        assert!(err.contains("uid 1000 already has 2 running"), "{err}");
        drop(first);
        assert!(b.start_request().is_ok());
    }
}
