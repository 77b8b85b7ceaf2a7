//! The local state file: JSON on disk, replaced atomically, private to its owner, locked by a sibling
//! `.lock` file.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use async_trait::async_trait;

use super::error::{StateError, StateErrorKind};
use super::lock::{self, Attempt, LockInfo, LockOptions, LockSlot, StateLock};
use super::time::Timestamp;
use super::{State, StateBackend};

/// Permission bits of state and lock files: the state holds the network CA key.
const PRIVATE_FILE: u32 = 0o600;
/// Permission bits of a state directory peerfleet creates.
const PRIVATE_DIR: u32 = 0o700;

/// State kept in a local JSON file.
///
/// # Guarantees
/// - A save replaces the file atomically (temporary file in the same directory, fsync, rename, fsync
///   of the directory): a crash at any instant leaves either the old or the new state, never a mix.
/// - The file is created with mode 0600; an existing file readable by others is made 0600 on load,
///   with a warning (and refused if that is not possible).
/// - The lock is the file `<state>.lock`, created exclusively (`O_EXCL`); see [`StateLock`].
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
        let bytes = match fs::read(&self.path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(State::new()),
            Err(e) => return Err(self.io("read the state file")(e)),
        };
        self.ensure_private()?;
        State::from_json(&bytes).map_err(|kind| self.error(kind))
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
        write_atomically(&self.path, bytes, fill).map_err(self.io("replace the state file"))
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
        let (info, took_over) = lock::acquire(&slot, operation, options).await?;
        remove_stale_temps(&self.path);
        Ok(Box::new(FileLock {
            state: self.path.clone(),
            lock: self.lock_path(),
            lease: options.lease,
            info,
            took_over,
            released: false,
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

/// Removes the lock of the state file at `state_path`, whoever holds it (`peerfleet force-unlock`).
/// Returns the holder it removed, or `None` when there was no lock.
///
/// # Errors
/// When the lock file exists but cannot be removed. An unreadable lock file is removed all the same
/// (it is then reported as `None`).
pub fn force_unlock(state_path: &Path) -> Result<Option<LockInfo>, StateError> {
    let path = lock_path(state_path);
    let holder = read_lock(&path).ok().flatten();
    match fs::remove_file(&path) {
        Ok(()) => {
            tracing::warn!(lock = %path.display(), "removed the state lock{}", match &holder {
                Some(h) => format!(" held by {h}"),
                None => String::new(),
            });
            Ok(holder)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(StateError::new(
            state_path.display().to_string(),
            StateErrorKind::Io { op: "remove the lock file", source },
        )),
    }
}

/// Reads a lock file: `Ok(None)` if it does not exist, `Err` with `InvalidData` if it is not a lock.
fn read_lock(path: &Path) -> io::Result<Option<LockInfo>> {
    match fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(io::Error::from),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

fn lock_json(info: &LockInfo) -> Vec<u8> {
    // A LockInfo is strings, integers and timestamps: serializing it cannot fail.
    let mut bytes = serde_json::to_vec_pretty(info).unwrap_or_default();
    bytes.push(b'\n');
    bytes
}

struct FileSlot<'a> {
    state: &'a Path,
    lock: PathBuf,
}

impl FileSlot<'_> {
    fn io(&self, op: &'static str) -> impl FnOnce(io::Error) -> StateError + '_ {
        move |source| StateError::new(self.state.display().to_string(), StateErrorKind::Io { op, source })
    }
}

impl LockSlot for FileSlot<'_> {
    fn location(&self) -> String {
        self.state.display().to_string()
    }

    fn try_create(&self, info: &LockInfo) -> Result<Attempt, StateError> {
        let dir = parent_dir(&self.lock);
        if !dir.exists() {
            create_private_dir(dir).map_err(self.io("create the state directory"))?;
        }
        match create_new_private(&self.lock) {
            Ok(mut f) => {
                let written = f.write_all(&lock_json(info)).and_then(|()| f.sync_all());
                if let Err(e) = written {
                    // A lock we could not fill would block everyone as "unreadable": take it back.
                    let _ = fs::remove_file(&self.lock);
                    return Err(self.io("write the lock file")(e));
                }
                Ok(Attempt::Acquired)
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => match read_lock(&self.lock) {
                Ok(Some(holder)) => Ok(Attempt::Held(holder)),
                // Released between our create and our read: just try again.
                Ok(None) => self.try_create(info),
                Err(e) if e.kind() == io::ErrorKind::InvalidData => Ok(Attempt::Unreadable),
                Err(e) => Err(self.io("read the lock file")(e)),
            },
            Err(e) => Err(self.io("create the lock file")(e)),
        }
    }

    fn take_over(&self, expired: &LockInfo) -> Result<bool, StateError> {
        // Move the lock aside first, then check it is the one we judged abandoned: two processes
        // taking over at once cannot both remove a fresh lock, because only one rename of a given
        // file succeeds, and the loser finds a different lock (or none) and puts it back.
        let aside = sibling_temp(&self.lock, "stale");
        match fs::rename(&self.lock, &aside) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(self.io("move the abandoned lock file aside")(e)),
        }
        let moved = read_lock(&aside).ok().flatten();
        if moved.as_ref().is_some_and(|m| m.id == expired.id) {
            let _ = fs::remove_file(&aside);
            return Ok(true);
        }
        // Not the lock we judged: restore it unless a newer one appeared meanwhile.
        match fs::hard_link(&aside, &self.lock) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(self.io("restore the lock file")(e)),
        }
        let _ = fs::remove_file(&aside);
        Ok(false)
    }
}

/// A held lock file.
struct FileLock {
    state: PathBuf,
    lock: PathBuf,
    lease: std::time::Duration,
    info: LockInfo,
    took_over: Option<LockInfo>,
    released: bool,
}

impl FileLock {
    fn error(&self, kind: StateErrorKind) -> StateError {
        StateError::new(self.state.display().to_string(), kind)
    }

    /// The lock as it is on disk now, if it is still ours.
    fn check_ours(&self) -> Result<(), StateError> {
        match read_lock(&self.lock) {
            Ok(Some(h)) if h.id == self.info.id => Ok(()),
            Ok(Some(h)) => Err(self.error(StateErrorKind::LockLost(Some(Box::new(h))))),
            Ok(None) => Err(self.error(StateErrorKind::LockLost(None))),
            Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                Err(self.error(StateErrorKind::LockUnreadable))
            }
            Err(source) => Err(self.error(StateErrorKind::Io { op: "read the lock file", source })),
        }
    }

    fn release_sync(&mut self) -> Result<(), StateError> {
        if self.released {
            return Ok(());
        }
        self.released = true;
        match self.check_ours() {
            Ok(()) => match fs::remove_file(&self.lock) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
                Err(source) => Err(self.error(StateErrorKind::Io { op: "remove the lock file", source })),
            },
            // Someone else's lock now (or none): leave it alone.
            Err(e) if matches!(e.kind(), StateErrorKind::LockLost(_)) => {
                tracing::warn!("{e}");
                Ok(())
            }
            Err(e) => Err(e),
        }
    }
}

