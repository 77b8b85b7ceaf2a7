//! One shutdown signal observed by every task of a node.

use tokio::sync::watch;

/// The sending side: `true` asks every [`Shutdown`] to stop. Dropping it does the same.
pub(crate) type Trigger = watch::Sender<bool>;

/// A task's view of the node's shutdown signal; clone one per task.
#[derive(Debug, Clone)]
pub(crate) struct Shutdown(watch::Receiver<bool>);

pub(crate) fn channel() -> (Trigger, Shutdown) {
    let (trigger, receiver) = watch::channel(false);
    (trigger, Shutdown(receiver))
}

impl Shutdown {
    /// Resolves once shutdown is requested (or the trigger is gone). Safe to use in `select!` loops:
    /// it re-checks the current value each time it is polled afresh.
    pub async fn wait(&mut self) {
        // An error means the trigger was dropped, i.e. the owning `Node` is gone: stop as well.
        let _ = self.0.wait_for(|stop| *stop).await;
    }

    /// Whether shutdown has been requested.
    pub fn is_requested(&self) -> bool {
        *self.0.borrow() || self.0.has_changed().is_err()
    }
}
