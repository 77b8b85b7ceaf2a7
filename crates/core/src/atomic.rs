//! Replacing a file atomically: the one writer behind the state file, its lock, spec edits and plan
//! files.
//!
//! Every file peerfleet rewrites is one a crash must not leave half-written: a torn state file loses
//! track of real machines, a torn spec loses the user's network. So every rewrite goes through
//! [`write`]: a fresh temporary file in the target's directory (same file system, so the rename is
//! atomic), filled, synced, given its mode, renamed over the target with `tempfile`'s `persist`, and
//! the directory synced so the rename itself survives a power loss.
//!
//! The temporary file's name is random and created exclusively (`O_EXCL`), so it never collides with
//! the target, another writer, or a leftover — even when the target's own name ends in `.tmp`.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::Path;

/// The permission bits a replaced file gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileMode {
    /// 0600, owner only: for files that may hold secrets (state, locks, plan files).
    Private,
    /// The mode of the file being replaced, so a spec its owner made private stays private (and one
    /// shared with a group stays shared); 0600 when there is no file yet.
    KeepExisting,
}

/// Owner-only permission bits ([`FileMode::Private`]).
pub const PRIVATE_FILE: u32 = 0o600;

/// Replaces the file at `path` with `bytes`, atomically and durably.
///
/// # Guarantees
/// - Readers, and a crash at any instant, see the old content or the new, never a mix.
/// - The new file has the permission bits `mode` asks for from the moment it exists (never wider).
/// - On failure the temporary file is removed and `path` is untouched.
///
/// A symlink at `path` is replaced by the file, not followed; resolve it first to write through it.
///
/// # Errors
/// The directory is not writable, the disk is full, the rename fails (e.g. `path` is a directory),
/// or the directory cannot be synced.
pub fn write(path: &Path, bytes: &[u8], mode: FileMode) -> io::Result<()> {
    write_with(path, mode, |file| file.write_all(bytes))
}

/// [`write`] with the step that fills the temporary file given (so callers can stream into it, and
/// tests can make that step fail).
pub fn write_with(
    path: &Path,
    mode: FileMode,
    fill: impl FnOnce(&mut File) -> io::Result<()>,
) -> io::Result<()> {
    let dir = parent_dir(path);
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let prefix = format!(".{name}.");
    let mut builder = tempfile::Builder::new();
    builder.prefix(&prefix).suffix(".tmp");
    #[cfg(unix)]
    let bits = {
        use std::os::unix::fs::PermissionsExt;
        // Created 0600 whatever the umask; widened below if the replaced file was wider.
        builder.permissions(fs::Permissions::from_mode(PRIVATE_FILE));
        match mode {
            FileMode::Private => PRIVATE_FILE,
            FileMode::KeepExisting => existing_mode(path)?.unwrap_or(PRIVATE_FILE),
        }
    };
    let mut temp = builder.tempfile_in(dir)?;
    // The temporary file is removed when `temp` drops, i.e. on every early return below.
    fill(temp.as_file_mut())?;
    #[cfg(unix)]
    if bits != PRIVATE_FILE {
        use std::os::unix::fs::PermissionsExt;
        temp.as_file().set_permissions(fs::Permissions::from_mode(bits))?;
    }
    #[cfg(not(unix))]
    let _ = mode;
    temp.as_file().sync_all()?;
    temp.persist(path).map_err(|e| e.error)?;
    sync_dir(dir)
}

/// The directory holding `path` (`.` for a bare file name).
fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

#[cfg(unix)]
fn existing_mode(path: &Path) -> io::Result<Option<u32>> {
    use std::os::unix::fs::PermissionsExt;
    match fs::metadata(path) {
        Ok(meta) => Ok(Some(meta.permissions().mode() & 0o7777)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Syncs the directory `dir`, so that names created in (or renamed into) it survive a power cut.
#[cfg(unix)]
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Syncs the directory `dir` (nothing to do off Unix).
#[cfg(not(unix))]
pub(crate) fn sync_dir(_dir: &Path) -> io::Result<()> {
    Ok(())
}

#[cfg(all(test, unix))]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).expect("the file exists").permissions().mode() & 0o777
    }

    fn entries(dir: &Path) -> Vec<String> {
        let list = fs::read_dir(dir).expect("the directory is readable");
        let mut names: Vec<String> =
            list.map(|e| e.expect("an entry").file_name().to_string_lossy().into()).collect();
        names.sort();
        names
    }

    #[test]
    fn private_files_are_0600_even_when_the_old_file_was_wider() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("plan.json");
        fs::write(&path, b"old").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        write(&path, b"new", FileMode::Private).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"new");
        assert_eq!(mode(&path), 0o600);
    }

    #[test]
    fn keep_existing_keeps_the_replaced_files_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("net.toml");
        fs::write(&path, b"old").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
        write(&path, b"new", FileMode::KeepExisting).unwrap();
        assert_eq!(mode(&path), 0o640);
        let fresh = dir.path().join("fresh.toml");
        write(&fresh, b"x", FileMode::KeepExisting).unwrap();
        assert_eq!(mode(&fresh), 0o600);
    }

    #[test]
    fn a_target_named_like_a_temporary_file_is_written_and_nothing_is_left_beside_it() {
        let dir = tempfile::tempdir().unwrap();
        // The old plan writer used `<out>.tmp` as its temporary: an output already ending in `.tmp`
        // was its own temporary file. Both the target and a same-named sibling must come out right.
        let path = dir.path().join("plan.tmp");
        fs::write(dir.path().join("plan.tmp.tmp"), b"someone else's").unwrap();
        write(&path, b"the plan", FileMode::Private).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"the plan");
        assert_eq!(fs::read(dir.path().join("plan.tmp.tmp")).unwrap(), b"someone else's");
        assert_eq!(entries(dir.path()), ["plan.tmp", "plan.tmp.tmp"]);
    }

    #[test]
    fn a_failed_fill_leaves_the_old_file_whole_and_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.json");
        fs::write(&path, b"old").unwrap();
        let err = write_with(&path, FileMode::Private, |f| {
            f.write_all(b"half")?;
            Err(io::Error::other("no space left on device"))
        })
        .unwrap_err();
        assert_eq!(err.to_string(), "no space left on device");
        assert_eq!(fs::read(&path).unwrap(), b"old");
        assert_eq!(entries(dir.path()), ["s.json"]);
    }

    #[test]
    fn a_failed_rename_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("taken");
        fs::create_dir(&path).unwrap();
        fs::write(path.join("inside"), b"x").unwrap();
        write(&path, b"new", FileMode::Private).unwrap_err();
        assert_eq!(entries(dir.path()), ["taken"]);
    }

    #[test]
    fn a_bare_file_name_is_replaced_within_the_current_directory() {
        assert_eq!(parent_dir(Path::new("plan.json")), Path::new("."));
        assert_eq!(parent_dir(Path::new("a/plan.json")), Path::new("a"));
    }
}
