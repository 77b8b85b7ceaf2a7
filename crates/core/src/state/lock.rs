//! The state lock: one writer at a time, naming its holder.
//!
//! A lock names its holder (user, pid, host, operation, since when) so that the error a second
//! `apply` gets tells a person exactly whom to ask, or whether the holder is plainly gone.
//!
//! How a dead holder's lock is freed depends on the store. A local file is locked by the operating
//! system (an advisory `flock`), which the kernel drops the instant its holder dies: no lease, no wait.
//! A shared store (S3) has no such lock, so its lock carries a lease the holder renews in the
//! background ([`keep_renewed`]); a lock whose lease ran out belonged to a process that died (or hung
//! far longer than any step), and may be taken over with a warning. `force-unlock` removes a leased
//! lock unconditionally, for the case where a person knows better than the lease.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::error::{StateError, StateErrorKind, format_duration};
use super::time::Timestamp;

/// Who holds a state lock, as written in the lock file (or object).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockInfo {
    /// Random ID of this acquisition; a holder recognises its own lock by it.
    pub id: String,
    /// The user who runs the holder (`uid N` when the environment names no user).
    pub owner: String,
    /// The holder's process ID.
    pub pid: u32,
    /// The holder's host name.
    pub host: String,
    /// What the holder is doing (`apply`, `destroy`, ...).
    pub operation: String,
    /// When the lock was taken.
    pub created_at: Timestamp,
    /// After this time the lock counts as abandoned and may be taken over; `None` for a lock the
    /// operating system frees when its holder dies (a local file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_expires_at: Option<Timestamp>,
}

impl LockInfo {
    /// A lock record for this process, with a lease of `lease` from now.
    pub fn for_this_process(operation: &str, lease: Duration) -> Self {
        let mut info = Self::without_lease(operation);
        info.lease_expires_at = Some(info.created_at.plus(lease));
        info
    }

    /// A lock record for this process without a lease (the operating system frees the lock).
    pub fn without_lease(operation: &str) -> Self {
        LockInfo {
            id: format!("{:032x}", rand::random::<u128>()),
            owner: current_user(),
            pid: std::process::id(),
            host: host_name(),
            operation: operation.to_string(),
            created_at: Timestamp::now(),
            lease_expires_at: None,
        }
    }

    /// Whether the lease has run out at `now` (never, for a lock without a lease).
    pub fn is_expired_at(&self, now: Timestamp) -> bool {
        self.lease_expires_at.is_some_and(|t| t <= now)
    }
}

impl fmt::Display for LockInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The pid and host come first: they are what a person needs to find the holder, and they are
        // always known, unlike the user (a service or container often has no USER).
        write!(f, "pid {} on host {}", self.pid, self.host)?;
        if !self.owner.is_empty() && self.owner != "unknown" {
            write!(f, " (user {})", self.owner)?;
        }
        write!(f, ", running `{}` since {}", self.operation, self.created_at)?;
        if let Some(until) = self.lease_expires_at {
            write!(f, ", lease until {until}")?;
        }
        Ok(())
    }
}

/// How to take the lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockOptions {
    /// How long to wait for a held lock; zero (the default) fails at once, naming the holder.
    pub timeout: Duration,
    /// How long a leased lock (S3, memory) stays valid without renewal. The holder renews it every
    /// third of this. A local file's lock has no lease.
    pub lease: Duration,
    /// How often a waiting process looks again.
    pub poll: Duration,
}

impl Default for LockOptions {
    fn default() -> Self {
        LockOptions {
            timeout: Duration::ZERO,
            lease: Duration::from_secs(120),
            poll: Duration::from_millis(250),
        }
    }
}

/// A held state lock. Dropping it without [`StateLock::release`] releases it on a best-effort basis.
#[async_trait]
pub trait StateLock: Send + Sync {
    /// The lock as recorded (for messages).
    fn info(&self) -> &LockInfo;

    /// The abandoned lock this one replaced, if its lease had run out (callers should tell the user).
    fn took_over(&self) -> Option<&LockInfo> {
        None
    }

    /// The lease this lock must be renewed within, or `None` when it needs no renewal (the operating
    /// system holds it for as long as the process lives).
    fn lease(&self) -> Option<Duration> {
        None
    }

    /// Extends the lease to `lease` from now (for a lock without a lease: checks it is still ours).
    ///
    /// # Errors
    /// [`StateErrorKind::LockLost`] when the lock was removed or taken over meanwhile: the caller must
    /// stop writing state.
    async fn renew(&mut self) -> Result<(), StateError>;

