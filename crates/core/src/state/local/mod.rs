//! The local state file: JSON on disk, replaced atomically, private to its owner, locked by an
//! operating-system lock on a sibling `.lock` file (freed by the kernel the instant its holder dies).
//! Saves during an apply append what changed to a journal beside it ([`super::journal`]), which the
//! end of the apply folds back into the file.

mod file_lock;

use std::fmt;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;

use crate::atomic::{self, FileMode, PRIVATE_FILE};

use super::error::{StateError, StateErrorKind};
use super::journal::{self, Replayed, Small, Touched};
use super::lock::{LockInfo, LockOptions, StateLock};
use super::{State, StateBackend};

pub use file_lock::force_unlock;

/// Permission bits of a state directory peerfleet creates.
const PRIVATE_DIR: u32 = 0o700;
/// The largest state file read: a network at the spec's limits writes well under this. The journal
/// is held to the same limit.
pub const MAX_STATE_BYTES: u64 = 256 << 20;
/// The journal may always grow to this, however small the file: rewriting a small file after every
/// few saves would buy nothing.
pub(super) const MIN_JOURNAL_BYTES: u64 = 1 << 20;

/// State kept in a local JSON file.
///
/// # Guarantees
/// - [`StateBackend::save`] and [`StateBackend::write`] replace the file atomically through
///   [`atomic::write`]: a crash at any instant leaves either the old or the new state, never a mix.
/// - [`StateBackend::save_touched`] appends one record of what changed to the journal
///   `<state>.journal` and syncs it to disk before returning: a version it saved survives a crash
///   exactly as a rewritten file would. A crash in the middle of an append leaves a torn last record,
///   which loading ignores (that save never returned). The file is rewritten, and the journal removed,
///   by [`StateBackend::compact`] and whenever the journal would outgrow the last whole file, so the
///   bytes written stay within about twice what changed.
/// - Loading reads the file and replays the journal over it: every reader sees the last saved version.
/// - The file and the journal are created with mode 0600; an existing one readable by others is made
///   0600 on load, with a warning (and refused if that is not possible). The journal is only ever a
///   regular file, never reached through a symlink.
/// - The lock is an advisory operating-system lock (`flock`) on the file `<state>.lock`, which also
///   records the holder for messages. A holder killed in any way (`kill -9`, a power cut of a shared
///   host aside) frees it at once: no lease, no `force-unlock`.
#[derive(Clone)]
pub struct LocalStateFile {
    path: PathBuf,
    /// What this handle knows of the stored version. Shared by clones: the store's blocking tasks
    /// run on clones, and what they learn is the handle's.
    known: Arc<Mutex<Known>>,
}

/// The stored version as this handle last loaded or saved it: what a journal record may build on.
#[derive(Default)]
struct Known {
    /// Its lineage and serial; `None` when nothing was loaded or saved yet (or it had no lineage).
    version: Option<(String, u64)>,
    /// Where the next journal record goes: the end of the journal's whole records (0: no journal).
    journal_len: u64,
    /// The size of the file as last written whole: the journal may grow this far.
    file_len: u64,
    /// Its small fields, which a record carries only when they changed.
    small: Small,
}

impl fmt::Debug for LocalStateFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalStateFile").field("path", &self.path).finish_non_exhaustive()
    }
}

