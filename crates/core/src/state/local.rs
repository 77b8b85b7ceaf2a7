//! The local state file: JSON on disk, replaced atomically, private to its owner, locked by an
//! operating-system lock on a sibling `.lock` file (freed by the kernel the instant its holder dies).

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use async_trait::async_trait;

use crate::atomic::{self, FileMode, PRIVATE_FILE};

use super::error::{StateError, StateErrorKind};
use super::lock::{self, Attempt, LockInfo, LockOptions, LockSlot, StateLock};
use super::{State, StateBackend};

/// Permission bits of a state directory peerfleet creates.
const PRIVATE_DIR: u32 = 0o700;
/// The largest state file read: a network at the spec's limits writes well under this.
pub const MAX_STATE_BYTES: u64 = 256 << 20;

/// State kept in a local JSON file.
///
/// # Guarantees
/// - A save replaces the file atomically through [`atomic::write`]: a crash at any instant leaves
///   either the old or the new state, never a mix.
/// - The file is created with mode 0600; an existing file readable by others is made 0600 on load,
///   with a warning (and refused if that is not possible).
/// - The lock is an advisory operating-system lock (`flock`) on the file `<state>.lock`, which also
///   records the holder for messages. A holder killed in any way (`kill -9`, a power cut of a shared
///   host aside) frees it at once: no lease, no `force-unlock`.
#[derive(Debug, Clone)]
pub struct LocalStateFile {
    path: PathBuf,
}

impl LocalStateFile {
    /// The state file at `path` (it need not exist yet).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        LocalStateFile { path: path.into() }
    }

    /// The state file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The lock file's path: `<state>.lock`.
    pub fn lock_path(&self) -> PathBuf {
        lock_path(&self.path)
    }

    fn error(&self, kind: StateErrorKind) -> StateError {
        StateError::new(self.path.display().to_string(), kind)
    }

    fn io(&self, op: &'static str) -> impl FnOnce(io::Error) -> StateError + '_ {
        move |source| self.error(StateErrorKind::Io { op, source })
    }

    /// Reads the state; a missing file is an empty state.
    pub fn load_sync(&self) -> Result<State, StateError> {
        let bytes = match crate::input::read_regular(&self.path, MAX_STATE_BYTES) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(State::new()),
            Err(e) => return Err(self.io("read the state file")(e)),
        };
        // Parsed before the permissions are touched: a path that is not a state file (a spec, a
        // key, a symlink to either) is refused as it is, never chmod'ed.
        let state = State::from_json(&bytes).map_err(|kind| self.error(kind))?;
        self.ensure_private()?;
        Ok(state)
    }

    /// Writes `state` atomically, creating the directory (mode 0700) if needed.
    pub fn write_sync(&self, state: &State) -> Result<(), StateError> {
        let bytes = state.to_json();
        self.write_with(&bytes, |f, b| f.write_all(b))
    }

    /// [`Self::write_sync`] with the step that fills the temporary file given, so tests can make it fail.
    pub(super) fn write_with(
        &self,
        bytes: &[u8],
        fill: impl FnOnce(&mut File, &[u8]) -> io::Result<()>,
    ) -> Result<(), StateError> {
        let dir = parent_dir(&self.path);
        if !dir.exists() {
            create_private_dir(dir).map_err(self.io("create the state directory"))?;
        }
        atomic::write_with(&self.path, FileMode::Private, |f| fill(f, bytes))
            .map_err(self.io("replace the state file"))
    }

    /// Removes the lock whoever holds it (`peerfleet force-unlock`); returns the removed holder, or
    /// `None` if there was no lock.
    pub fn force_unlock_sync(&self) -> Result<Option<LockInfo>, StateError> {
        force_unlock(&self.path)
    }

    #[cfg(unix)]
    fn ensure_private(&self) -> Result<(), StateError> {
        use std::os::unix::fs::PermissionsExt;
        let meta = fs::metadata(&self.path).map_err(self.io("read the state file's permissions"))?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 == 0 {
            return Ok(());
        }
        fs::set_permissions(&self.path, fs::Permissions::from_mode(PRIVATE_FILE))
            .map_err(|source| self.error(StateErrorKind::Exposed { mode, source }))?;
        tracing::warn!(
            state = %self.path.display(),
            "the state file was readable by other users (mode {mode:o}); changed it to 0600"
        );
        Ok(())
    }

    #[cfg(not(unix))]
    fn ensure_private(&self) -> Result<(), StateError> {
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

    async fn lock(&self, operation: &str, options: &LockOptions) -> Result<Box<dyn StateLock>, StateError> {
        let slot = FileSlot { state: &self.path, lock: self.lock_path() };
        let acquired = lock::acquire(&slot, operation, options).await?;
        remove_stale_temps(&self.path);
        Ok(Box::new(FileLock {
            state: self.path.clone(),
            lock: self.lock_path(),
            file: Some(acquired.guard),
            info: acquired.info,
        }))
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

/// The lock file of the state file at `state_path`.
fn lock_path(state_path: &Path) -> PathBuf {
    let mut name = state_path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".lock");
    state_path.with_file_name(name)
}

/// Removes a lock file left behind by a run that is gone (`peerfleet force-unlock`). Returns the
/// holder its record named, or `None` when there was no lock file (or an unreadable one).
///
/// A local lock is an operating-system lock that dies with its holder, so a lock file nobody holds is
/// already free; removing it only tidies up. A lock held by a running process is never removed: two
/// runs would then write the same state.
///
/// # Errors
/// When a live process holds it ([`StateErrorKind::HeldByRunningProcess`]), or the lock file exists
/// but cannot be removed, or is not a peerfleet lock: only a file that reads as one (or an empty
/// file, left by a crash right after creating it) is removed, so a mistaken `--state` never deletes
/// someone else's `.lock` file.
pub fn force_unlock(state_path: &Path) -> Result<Option<LockInfo>, StateError> {
    let path = lock_path(state_path);
    let error = |kind| StateError::new(state_path.display().to_string(), kind);
    let holder = match fs::symlink_metadata(&path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Ok(meta) if meta.is_file() && meta.len() == 0 => None,
        _ => match read_lock(&path) {
            Ok(holder) => holder,
            Err(_) => return Err(error(StateErrorKind::NotALock { path: path.display().to_string() })),
        },
    };
    let file = match OpenOptions::new().read(true).write(true).open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(error(StateErrorKind::Io { op: "open the lock file", source })),
    };
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            let holder = holder.unwrap_or_else(|| LockInfo::without_lease("?"));
            return Err(error(StateErrorKind::HeldByRunningProcess(Box::new(holder))));
        }
        Err(TryLockError::Error(source)) => {
            return Err(error(StateErrorKind::Io { op: "lock the lock file", source }));
        }
    }
    match fs::remove_file(&path) {
        Ok(()) => {
            tracing::warn!(lock = %path.display(), "removed a leftover lock file{}", match &holder {
                Some(h) => format!(" of {h}"),
                None => String::new(),
            });
            Ok(holder)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(error(StateErrorKind::Io { op: "remove the lock file", source })),
    }
}

