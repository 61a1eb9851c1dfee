//! The first exchange on every connection.
//!
//! The client sends [`Hello`]; the daemon answers [`HelloReply`]. These two types
//! must keep their shape across releases (only append variants to `HelloReply`),
//! because they are what lets a CLI and a daemon of different versions tell each
//! other so instead of failing on an unreadable frame.

use serde::{Deserialize, Serialize};

/// Bumped whenever a message type in this crate changes shape.
pub const PROTOCOL_VERSION: u32 = 9;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    pub protocol: u32,
    /// Release version of the sender, for messages a person reads.
    pub version: String,
}

impl Hello {
    pub fn current() -> Self {
        Hello {
            protocol: PROTOCOL_VERSION,
            version: env!("CARGO_PKG_VERSION").to_string(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum HelloReply {
    Welcome {
        protocol: u32,
        version: String,
    },
    /// The daemon will not serve this connection; `reason` is for a person.
    Refused {
        reason: String,
    },
}

/// What the daemon answers to a client's hello.
pub fn answer(client: &Hello) -> HelloReply {
    let ours = Hello::current();
    if client.protocol == ours.protocol {
        HelloReply::Welcome {
            protocol: ours.protocol,
            version: ours.version,
        }
    } else {
        HelloReply::Refused {
            reason: version_mismatch(
                &client.version,
                client.protocol,
                &ours.version,
                ours.protocol,
            ),
        }
    }
}

/// Why a connection that arrives while the daemon hands over to a new
/// binary is refused; a client may connect again at once (the new daemon
/// answers the next connection).
pub const UPGRADING_REFUSAL: &str =
    "the daemon is handing over to a new binary (kepler daemon upgrade); connect again";

/// The message both sides print when their protocol versions differ.
pub fn version_mismatch(
    cli: &str,
    cli_protocol: u32,
    daemon: &str,
    daemon_protocol: u32,
) -> String {
    format!(
        "version mismatch: kepler CLI {cli} (protocol {cli_protocol}) cannot talk to kepler-daemon \
         {daemon} (protocol {daemon_protocol}); restart the daemon with the matching binary \
         (`kepler daemon restart`) or use the CLI that shipped with it"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_protocol_is_welcomed() {
        assert!(matches!(
            answer(&Hello::current()),
            HelloReply::Welcome { .. }
        ));
    }

    #[test]
    fn different_protocol_is_refused_naming_both_versions() {
        let old = Hello {
            protocol: PROTOCOL_VERSION + 1,
            version: "9.9.9".into(),
        };
        match answer(&old) {
            HelloReply::Refused { reason } => {
                assert!(reason.contains("version mismatch"), "{reason}");
                assert!(reason.contains("9.9.9"), "{reason}");
                assert!(reason.contains(env!("CARGO_PKG_VERSION")), "{reason}");
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
    }
}
