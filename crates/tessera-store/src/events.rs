//! Change notifications between instances sharing a store.
//!
//! An instance that keeps anything from the store in memory (today the signing keys; later a
//! verified-token cache) must drop it when another instance changes the store. [`Notifying`]
//! wraps a [`Store`] and publishes a [`StoreEvent`] on an [`EventBus`] after every change such a
//! cache could depend on; every instance subscribed to the same bus receives it as a [`Notice`].
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
use tessera_core::UnixTime;
use tessera_core::keys::KeyRecord;
use tessera_core::opaque::TokenHash;
use tessera_core::session::Touch;
use tokio::sync::broadcast;

use crate::{
    AuditEvent, AuditQuery, Counter, NewSession, RefreshOutcome, Rotation, Session, SessionRecord,
    Store, StoreResult, User,
};

/// Something changed in the store that cached state may depend on.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoreEvent {
    /// A signing key was added (rotation); the others were retired.
    KeysChanged,
    /// One session was revoked.
    SessionRevoked {
        /// Its id.
        session_id: String,
    },
    /// Some or all sessions of a user were revoked.
    UserSessionsRevoked {
        /// The user's id.
        user_id: String,
    },
    /// A user was changed (roles, permissions, disabled, password) or deleted.
    UserChanged {
        /// The user's id.
        user_id: String,
    },
}

impl StoreEvent {
    /// The event as a short text for a bus payload.
    pub fn encode(&self) -> String {
        match self {
            StoreEvent::KeysChanged => "keys".to_owned(),
            StoreEvent::SessionRevoked { session_id } => format!("session:{session_id}"),
            StoreEvent::UserSessionsRevoked { user_id } => format!("sessions-of:{user_id}"),
            StoreEvent::UserChanged { user_id } => format!("user:{user_id}"),
        }
    }

