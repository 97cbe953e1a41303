//! Change notifications between instances sharing a store.
//!
//! An instance that keeps anything from the store in memory (today the signing keys; later a
//! verified-token cache) must drop it when another instance changes the store. The [`Notify`]
//! layer ([`crate::Layered`]) publishes a [`StoreEvent`] on an [`EventBus`] after every change
//! such a cache could depend on; every instance subscribed to the same bus receives it as a
//! [`Notice`].
//!
//! # Delivery
//!
//! Buses deliver at most once and may drop events (a listener's connection breaks, a subscriber
//! falls behind). When that may have happened a subscriber receives [`Notice::Resync`] and must
//! treat everything it holds as stale. Subscribers must also reload on a timer of their own
//! (bounded staleness) because a bus can fail without noticing. Publishing is best effort: a
//! change that was made is never undone because the notice could not be sent.

use std::sync::Arc;

use async_trait::async_trait;
use tessera_core::ids::{SessionId, UserId};
use tokio::sync::broadcast;

use crate::{Layer, StoreResult};

/// Something changed in the store that cached state may depend on.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoreEvent {
    /// A signing key was added (rotation); the others were retired.
    KeysChanged,
    /// One session was revoked.
    SessionRevoked {
        /// Its id.
        session_id: SessionId,
    },
    /// Some or all sessions of a user were revoked.
    UserSessionsRevoked {
        /// The user's id.
        user_id: UserId,
    },
    /// A user was changed (roles, permissions, disabled, password) or deleted.
    UserChanged {
        /// The user's id.
        user_id: UserId,
    },
    /// Entries were appended to the revocation log.
    RevocationsLogged,
}

impl StoreEvent {
    /// The event as a short text for a bus payload.
    pub fn encode(&self) -> String {
        match self {
            StoreEvent::KeysChanged => "keys".to_owned(),
            StoreEvent::SessionRevoked { session_id } => format!("session:{session_id}"),
            StoreEvent::UserSessionsRevoked { user_id } => format!("sessions-of:{user_id}"),
            StoreEvent::UserChanged { user_id } => format!("user:{user_id}"),
            StoreEvent::RevocationsLogged => "revocations".to_owned(),
        }
    }

    /// Reads a payload written by [`StoreEvent::encode`]; `None` for anything else.
    pub fn decode(text: &str) -> Option<StoreEvent> {
        match text {
            "keys" => return Some(StoreEvent::KeysChanged),
            "revocations" => return Some(StoreEvent::RevocationsLogged),
            _ => {}
        }
        let (kind, id) = text.split_once(':')?;
        match kind {
            "session" => Some(StoreEvent::SessionRevoked {
                session_id: id.into(),
            }),
            "sessions-of" => Some(StoreEvent::UserSessionsRevoked { user_id: id.into() }),
            "user" => Some(StoreEvent::UserChanged { user_id: id.into() }),
            _ => None,
        }
    }
}

/// What a subscriber receives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// A change made by this or another instance.
    Event(StoreEvent),
    /// Events may have been lost (the bus reconnected, or this subscriber fell behind): drop
    /// or reload everything cached.
    Resync,
}

/// Carries [`StoreEvent`]s to every instance sharing a store.
#[async_trait]
pub trait EventBus: Send + Sync + 'static {
    /// Sends `event` to every subscriber of every instance, this one included.
    async fn publish(&self, event: &StoreEvent) -> StoreResult<()>;
    /// A new subscription. A subscriber that falls behind gets `RecvError::Lagged`, which it
    /// must treat as [`Notice::Resync`].
    fn subscribe(&self) -> broadcast::Receiver<Notice>;
}

/// Capacity of a bus's in-process fan-out; a subscriber further behind than this resyncs.
const FAN_OUT: usize = 1024;

/// An in-process fan-out: the bus of a single instance, and the local end of the buses that
/// cross instances (they feed what they receive into one).
#[derive(Debug, Clone)]
pub struct LocalBus {
    tx: broadcast::Sender<Notice>,
}

impl Default for LocalBus {
    fn default() -> Self {
        LocalBus::new()
    }
}

impl LocalBus {
    /// A bus with no subscribers yet.
    pub fn new() -> LocalBus {
        let (tx, _) = broadcast::channel(FAN_OUT);
        LocalBus { tx }
    }

    /// Hands `notice` to every local subscriber (none is fine).
    pub fn deliver(&self, notice: Notice) {
        let _ = self.tx.send(notice);
    }
}

#[async_trait]
impl EventBus for LocalBus {
    async fn publish(&self, event: &StoreEvent) -> StoreResult<()> {
        self.deliver(Notice::Event(event.clone()));
        Ok(())
    }

    fn subscribe(&self) -> broadcast::Receiver<Notice> {
        self.tx.subscribe()
    }
}

/// The [`Layer`] that publishes a [`StoreEvent`] on its bus after each change that cached
/// state may depend on: key rotation, revocations (including theft detection on refresh),
/// appends to the revocation log, and user updates and deletions (the event of each operation
/// is written beside it, in the crate root). Wrap a store in it with
/// [`Layered::new`]`(store, Notify::new(bus))`.
#[derive(Clone)]
pub struct Notify {
    bus: Arc<dyn EventBus>,
}

impl std::fmt::Debug for Notify {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notify").finish_non_exhaustive()
    }
}

impl Notify {
    /// Publishes on `bus`.
    pub fn new(bus: Arc<dyn EventBus>) -> Notify {
        Notify { bus }
    }

    /// The bus events are published on.
    pub fn bus(&self) -> &Arc<dyn EventBus> {
        &self.bus
    }
}

impl Layer for Notify {
    async fn changed(&self, event: StoreEvent) {
        // The change is made and durable; a lost notice is covered by the subscribers' own
        // periodic reload, so it is logged rather than reported as a failure of the change.
        if let Err(error) = self.bus.publish(&event).await {
            tracing::warn!(%error, event = %event.encode(), "could not publish a store event");
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip_through_their_text_form() {
        for event in [
            StoreEvent::KeysChanged,
            StoreEvent::SessionRevoked {
                session_id: "abc_-1".into(),
            },
            StoreEvent::UserSessionsRevoked {
                user_id: "u:1".into(),
            },
            StoreEvent::UserChanged {
                user_id: "u2".into(),
            },
            StoreEvent::RevocationsLogged,
        ] {
            assert_eq!(StoreEvent::decode(&event.encode()), Some(event));
        }
        for junk in [
            "",
            "key",
            "session",
            "nope:1",
            "KEYS",
            "revocation",
            "revocations:1",
        ] {
            assert_eq!(StoreEvent::decode(junk), None, "{junk:?}");
        }
    }

    #[tokio::test]
    async fn a_local_bus_delivers_to_every_subscriber() {
        let bus = LocalBus::new();
        let mut a = bus.subscribe();
        let mut b = bus.subscribe();
        bus.publish(&StoreEvent::KeysChanged).await.unwrap();
        assert_eq!(
            a.recv().await.unwrap(),
            Notice::Event(StoreEvent::KeysChanged)
        );
        assert_eq!(
            b.recv().await.unwrap(),
            Notice::Event(StoreEvent::KeysChanged)
        );
    }
}