    /// Releases the lock (a lock that someone else has taken over is left alone).
    async fn release(self: Box<Self>) -> Result<(), StateError>;
}

/// The outcome of one attempt to create a lock.
pub enum Attempt<G> {
    /// The lock is ours now; `G` is what keeps it (an open file, an object's ETag).
    Acquired(G),
    /// Someone holds it.
    Held(LockInfo),
    /// Something holds it that we cannot read (possibly being written this instant).
    Unreadable,
}

/// A place a lock can be created in: a lock file, an S3 object, a slot of the in-memory backend.
/// [`acquire`] drives it: waiting, taking over expired leases, naming the holder.
#[async_trait]
pub trait LockSlot: Send + Sync {
    /// What keeps an acquired lock.
    type Guard: Send;
    /// Where the state lives, for errors.
    fn location(&self) -> String;
    /// Whether locks here carry a lease (no: the operating system frees them).
    fn leased(&self) -> bool;
    /// Creates the lock as `info` if nobody holds it.
    async fn try_create(&self, info: &LockInfo) -> Result<Attempt<Self::Guard>, StateError>;
    /// Replaces `expired` with `ours` if `expired` is still the lock, in one conditional step (so two
    /// runs taking over at once cannot both win); `None` if the lock changed meanwhile. Only called
    /// when [`LockSlot::leased`].
    async fn take_over(&self, expired: &LockInfo, ours: &LockInfo)
    -> Result<Option<Self::Guard>, StateError>;
}

/// How often, and how long, an unreadable lock is looked at again before giving up: a lock is
/// unreadable only between its creation and the first write, which takes far less than this.
const UNREADABLE_RETRY: Duration = Duration::from_millis(50);
const UNREADABLE_ATTEMPTS: u32 = 20;
/// Bounds the take-over loop when other processes keep replacing an expired lock.
const TAKE_OVER_ATTEMPTS: u32 = 8;

/// What [`acquire`] got: our record, what keeps the lock, and the expired lock it replaced, if any.
pub struct Acquired<G> {
    /// Our lock record, as stored.
    pub info: LockInfo,
    /// What keeps the lock.
    pub guard: G,
    /// The abandoned lock that was taken over.
    pub took_over: Option<LockInfo>,
}

/// Takes the lock in `slot`, waiting as `options` says.
///
/// # Errors
/// [`StateErrorKind::Locked`] at once (zero timeout) or [`StateErrorKind::LockTimeout`] after the
/// timeout, naming the holder; [`StateErrorKind::LockUnreadable`]; the slot's own errors.
pub async fn acquire<S: LockSlot>(
    slot: &S,
    operation: &str,
    options: &LockOptions,
) -> Result<Acquired<S::Guard>, StateError> {
    let start = tokio::time::Instant::now();
    let (mut unreadable, mut take_overs, mut announced) = (0, 0, false);
    loop {
        let info = if slot.leased() {
            LockInfo::for_this_process(operation, options.lease)
        } else {
            LockInfo::without_lease(operation)
        };
        let holder = match slot.try_create(&info).await? {
            Attempt::Acquired(guard) => return Ok(Acquired { info, guard, took_over: None }),
            Attempt::Unreadable => {
                unreadable += 1;
                if unreadable >= UNREADABLE_ATTEMPTS {
                    return Err(StateError::new(slot.location(), StateErrorKind::LockUnreadable));
                }
                tokio::time::sleep(UNREADABLE_RETRY).await;
                continue;
            }
            Attempt::Held(holder) => holder,
        };
        if slot.leased() && holder.is_expired_at(Timestamp::now()) && take_overs < TAKE_OVER_ATTEMPTS {
            take_overs += 1;
            if let Some(guard) = slot.take_over(&holder, &info).await? {
                tracing::warn!(
                    state = %slot.location(),
                    "took over an abandoned state lock (its lease ran out): {holder}"
                );
                return Ok(Acquired { info, guard, took_over: Some(holder) });
            }
            continue;
        }
        let waited = start.elapsed();
        if options.timeout.is_zero() {
            return Err(StateError::new(slot.location(), StateErrorKind::Locked(Box::new(holder))));
        }
        if waited >= options.timeout {
            return Err(StateError::new(
                slot.location(),
                StateErrorKind::LockTimeout { holder: Box::new(holder), waited },
            ));
        }
        // Said once where a person sees it (a wait may last minutes), then only in the debug log.
        if !announced {
            announced = true;
            tracing::warn!(
                state = %slot.location(),
                "waiting up to {} for the state lock held by {holder}",
                format_duration(options.timeout - waited)
            );
        } else {
            tracing::debug!(state = %slot.location(), "still waiting for the state lock held by {holder}");
        }
        tokio::time::sleep(options.poll.min(options.timeout - waited)).await;
    }
}