    /// Reads a payload written by [`StoreEvent::encode`]; `None` for anything else.
    pub fn decode(text: &str) -> Option<StoreEvent> {
        if text == "keys" {
            return Some(StoreEvent::KeysChanged);
        }
        let (kind, id) = text.split_once(':')?;
        let id = id.to_owned();
        match kind {
            "session" => Some(StoreEvent::SessionRevoked { session_id: id }),
            "sessions-of" => Some(StoreEvent::UserSessionsRevoked { user_id: id }),
            "user" => Some(StoreEvent::UserChanged { user_id: id }),
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

/// A [`Store`] that publishes a [`StoreEvent`] on its bus after each change that cached state
/// may depend on: key rotation, revocations (including theft detection on refresh), and user
/// updates and deletions. Everything else is passed through unchanged.
#[derive(Clone)]
pub struct Notifying {
    inner: Arc<dyn Store>,
    bus: Arc<dyn EventBus>,
}

impl std::fmt::Debug for Notifying {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notifying").finish_non_exhaustive()
    }
}

impl Notifying {
    /// Wraps `inner`, publishing on `bus`.
    pub fn new(inner: Arc<dyn Store>, bus: Arc<dyn EventBus>) -> Notifying {
        Notifying { inner, bus }
    }

    /// The bus events are published on.
    pub fn bus(&self) -> &Arc<dyn EventBus> {
        &self.bus
    }

    async fn publish(&self, event: StoreEvent) {
        // The change is made and durable; a lost notice is covered by the subscribers' own
        // periodic reload, so it is logged rather than reported as a failure of the change.
        if let Err(error) = self.bus.publish(&event).await {
            tracing::warn!(%error, event = %event.encode(), "could not publish a store event");
        }
    }
}

#[async_trait]
impl Store for Notifying {
    async fn create_user(&self, user: &User) -> StoreResult<()> {
        self.inner.create_user(user).await
    }

    async fn user_by_name(&self, username: &str) -> StoreResult<Option<User>> {
        self.inner.user_by_name(username).await
    }

    async fn user_by_id(&self, id: &str) -> StoreResult<Option<User>> {
        self.inner.user_by_id(id).await
    }

    async fn list_users(&self) -> StoreResult<Vec<User>> {
        self.inner.list_users().await
    }

    async fn count_users(&self) -> StoreResult<u64> {
        self.inner.count_users().await
    }

    async fn update_user(&self, user: &User) -> StoreResult<bool> {
        let changed = self.inner.update_user(user).await?;
        if changed {
            self.publish(StoreEvent::UserChanged {
                user_id: user.id.clone(),
            })
            .await;
        }
        Ok(changed)
    }

    async fn delete_user(&self, id: &str) -> StoreResult<bool> {
        let deleted = self.inner.delete_user(id).await?;
        if deleted {
            self.publish(StoreEvent::UserChanged {
                user_id: id.to_owned(),
            })
            .await;
        }
        Ok(deleted)
    }

    async fn create_session(&self, new: &NewSession) -> StoreResult<()> {
        self.inner.create_session(new).await
    }

    async fn session_by_access_hash(&self, hash: &TokenHash) -> StoreResult<Option<SessionRecord>> {
        self.inner.session_by_access_hash(hash).await
    }

    async fn session_by_id(&self, id: &str) -> StoreResult<Option<SessionRecord>> {
        self.inner.session_by_id(id).await
    }

    async fn touch_session(&self, id: &str, touch: Touch) -> StoreResult<()> {
        self.inner.touch_session(id, touch).await
    }

    async fn revoke_session(&self, id: &str, now: UnixTime) -> StoreResult<bool> {
        let revoked = self.inner.revoke_session(id, now).await?;
        if revoked {
            self.publish(StoreEvent::SessionRevoked {
                session_id: id.to_owned(),
            })
            .await;
        }
        Ok(revoked)
    }

    async fn revoke_user_sessions(
        &self,
        user_id: &str,
        except: Option<&str>,
        now: UnixTime,
    ) -> StoreResult<u64> {
        let count = self
            .inner
            .revoke_user_sessions(user_id, except, now)
            .await?;
        if count > 0 {
            self.publish(StoreEvent::UserSessionsRevoked {
                user_id: user_id.to_owned(),
            })
            .await;
        }
        Ok(count)
    }

    async fn list_sessions(
        &self,
        user_id: Option<&str>,
        now: UnixTime,
    ) -> StoreResult<Vec<Session>> {
        self.inner.list_sessions(user_id, now).await
    }

    async fn session_by_refresh_hash(
        &self,
        hash: &TokenHash,
    ) -> StoreResult<Option<SessionRecord>> {
        self.inner.session_by_refresh_hash(hash).await
    }

    async fn rotate_refresh(&self, rotation: &Rotation) -> StoreResult<RefreshOutcome> {
        let outcome = self.inner.rotate_refresh(rotation).await?;
        if let RefreshOutcome::ReuseDetected { session_id } = &outcome {
            self.publish(StoreEvent::SessionRevoked {
                session_id: session_id.clone(),
            })
            .await;
        }
        Ok(outcome)
    }

    async fn purge_sessions(&self, before: UnixTime) -> StoreResult<u64> {
        self.inner.purge_sessions(before).await
    }

    async fn signing_keys(&self) -> StoreResult<Vec<KeyRecord>> {
        self.inner.signing_keys().await
    }

    async fn add_signing_key(&self, key: &KeyRecord, now: UnixTime) -> StoreResult<()> {
        self.inner.add_signing_key(key, now).await?;
        self.publish(StoreEvent::KeysChanged).await;
        Ok(())
    }

    async fn append_audit(&self, event: &AuditEvent) -> StoreResult<()> {
        self.inner.append_audit(event).await
    }

    async fn audit_events(&self, query: &AuditQuery) -> StoreResult<Vec<AuditEvent>> {
        self.inner.audit_events(query).await
    }

    async fn hit_counter(&self, key: &str, now: UnixTime, window: i64) -> StoreResult<Counter> {
        self.inner.hit_counter(key, now, window).await
    }

    async fn counter(&self, key: &str, now: UnixTime, window: i64) -> StoreResult<Option<Counter>> {
        self.inner.counter(key, now, window).await
    }

    async fn release_counter(&self, key: &str, window_start: UnixTime) -> StoreResult<()> {
        self.inner.release_counter(key, window_start).await
    }

    async fn clear_counter(&self, key: &str) -> StoreResult<()> {
        self.inner.clear_counter(key).await
    }

    async fn ping(&self) -> StoreResult<()> {
        self.inner.ping().await
    }

    fn drops_expired_sessions(&self) -> bool {
        self.inner.drops_expired_sessions()
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
        ] {
            assert_eq!(StoreEvent::decode(&event.encode()), Some(event));
        }
        for junk in ["", "key", "session", "nope:1", "KEYS"] {
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