#[async_trait]
impl StateLock for FileLock {
    fn info(&self) -> &LockInfo {
        &self.info
    }

    fn took_over(&self) -> Option<&LockInfo> {
        self.took_over.as_ref()
    }

    async fn renew(&mut self) -> Result<(), StateError> {
        self.check_ours()?;
        let mut renewed = self.info.clone();
        renewed.lease_expires_at = Timestamp::now().plus(self.lease);
        write_atomically(&self.lock, &lock_json(&renewed), |f, b| f.write_all(b))
            .map_err(|source| self.error(StateErrorKind::Io { op: "renew the lock", source }))?;
        self.info = renewed;
        Ok(())
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

/// A unique name next to `path`, hidden, for temporary files that must be on the same file system.
fn sibling_temp(path: &Path, what: &str) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    path.with_file_name(format!(".{name}.{what}.{}.{:08x}", std::process::id(), rand::random::<u32>()))
}

/// Replaces `path` with `bytes` so that readers (and a crash) see the old or the new content, never a
/// mix: a temporary file in the same directory is filled by `fill`, synced, renamed over `path`, and
/// the directory is synced so the rename itself survives a power loss. On failure the temporary file
/// is removed and `path` is untouched.
fn write_atomically(
    path: &Path,
    bytes: &[u8],
    fill: impl FnOnce(&mut File, &[u8]) -> io::Result<()>,
) -> io::Result<()> {
    let temp = sibling_temp(path, "tmp");
    let mut file = create_new_private(&temp)?;
    let written = fill(&mut file, bytes).and_then(|()| file.sync_all());
    drop(file);
    if let Err(e) = written.and_then(|()| fs::rename(&temp, path)) {
        let _ = fs::remove_file(&temp);
        return Err(e);
    }
    sync_dir(parent_dir(path))
}

fn create_new_private(path: &Path) -> io::Result<File> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(PRIVATE_FILE);
    }
    options.open(path)
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

#[cfg(unix)]
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(not(unix))]
fn sync_dir(_dir: &Path) -> io::Result<()> {
    Ok(())
}