impl LocalStateFile {
    /// The state file at `path` (it need not exist yet).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        LocalStateFile { path: path.into(), known: Arc::default() }
    }

    /// The state file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The lock file's path: `<state>.lock`.
    pub fn lock_path(&self) -> PathBuf {
        file_lock::lock_path(&self.path)
    }

    /// The journal's path: `<state>.journal`.
    pub fn journal_path(&self) -> PathBuf {
        journal::journal_path(&self.path)
    }

    fn error(&self, kind: StateErrorKind) -> StateError {
        StateError::new(self.path.display().to_string(), kind)
    }

    fn io(&self, op: &'static str) -> impl FnOnce(io::Error) -> StateError + '_ {
        move |source| self.error(StateErrorKind::Io { op, source })
    }

    fn known(&self) -> MutexGuard<'_, Known> {
        // Plain data: a panic elsewhere while holding it leaves nothing half-done that matters.
        self.known.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn remember(&self, state: &State, journal_len: u64, file_len: u64) {
        *self.known() = Known {
            version: state.lineage.clone().map(|l| (l, state.serial)),
            journal_len,
            file_len,
            small: Small::of(state),
        };
    }

    /// Reads the state: the file, then the journal replayed over it. A missing file is an empty state.
    pub fn load_sync(&self) -> Result<State, StateError> {
        let (state, replayed, file_len) = self.read_stored()?;
        self.remember(&state, replayed.valid_len, file_len);
        Ok(state)
    }

    /// The stored state, what replaying its journal found, and the file's size.
    fn read_stored(&self) -> Result<(State, Replayed, u64), StateError> {
        let (mut state, file_len) = match crate::input::read_regular(&self.path, MAX_STATE_BYTES) {
            // Parsed before the permissions are touched: a path that is not a state file (a spec, a
            // key, a symlink to either) is refused as it is, never chmod'ed.
            Ok(bytes) => (State::from_json(&bytes).map_err(|kind| self.error(kind))?, bytes.len() as u64),
            Err(e) if e.kind() == io::ErrorKind::NotFound => (State::new(), 0),
            Err(e) => return Err(self.io("read the state file")(e)),
        };
        if file_len > 0 {
            self.ensure_private(&self.path)?;
        }
        let journal_path = self.journal_path();
        let mut replayed = Replayed::default();
        if let Some(bytes) =
            journal::read(&journal_path, MAX_STATE_BYTES).map_err(self.io("read the state journal"))?
        {
            replayed = journal::replay(&bytes, &mut state).map_err(|kind| self.error(kind))?;
            self.ensure_private(&journal_path)?;
            if replayed.torn {
                tracing::info!(
                    journal = %journal_path.display(),
                    "the journal's last record was cut short by a crash; that save never completed, and \
                     is ignored"
                );
            }
        }
        Ok((state, replayed, file_len))
    }

    /// Writes `state` whole, atomically, creating the directory (mode 0700) if needed, and removes the
    /// journal, which the file then holds.
    pub fn write_sync(&self, state: &State) -> Result<(), StateError> {
        self.write_with(state, |f, b| f.write_all(b))
    }

    /// [`Self::write_sync`] with the step that fills the temporary file given, so tests can make it fail.
    pub(super) fn write_with(
        &self,
        state: &State,
        fill: impl FnOnce(&mut File, &[u8]) -> io::Result<()>,
    ) -> Result<(), StateError> {
        let dir = parent_dir(&self.path);
        if !dir.exists() {
            create_private_dir(dir).map_err(self.io("create the state directory"))?;
        }
        let journal_path = self.journal_path();
        // A journal this state does not continue (another lineage, or records past its serial) goes
        // first: left beside the new file by a crash, it would be replayed over it.
        if !self.continues_journal(state) {
            journal::remove(&journal_path).map_err(self.io("remove the state journal"))?;
        }
        let bytes = state.to_json();
        atomic::write_with(&self.path, FileMode::Private, |f| fill(f, &bytes))
            .map_err(self.io("replace the state file"))?;
        // The file holds everything the journal did. A crash before this removal leaves records at or
        // below the file's serial, which loading skips.
        journal::remove(&journal_path).map_err(self.io("remove the state journal"))?;
        self.remember(state, 0, bytes.len() as u64);
        Ok(())
    }

    /// Whether `state` is the stored version or a later one of its lineage, so the journal's records
    /// are all at or below its serial.
    fn continues_journal(&self, state: &State) -> bool {
        let known = self.known().version.clone();
        let stored = match known {
            Some(version) => Some(version),
            None if !self.journal_path().exists() => return true,
            // A handle that has not read the stored version: look (a journal that does not read is
            // continued by nothing).
            None => match self.read_stored() {
                Ok((stored, ..)) => stored.lineage.map(|l| (l, stored.serial)),
                Err(_) => return false,
            },
        };
        match stored {
            Some((lineage, serial)) => state.lineage.as_ref() == Some(&lineage) && state.serial >= serial,
            None => true,
        }
    }

    /// Appends `line` to the journal at `at`; remembers the `version` (lineage, serial) it records.
    fn append_sync(
        &self,
        version: (String, u64),
        small: Small,
        at: u64,
        line: &[u8],
    ) -> Result<(), StateError> {
        journal::append(&self.journal_path(), at, line).map_err(self.io("append to the state journal"))?;
        let mut known = self.known();
        known.version = Some(version);
        known.journal_len = at + line.len() as u64;
        known.small = small;
        Ok(())
    }

    /// Removes the lock whoever holds it (`peerfleet force-unlock`); returns the removed holder, or
    /// `None` if there was no lock.
    pub fn force_unlock_sync(&self) -> Result<Option<LockInfo>, StateError> {
        force_unlock(&self.path)
    }

    #[cfg(unix)]
    fn ensure_private(&self, path: &Path) -> Result<(), StateError> {
        use std::os::unix::fs::PermissionsExt;
        let meta = fs::metadata(path).map_err(self.io("read the state file's permissions"))?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 == 0 {
            return Ok(());
        }
        fs::set_permissions(path, fs::Permissions::from_mode(PRIVATE_FILE))
            .map_err(|source| self.error(StateErrorKind::Exposed { mode, source }))?;
        tracing::warn!(
            file = %path.display(),
            "the state file was readable by other users (mode {mode:o}); changed it to 0600"
        );
        Ok(())
    }

    #[cfg(not(unix))]
    fn ensure_private(&self, _path: &Path) -> Result<(), StateError> {
        Ok(())
    }
}

