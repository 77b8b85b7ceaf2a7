//! Errors of state storage and locking.

use std::fmt;
use std::time::Duration;

use super::lock::LockInfo;

/// A failure to load, save or lock the state.
///
/// Its text names where the state lives and what went wrong; the underlying I/O or JSON error is its
/// [`std::error::Error::source`], so `{:#}` (anyhow) shows the whole chain without repeating itself.
#[derive(Debug)]
pub struct StateError {
    location: String,
    kind: StateErrorKind,
}

/// What went wrong with the state.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StateErrorKind {
    /// Reading, writing or renaming a file failed.
    #[error("cannot {op}")]
    Io {
        /// What was being done (`read the state`, `replace the state file`, ...).
        op: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid state JSON.
    #[error("not a valid peerfleet state file")]
    Corrupt(#[source] serde_json::Error),
    /// The file was written by a newer peerfleet.
    #[error("state format {found} is newer than this peerfleet understands ({supported}); upgrade peerfleet")]
    Version {
        /// The file's format version.
        found: u32,
        /// The newest format this build reads.
        supported: u32,
    },
    /// The state file is readable by other users and could not be made private.
    #[error("the state file is readable by other users (mode {mode:o}) and cannot be changed to 0600")]
    Exposed {
        /// Its permission bits.
        mode: u32,
        /// Why it could not be changed.
        #[source]
        source: std::io::Error,
    },
    /// Another process holds the lock; the text names it. (Lock records are boxed so that every
    /// `Result` of the module stays small.)
    #[error("locked by {0}")]
    Locked(Box<LockInfo>),
    /// The lock stayed held for the whole `lock_timeout`.
    #[error("still locked by {holder} after waiting {}", format_duration(*waited))]
    LockTimeout {
        /// Who holds it.
        holder: Box<LockInfo>,
        /// How long we waited.
        waited: Duration,
    },
    /// The lock file exists but cannot be read as a lock.
    #[error(
        "the lock file exists but is not readable as a peerfleet lock; check what it is and remove it by hand if it is stale"
    )]
    LockUnreadable,
    /// Our lock was removed or taken over while we held it.
    #[error("the lock was {}", match .0 { Some(h) => format!("taken over by {h}"), None => "removed (force-unlock?)".to_string() })]
    LockLost(Option<Box<LockInfo>>),
    /// `force-unlock` found a file where the lock would be that is not a peerfleet lock.
    #[error("{path} is not a peerfleet lock file; it was left as it is (remove it by hand if it is stale)")]
    NotALock {
        /// The file.
        path: String,
    },
    /// The serial is `u64::MAX`: no later version can be numbered (only a hand-edited file says so).
    #[error("the state's serial is {}, the largest there is: no later version can be saved", u64::MAX)]
    SerialExhausted,
    /// The state belongs to another network than the spec declares.
    #[error(
        "this state is network {recorded}'s, but the spec declares `{spec}`; a plan from it would \
         treat that network's machines as this one's. Point --state at `{spec}`'s own state file"
    )]
    OtherNetwork {
        /// The network the state records.
        recorded: String,
        /// The network the spec declares.
        spec: String,
    },
    /// A local lock held by a live process: there is nothing to force, since the operating system
    /// frees it the instant that process exits.
    #[error(
        "locked by {0}, which is still running; a local lock is freed the moment its holder exits, so \
         stop that process (or wait for it) instead of forcing the lock"
    )]
    HeldByRunningProcess(Box<LockInfo>),
    /// The stored state changed since this run read it (another writer saved meanwhile): writing
    /// would overwrite their version, so nothing was written.
    #[error(
        "the stored state changed since this run read it (another writer saved it); nothing was written. \
         Run the command again"
    )]
    Conflict,
    /// The stored state is not what this run may use: encrypted without (or with another) key,
    /// tampered with, of another network, or another lineage. The text says which.
    #[error("{0}")]
    Refused(String),
    /// A remote store (S3) failed; the text names the request, the source has the details.
    #[error("cannot {op}")]
    Remote {
        /// What was being done (`read the state object`, ...).
        op: &'static str,
        /// The store's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The state file's journal is damaged in a way no crash leaves behind (a crash only cuts its last
    /// record short, and that one is ignored).
    #[error(
        "its journal is damaged at record {record}: {reason}. No crash leaves a journal like this; the \
         records before it and the state file are intact"
    )]
    Journal {
        /// The damaged record, counting from 1.
        record: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// An injected failure of the in-memory backend (tests).
    #[error("injected write failure")]
    Injected,
}

impl StateError {
    /// An error about the state at `location`.
    pub fn new(location: impl Into<String>, kind: StateErrorKind) -> Self {
        StateError { location: location.into(), kind }
    }

    /// What went wrong.
    pub fn kind(&self) -> &StateErrorKind {
        &self.kind
    }

    /// Where the state lives (a path or a backend's description).
    pub fn location(&self) -> &str {
        &self.location
    }

    /// The holder, when the error is that someone else holds the lock.
    pub fn lock_holder(&self) -> Option<&LockInfo> {
        match &self.kind {
            StateErrorKind::Locked(h)
            | StateErrorKind::LockTimeout { holder: h, .. }
            | StateErrorKind::HeldByRunningProcess(h) => Some(h),
            StateErrorKind::LockLost(h) => h.as_deref(),
            _ => None,
        }
    }
}

impl fmt::Display for StateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "state {}: {}", self.location, self.kind)
    }
}

impl std::error::Error for StateError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        // The kind's text is already part of ours; its cause is the next link of the chain.
        std::error::Error::source(&self.kind)
    }
}

/// `1.5s`, `2m 5s`: short human durations for lock messages.
pub(crate) fn format_duration(d: Duration) -> String {
    let secs = d.as_secs();
    if secs >= 60 { format!("{}m {}s", secs / 60, secs % 60) } else { format!("{:.1}s", d.as_secs_f64()) }
}