/// A lock whose lease is renewed by a background task every third of the lease, for as long as it is
/// held: while a refresh runs, while a confirmation prompt waits, while a step waits on a provider.
/// A lock without a lease is returned as it is.
///
/// Renewal failures are kept: the next [`StateLock::renew`] (the executor calls it before it starts
/// and between steps) reports a lost lock, so nothing more is written.
pub fn keep_renewed(lock: Box<dyn StateLock>) -> Box<dyn StateLock> {
    let Some(lease) = lock.lease() else { return lock };
    let info = lock.info().clone();
    let took_over = lock.took_over().cloned();
    let shared = Arc::new(tokio::sync::Mutex::new(Some(lock)));
    let lost: Arc<std::sync::Mutex<Option<StateError>>> = Arc::default();
    let period = (lease / 3).max(Duration::from_millis(50));
    let task = {
        let (shared, lost) = (shared.clone(), lost.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let mut guard = shared.lock().await;
                let Some(lock) = guard.as_mut() else { return };
                if let Err(e) = lock.renew().await {
                    let gone = matches!(e.kind(), StateErrorKind::LockLost(_));
                    tracing::warn!("renewing the state lock: {e}");
                    if gone {
                        *lost.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                        return;
                    }
                }
            }
        })
    };
    Box::new(RenewedLock { shared, info, took_over, lease, lost, task })
}

/// A lock kept alive by [`keep_renewed`].
struct RenewedLock {
    shared: Arc<tokio::sync::Mutex<Option<Box<dyn StateLock>>>>,
    info: LockInfo,
    took_over: Option<LockInfo>,
    lease: Duration,
    lost: Arc<std::sync::Mutex<Option<StateError>>>,
    task: tokio::task::JoinHandle<()>,
}

#[async_trait]
impl StateLock for RenewedLock {
    fn info(&self) -> &LockInfo {
        &self.info
    }

    fn took_over(&self) -> Option<&LockInfo> {
        self.took_over.as_ref()
    }

    fn lease(&self) -> Option<Duration> {
        Some(self.lease)
    }

    async fn renew(&mut self) -> Result<(), StateError> {
        if let Some(e) = self.lost.lock().unwrap_or_else(|p| p.into_inner()).take() {
            return Err(e);
        }
        let mut guard = self.shared.lock().await;
        let lock = guard.as_mut().ok_or_else(|| StateError::new("", StateErrorKind::LockLost(None)))?;
        lock.renew().await?;
        self.info = lock.info().clone();
        Ok(())
    }

    async fn release(self: Box<Self>) -> Result<(), StateError> {
        // Taken before the task is stopped: a renewal in flight finishes first, so the lock released
        // is the version the store holds (aborting mid-renewal would leave us a stale ETag).
        let lock = self.shared.lock().await.take();
        self.task.abort();
        match lock {
            Some(lock) => lock.release().await,
            None => Ok(()),
        }
    }
}

impl Drop for RenewedLock {
    fn drop(&mut self) {
        // The inner lock is released by its own Drop once the aborted task lets go of it.
        self.task.abort();
    }
}

/// The user named by the environment, else the numeric user ID (`uid 1000`), else empty: a lock taken
/// under a service manager or in a container often runs without `USER`, and "unknown" helped no one.
fn current_user() -> String {
    ["USER", "LOGNAME", "USERNAME"]
        .into_iter()
        .find_map(|v| std::env::var(v).ok().filter(|s| !s.is_empty()))
        .or_else(uid)
        .unwrap_or_default()
}

#[cfg(unix)]
fn uid() -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    // The owner of /proc/self is this process's user; no libc call (and no unsafe) needed.
    std::fs::metadata("/proc/self").ok().map(|m| format!("uid {}", m.uid()))
}

#[cfg(not(unix))]
fn uid() -> Option<String> {
    None
}

fn host_name() -> String {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .into_iter()
        .find_map(|p| std::fs::read_to_string(p).ok().map(|s| s.trim().to_string()).filter(|s| !s.is_empty()))
        .or_else(|| std::env::var("HOSTNAME").ok().filter(|s| !s.is_empty()))
        .unwrap_or_else(|| "unknown".to_string())
}