#[async_trait]
impl StateBackend for LocalStateFile {
    fn location(&self) -> String {
        self.path.display().to_string()
    }

    async fn load(&self) -> Result<State, StateError> {
        let store = self.clone();
        off_runtime(&self.path, move || store.load_sync()).await
    }

    async fn write(&self, state: &State) -> Result<(), StateError> {
        // Serialising and fsyncing a large state takes tens of milliseconds: not on a runtime thread.
        let (store, state) = (self.clone(), state.clone());
        off_runtime(&self.path, move || store.write_sync(&state)).await
    }

    async fn save_touched(&self, state: &mut State, touched: &Touched) -> Result<(), StateError> {
        let base = {
            let known = self.known();
            let stored = known.version.as_ref().map(|(l, s)| (Some(l), *s));
            (stored == Some((state.lineage.as_ref(), state.serial)))
                .then(|| (known.journal_len, known.file_len, known.small.clone()))
        };
        // Only a version this handle loaded or saved is one a record can build on.
        let Some((at, file_len, previous)) = base else { return self.save(state).await };
        let (lineage, serial) = (state.lineage.clone(), state.serial);
        state.advance().map_err(|kind| self.error(kind))?;
        let (line, small, version) = journal::encode(state, touched, &previous);
        let room = file_len.clamp(MIN_JOURNAL_BYTES, MAX_STATE_BYTES);
        let saved = if at + line.len() as u64 > room {
            // Rewriting the file now costs no more than the journal already did.
            self.write(state).await
        } else {
            let store = self.clone();
            let appended =
                off_runtime(&self.path, move || store.append_sync(version, small, at, &line)).await;
            match appended {
                Ok(()) => Ok(()),
                Err(e) => {
                    // The whole file supersedes whatever the journal holds.
                    tracing::warn!("{e}; writing the whole state file instead");
                    self.write(state).await
                }
            }
        };
        if saved.is_err() {
            state.lineage = lineage;
            state.serial = serial;
        }
        saved
    }

    async fn compact(&self, state: &State) -> Result<(), StateError> {
        let due = {
            let known = self.known();
            let stored = known.version.as_ref().map(|(l, s)| (Some(l), *s));
            known.journal_len > 0 && stored == Some((state.lineage.as_ref(), state.serial))
        };
        if due { self.write(state).await } else { Ok(()) }
    }

    async fn lock(&self, operation: &str, options: &LockOptions) -> Result<Box<dyn StateLock>, StateError> {
        let lock = file_lock::acquire(&self.path, operation, options).await?;
        remove_stale_temps(&self.path);
        Ok(lock)
    }

    async fn force_unlock(&self) -> Result<Option<LockInfo>, StateError> {
        self.force_unlock_sync()
    }
}

/// Removes the temporary files a killed writer left beside the state and its lock. Only the lock
/// holder writes either, so once we hold the lock every such file is stale. Best effort: a file that
/// cannot be removed is only noted.
fn remove_stale_temps(state_path: &Path) {
    let name = state_path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let prefixes = [format!(".{name}.tmp."), format!(".{name}.lock.tmp.")];
    let Ok(entries) = fs::read_dir(parent_dir(state_path)) else { return };
    for entry in entries.flatten() {
        let file = entry.file_name();
        if prefixes.iter().any(|p| file.to_string_lossy().starts_with(p.as_str()))
            && let Err(e) = fs::remove_file(entry.path())
        {
            tracing::debug!(file = %entry.path().display(), "could not remove a stale temporary file: {e}");
        }
    }
}

/// Runs blocking file work on the runtime's blocking pool, so a save's fsync never stalls the
/// executor's coordinator (or anything else sharing its thread).
async fn off_runtime<T: Send + 'static>(
    state_path: &Path,
    work: impl FnOnce() -> Result<T, StateError> + Send + 'static,
) -> Result<T, StateError> {
    tokio::task::spawn_blocking(work).await.unwrap_or_else(|e| {
        let source = io::Error::other(format!("the state file task ended early: {e}"));
        Err(StateError::new(
            state_path.display().to_string(),
            StateErrorKind::Io { op: "use the state file", source },
        ))
    })
}

pub(super) fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

fn create_private_dir(dir: &Path) -> io::Result<()> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(PRIVATE_DIR);
    }
    builder.create(dir)
}