/// Reads a lock file: `Ok(None)` if it does not exist, `Err` with `InvalidData` if it is not a lock
/// (an empty file is one being written this instant).
fn read_lock(path: &Path) -> io::Result<Option<LockInfo>> {
    // A lock record is a few hundred bytes; anything bigger (or not a file) is not one.
    match crate::input::read_regular(path, 64 << 10) {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(io::Error::from),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Whether the open lock file is empty or holds a lock record (read through the handle we locked).
fn holds_a_lock_record_or_nothing(file: &mut File) -> io::Result<bool> {
    use std::io::{Read, Seek};
    let mut bytes = Vec::new();
    file.seek(io::SeekFrom::Start(0))?;
    // A lock record is a few hundred bytes; anything bigger is not one.
    Read::by_ref(file).take(64 << 10).read_to_end(&mut bytes)?;
    Ok(bytes.is_empty() || serde_json::from_slice::<LockInfo>(&bytes).is_ok())
}

fn lock_json(info: &LockInfo) -> Vec<u8> {
    // A LockInfo is strings, integers and timestamps: serializing it cannot fail.
    let mut bytes = serde_json::to_vec_pretty(info).unwrap_or_default();
    bytes.push(b'\n');
    bytes
}

/// Whether `file` is still the file at `path` (same device and inode). A lock taken on a file that
/// was removed meanwhile (its holder released it between our open and our lock) locks nothing.
#[cfg(unix)]
fn same_file(file: &File, path: &Path) -> io::Result<bool> {
    use std::os::unix::fs::MetadataExt;
    // `symlink_metadata`: a symlink swapped in at the path is not the file we locked.
    let (ours, named) = (file.metadata()?, fs::symlink_metadata(path)?);
    Ok(ours.dev() == named.dev() && ours.ino() == named.ino())
}

#[cfg(not(unix))]
fn same_file(_file: &File, _path: &Path) -> io::Result<bool> {
    Ok(true)
}

struct FileSlot<'a> {
    state: &'a Path,
    lock: PathBuf,
}

impl FileSlot<'_> {
    fn io(&self, op: &'static str) -> impl FnOnce(io::Error) -> StateError + '_ {
        move |source| StateError::new(self.state.display().to_string(), StateErrorKind::Io { op, source })
    }

    /// Opens (creating it if needed) the lock file. Only a regular file is opened: a symlink or a
    /// FIFO planted at the lock's path is refused rather than followed, truncated and written over.
    fn open(&self) -> io::Result<File> {
        match fs::symlink_metadata(&self.lock) {
            Ok(meta) if !meta.is_file() => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "the lock path is not a regular file",
                ));
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let mut options = OpenOptions::new();
        options.read(true).write(true).create(true).truncate(false);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(PRIVATE_FILE);
        }
        options.open(&self.lock)
    }
}

