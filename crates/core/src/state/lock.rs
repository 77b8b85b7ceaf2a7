//! The state lock: one writer at a time, with a lease so a crashed holder does not block forever.
//!
//! A lock names its holder (user, pid, host, operation, since when) so that the error a second
//! `apply` gets tells a person exactly whom to ask, or whether the holder is plainly gone. The holder
//! renews its lease while it works; a lock whose lease ran out belonged to a process that died (or
//! hung far longer than any step), and may be taken over with a warning. `force-unlock` removes a lock
//! unconditionally, for the case where a person knows better than the lease.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::error::{StateError, StateErrorKind, format_duration};
use super::time::Timestamp;

/// Who holds a state lock, as written in the lock file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockInfo {
    /// Random ID of this acquisition; a holder recognises its own lock by it.
    pub id: String,
    /// The user who runs the holder.
    pub owner: String,
    /// The holder's process ID.
    pub pid: u32,
    /// The holder's host name.
    pub host: String,
    /// What the holder is doing (`apply`, `destroy`, ...).
    pub operation: String,
    /// When the lock was taken.
    pub created_at: Timestamp,
    /// After this time the lock counts as abandoned and may be taken over.
    pub lease_expires_at: Timestamp,
}

impl LockInfo {
    /// A lock record for this process, with a lease of `lease` from now.
    pub fn for_this_process(operation: &str, lease: Duration) -> Self {
        let now = Timestamp::now();
        LockInfo {
            id: format!("{:032x}", rand::random::<u128>()),
            owner: current_user(),
            pid: std::process::id(),
            host: host_name(),
            operation: operation.to_string(),
            created_at: now,
            lease_expires_at: now.plus(lease),
        }
    }

    /// Whether the lease has run out at `now`.
    pub fn is_expired_at(&self, now: Timestamp) -> bool {
        self.lease_expires_at <= now
    }
}

impl fmt::Display for LockInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} (pid {} on {}, running `{}`) since {}, lease until {}",
            self.owner, self.pid, self.host, self.operation, self.created_at, self.lease_expires_at
        )
    }
}

/// How to take the lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockOptions {
    /// How long to wait for a held lock; zero (the default) fails at once, naming the holder.
    pub timeout: Duration,
    /// How long the lock stays valid without renewal. The executor renews it every third of this.
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

    /// Extends the lease to `lease` from now.
    ///
    /// # Errors
    /// [`StateErrorKind::LockLost`] when the lock was removed or taken over meanwhile: the caller must
    /// stop writing state.
    async fn renew(&mut self) -> Result<(), StateError>;

    /// Releases the lock (a lock that someone else has taken over is left alone).
    async fn release(self: Box<Self>) -> Result<(), StateError>;
}

/// The outcome of one attempt to create a lock.
pub(crate) enum Attempt {
    /// The lock is ours now.
    Acquired,
    /// Someone holds it.
    Held(LockInfo),
    /// Something holds it that we cannot read (possibly being written this instant).
    Unreadable,
}

/// A place a lock can be created in: a lock file, or a slot of the in-memory backend.
pub(crate) trait LockSlot {
    /// Where the state lives, for errors.
    fn location(&self) -> String;
    /// Creates the lock as `info` if nobody holds it.
    fn try_create(&self, info: &LockInfo) -> Result<Attempt, StateError>;
    /// Removes `expired` if it is still the lock; `false` if the lock changed meanwhile.
    fn take_over(&self, expired: &LockInfo) -> Result<bool, StateError>;
}

/// How often, and how long, an unreadable lock is looked at again before giving up: a lock file is
/// unreadable only between its creation and the first write, which takes far less than this.
const UNREADABLE_RETRY: Duration = Duration::from_millis(50);
const UNREADABLE_ATTEMPTS: u32 = 20;
/// Bounds the take-over loop when other processes keep replacing an expired lock.
const TAKE_OVER_ATTEMPTS: u32 = 8;

/// Takes the lock in `slot`, waiting as `options` says. Returns our lock record and the expired lock
/// it replaced, if any.
pub(crate) async fn acquire(
    slot: &impl LockSlot,
    operation: &str,
    options: &LockOptions,
) -> Result<(LockInfo, Option<LockInfo>), StateError> {
    let start = tokio::time::Instant::now();
    let mut took_over = None;
    let (mut unreadable, mut take_overs) = (0, 0);
    loop {
        let info = LockInfo::for_this_process(operation, options.lease);
        let holder = match slot.try_create(&info)? {
            Attempt::Acquired => return Ok((info, took_over)),
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
        if holder.is_expired_at(Timestamp::now()) && take_overs < TAKE_OVER_ATTEMPTS {
            take_overs += 1;
            if slot.take_over(&holder)? {
                tracing::warn!(
                    state = %slot.location(),
                    "taking over an abandoned state lock (its lease ran out): {holder}"
                );
                took_over = Some(holder);
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
        tracing::info!(
            state = %slot.location(),
            "waiting for the state lock held by {holder} ({} left)",
            format_duration(options.timeout - waited)
        );
        tokio::time::sleep(options.poll.min(options.timeout - waited)).await;
    }
}

fn current_user() -> String {
    ["USER", "LOGNAME", "USERNAME"]
        .into_iter()
        .find_map(|v| std::env::var(v).ok().filter(|s| !s.is_empty()))
        .unwrap_or_else(|| "unknown".to_string())
}

fn host_name() -> String {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .into_iter()
        .find_map(|p| std::fs::read_to_string(p).ok().map(|s| s.trim().to_string()).filter(|s| !s.is_empty()))
        .or_else(|| std::env::var("HOSTNAME").ok().filter(|s| !s.is_empty()))
        .unwrap_or_else(|| "unknown".to_string())
}
