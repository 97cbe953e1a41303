//! One concern around every store operation, written once: [`Layer`] and [`Layered`].
//!
//! `Layered`'s impls of the ability traits are written by the `abilities!` list in the crate
//! root, from the same method list as the traits, so a layer sees every operation, including
//! ones added later, without naming any. Metrics (`tessera-server`), change notifications
//! ([`crate::events::Notify`]) and test probes are layers.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::events::StoreEvent;
use crate::{Store, StoreResult};

/// A store operation in flight, as the ability traits return it.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = StoreResult<T>> + Send + 'a>>;

/// Something done around every operation of a store, whatever its ability.
///
/// Both hooks return `impl Future`, so a layer adds no allocation of its own to an operation.
pub trait Layer: Send + Sync + 'static {
    /// Runs `call`, the operation named `operation` (the method's name, e.g. `rotate_refresh`),
    /// and returns its result. The default runs it unchanged.
    fn around<'a, T: Send + 'a>(
        &'a self,
        operation: &'static str,
        call: StoreFuture<'a, T>,
    ) -> impl Future<Output = StoreResult<T>> + Send + 'a {
        let _ = operation;
        call
    }

    /// Told, after an operation succeeded, of the change it made that cached state may depend
    /// on (see [`StoreEvent`]; which operation yields which event is written beside the
    /// operation, in the crate root). The default does nothing.
    fn changed(&self, event: StoreEvent) -> impl Future<Output = ()> + Send + '_ {
        drop(event);
        std::future::ready(())
    }
}

/// A store seen through a [`Layer`]: every operation of `inner` runs through
/// [`Layer::around`], and every change it reports goes to [`Layer::changed`]. Answers are
/// `inner`'s unless the layer changes them.
pub struct Layered<L> {
    inner: Arc<dyn Store>,
    layer: L,
}

impl<L> std::fmt::Debug for Layered<L> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Layered").finish_non_exhaustive()
    }
}

impl<L: Layer> Layered<L> {
    /// `inner` seen through `layer`.
    pub fn new(inner: Arc<dyn Store>, layer: L) -> Layered<L> {
        Layered { inner, layer }
    }

    /// The layer.
    pub fn layer(&self) -> &L {
        &self.layer
    }

    /// The store underneath.
    pub fn inner(&self) -> &dyn Store {
        self.inner.as_ref()
    }
}