/// How often a lock file that vanished between our open and our lock is opened again.
const REOPEN_ATTEMPTS: u32 = 8;

#[async_trait]
impl LockSlot for FileSlot<'_> {
    type Guard = File;

    fn location(&self) -> String {
        self.state.display().to_string()
    }

    fn leased(&self) -> bool {
        false
    }

    async fn try_create(&self, info: &LockInfo) -> Result<Attempt<File>, StateError> {
        let dir = parent_dir(&self.lock);
        if !dir.exists() {
            create_private_dir(dir).map_err(self.io("create the state directory"))?;
        }
        for _ in 0..REOPEN_ATTEMPTS {
            let mut file = self.open().map_err(self.io("open the lock file"))?;
            match file.try_lock() {
                Ok(()) => {}
                Err(TryLockError::WouldBlock) => {
                    return match read_lock(&self.lock) {
                        Ok(Some(holder)) => Ok(Attempt::Held(holder)),
                        // Released this instant, or its holder has not written its record yet.
                        Ok(None) => Ok(Attempt::Unreadable),
                        Err(e) if e.kind() == io::ErrorKind::InvalidData => Ok(Attempt::Unreadable),
                        Err(e) => Err(self.io("read the lock file")(e)),
                    };
                }
                Err(TryLockError::Error(e)) => return Err(self.io("lock the lock file")(e)),
            }
            match same_file(&file, &self.lock) {
                Ok(true) => {}
                // Its holder removed it as it released: open the new one.
                Ok(false) => continue,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(self.io("look at the lock file")(e)),
            }
            // Ours. Whatever record is in it belongs to a holder that is gone (the kernel dropped
            // its lock when it died): replace it with ours, in place, so the lock stays on this file.
            // Anything else in it is not a lock peerfleet wrote (a mistaken `--state` next to
            // someone's own `.lock` file): it is left as it is.
            if !holds_a_lock_record_or_nothing(&mut file).map_err(self.io("read the lock file"))? {
                return Err(StateError::new(self.location(), StateErrorKind::LockUnreadable));
            }
            let bytes = lock_json(info);
            let written = file
                .set_len(0)
                .and_then(|()| io::Seek::seek(&mut file, io::SeekFrom::Start(0)))
                .and_then(|_| file.write_all(&bytes))
                .and_then(|()| file.sync_data());
            if let Err(e) = written {
                let _ = fs::remove_file(&self.lock);
                return Err(self.io("write the lock file")(e));
            }
            return Ok(Attempt::Acquired(file));
        }
        Ok(Attempt::Unreadable)
    }

    async fn take_over(&self, _expired: &LockInfo, _ours: &LockInfo) -> Result<Option<File>, StateError> {
        // A local lock has no lease: a dead holder's lock is free without being taken over.
        Ok(None)
    }
}

/// A held lock file: the open file carries the operating system's lock, which the kernel releases
/// when this process exits in any way, `kill -9` included.
struct FileLock {
    state: PathBuf,
    lock: PathBuf,
    file: Option<File>,
    info: LockInfo,
}

impl FileLock {
    fn error(&self, kind: StateErrorKind) -> StateError {
        StateError::new(self.state.display().to_string(), kind)
    }

    fn release_sync(&mut self) -> Result<(), StateError> {
        let Some(file) = self.file.take() else { return Ok(()) };
        // Remove the file while still holding its lock, so that nobody can lock it in between and
        // then lose it to the removal; a waiting process notices it locked a removed file and
        // opens the new one.
        if matches!(same_file(&file, &self.lock), Ok(true)) {
            match fs::remove_file(&self.lock) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(self.error(StateErrorKind::Io { op: "remove the lock file", source }));
                }
            }
        }
        drop(file);
        Ok(())
    }
}

#[async_trait]
impl StateLock for FileLock {
    fn info(&self) -> &LockInfo {
        &self.info
    }

    async fn renew(&mut self) -> Result<(), StateError> {
        // Nothing to extend; check the file we hold is still the lock file (someone may have
        // deleted it by hand, and then another run could lock a new one).
        match self.file.as_ref().map(|f| same_file(f, &self.lock)) {
            Some(Ok(true)) => Ok(()),
            Some(Err(e)) if e.kind() != io::ErrorKind::NotFound => {
                Err(self.error(StateErrorKind::Io { op: "look at the lock file", source: e }))
            }
            _ => {
                Err(self.error(StateErrorKind::LockLost(read_lock(&self.lock).ok().flatten().map(Box::new))))
            }
        }
    }

    async fn release(mut self: Box<Self>) -> Result<(), StateError> {
        self.release_sync()
    }
}

impl Drop for FileLock {
    fn drop(&mut self) {
        if let Err(e) = self.release_sync() {
            tracing::warn!("could not release the state lock: {e}");
        }
    }
}

fn parent_dir(path: &Path) -> &Path {
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
