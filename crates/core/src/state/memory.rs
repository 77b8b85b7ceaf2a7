//! State kept in memory: for embedding without files, and for tests of the executor.

use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;

use super::error::{StateError, StateErrorKind};
use super::lock::{self, Attempt, LockInfo, LockOptions, LockSlot, StateLock};
use super::time::Timestamp;
use super::{State, StateBackend};

/// An in-memory state backend with the same lock semantics as [`super::LocalStateFile`].
///
/// Clones share the same state and lock, as two processes share one file. Tests can keep every
/// version written ([`MemoryState::recording`], [`MemoryState::history`]) and make writes fail
/// ([`MemoryState::fail_writes`]).
#[derive(Debug, Clone, Default)]
pub struct MemoryState {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Debug, Default)]
struct Inner {
    state: State,
    /// Every version written, when recording (off by default: a large apply writes thousands).
    history: Option<Vec<State>>,
    writes: usize,
    lock: Option<LockInfo>,
    failing_writes: u32,
}

impl MemoryState {
    /// An empty state.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty state that keeps every version written, for [`MemoryState::history`].
    pub fn recording() -> Self {
        let backend = Self::default();
        backend.inner().history = Some(Vec::new());
        backend
    }

    /// A backend holding `state`.
    pub fn with_state(state: State) -> Self {
        let backend = Self::default();
        backend.inner().state = state;
        backend
    }

    fn inner(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding this lock leaves plain data behind; keep using it.
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The state as last written.
    pub fn current(&self) -> State {
        self.inner().state.clone()
    }

    /// Every state written, oldest first (empty unless made with [`MemoryState::recording`]).
    pub fn history(&self) -> Vec<State> {
        self.inner().history.clone().unwrap_or_default()
    }

    /// How many writes succeeded.
    pub fn writes(&self) -> usize {
        self.inner().writes
    }

    /// Makes the next `n` writes fail.
    pub fn fail_writes(&self, n: u32) {
        self.inner().failing_writes = n;
    }

    /// The lock's holder, if locked.
    pub fn holder(&self) -> Option<LockInfo> {
        self.inner().lock.clone()
    }

    /// Puts `info` in the lock slot as if another process held it.
    pub fn set_holder(&self, info: Option<LockInfo>) {
        self.inner().lock = info;
    }
}

const LOCATION: &str = "(in memory)";

#[async_trait]
impl StateBackend for MemoryState {
    fn location(&self) -> String {
        LOCATION.to_string()
    }

    async fn load(&self) -> Result<State, StateError> {
        Ok(self.current())
    }

    async fn write(&self, state: &State) -> Result<(), StateError> {
        let mut inner = self.inner();
        if inner.failing_writes > 0 {
            inner.failing_writes -= 1;
            return Err(StateError::new(LOCATION, StateErrorKind::Injected));
        }
        inner.state = state.clone();
        inner.writes += 1;
        if let Some(history) = &mut inner.history {
            history.push(state.clone());
        }
        Ok(())
    }

    async fn lock(&self, operation: &str, options: &LockOptions) -> Result<Box<dyn StateLock>, StateError> {
        let acquired = lock::acquire(self, operation, options).await?;
        Ok(Box::new(MemoryLock {
            backend: self.clone(),
            lease: options.lease,
            info: acquired.info,
            took_over: acquired.took_over,
            released: false,
        }))
    }

    async fn force_unlock(&self) -> Result<Option<LockInfo>, StateError> {
        Ok(self.inner().lock.take())
    }
}

#[async_trait]
impl LockSlot for MemoryState {
    type Guard = ();

    fn location(&self) -> String {
        LOCATION.to_string()
    }

    fn leased(&self) -> bool {
        true
    }

    async fn try_create(&self, info: &LockInfo) -> Result<Attempt<()>, StateError> {
        let mut inner = self.inner();
        match &inner.lock {
            Some(holder) => Ok(Attempt::Held(holder.clone())),
            None => {
                inner.lock = Some(info.clone());
                Ok(Attempt::Acquired(()))
            }
        }
    }

    async fn take_over(&self, expired: &LockInfo, ours: &LockInfo) -> Result<Option<()>, StateError> {
        let mut inner = self.inner();
        if inner.lock.as_ref().is_some_and(|h| h.id == expired.id) {
            inner.lock = Some(ours.clone());
            return Ok(Some(()));
        }
        Ok(None)
    }
}

struct MemoryLock {
    backend: MemoryState,
    lease: std::time::Duration,
    info: LockInfo,
    took_over: Option<LockInfo>,
    released: bool,
}

impl MemoryLock {
    fn release_now(&mut self) {
        if self.released {
            return;
        }
        self.released = true;
        let mut inner = self.backend.inner();
        if inner.lock.as_ref().is_some_and(|h| h.id == self.info.id) {
            inner.lock = None;
        }
    }
}

#[async_trait]
impl StateLock for MemoryLock {
    fn info(&self) -> &LockInfo {
        &self.info
    }

    fn took_over(&self) -> Option<&LockInfo> {
        self.took_over.as_ref()
    }

    fn lease(&self) -> Option<std::time::Duration> {
        Some(self.lease)
    }

    async fn renew(&mut self) -> Result<(), StateError> {
        let mut inner = self.backend.inner();
        match &mut inner.lock {
            Some(h) if h.id == self.info.id => {
                h.lease_expires_at = Some(Timestamp::now().plus(self.lease));
                self.info = h.clone();
                Ok(())
            }
            other => Err(StateError::new(LOCATION, StateErrorKind::LockLost(other.clone().map(Box::new)))),
        }
    }

    async fn release(mut self: Box<Self>) -> Result<(), StateError> {
        self.release_now();
        Ok(())
    }
}

impl Drop for MemoryLock {
    fn drop(&mut self) {
        self.release_now();
    }
}
