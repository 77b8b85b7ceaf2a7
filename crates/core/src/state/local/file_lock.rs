//! The local state file's lock: an operating-system lock on `<state>.lock`, which also records the
//! holder for messages, and `force-unlock`'s tidying of a lock file nobody holds.

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use async_trait::async_trait;

use crate::atomic::PRIVATE_FILE;

use super::super::error::{StateError, StateErrorKind};
use super::super::lock::{self, Attempt, LockInfo, LockOptions, LockSlot, StateLock};
use super::{create_private_dir, parent_dir};

/// Takes the lock of the state file at `state_path` for `operation`.
pub(super) async fn acquire(
    state_path: &Path,
    operation: &str,
    options: &LockOptions,
) -> Result<Box<dyn StateLock>, StateError> {
    let slot = FileSlot { state: state_path, lock: lock_path(state_path) };
    let acquired = lock::acquire(&slot, operation, options).await?;
    Ok(Box::new(FileLock {
        state: state_path.to_path_buf(),
        lock: lock_path(state_path),
        file: Some(acquired.guard),
        info: acquired.info,
    }))
}

/// The lock file of the state file at `state_path`.
pub(super) fn lock_path(state_path: &Path) -> PathBuf {
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
