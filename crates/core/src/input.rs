//! Reading the files a person points peerfleet at: the spec, the genesis, state and plan files.
//!
//! Every such path may name something that is not a file: a FIFO that blocks a reader forever,
//! `/dev/zero` that never ends, a directory, a multi-gigabyte file. One function reads them all, so
//! each gets the same two refusals: only regular files (symlinks to them are fine), and never more
//! than a stated number of bytes.

use std::fs::{self, File};
use std::io::{self, Read};
use std::path::Path;

/// Reads the whole regular file at `path`, refusing anything else and anything over `max` bytes.
///
/// # Errors
/// The usual I/O errors; [`io::ErrorKind::InvalidInput`] naming what the path is when it is not a
/// regular file; [`io::ErrorKind::FileTooLarge`] naming the limit when it holds more than `max` bytes.
pub fn read_regular(path: &Path, max: u64) -> io::Result<Vec<u8>> {
    // Checked before opening: opening a FIFO for reading blocks until someone writes to it.
    ensure_regular(&fs::metadata(path)?)?;
    let file = File::open(path)?;
    // Checked again on what was opened, in case the path was swapped in between.
    let meta = file.metadata()?;
    ensure_regular(&meta)?;
    read_capped(file, meta.len(), max)
}

/// Reads the opened `file` (whose size was `len` when opened) whole, refusing more than `max` bytes,
/// also when it grows while being read. Callers have checked what the file is.
///
/// # Errors
/// The usual I/O errors; [`io::ErrorKind::FileTooLarge`] naming the limit.
pub(crate) fn read_capped(file: File, len: u64, max: u64) -> io::Result<Vec<u8>> {
    if len > max {
        return Err(too_large(max));
    }
    let mut bytes = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
    // `take` bounds a file that grows while being read.
    file.take(max.saturating_add(1)).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max {
        return Err(too_large(max));
    }
    Ok(bytes)
}

/// [`read_regular`] for text: the bytes must also be UTF-8.
///
/// # Errors
/// As [`read_regular`]; [`io::ErrorKind::InvalidData`] when the file is not UTF-8.
pub fn read_regular_text(path: &Path, max: u64) -> io::Result<String> {
    String::from_utf8(read_regular(path, max)?)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "the file is not UTF-8 text"))
}

fn ensure_regular(meta: &fs::Metadata) -> io::Result<()> {
    if meta.is_file() {
        return Ok(());
    }
    let what = describe(&meta.file_type());
    Err(io::Error::new(io::ErrorKind::InvalidInput, format!("not a regular file ({what})")))
}

fn too_large(max: u64) -> io::Error {
    io::Error::new(io::ErrorKind::FileTooLarge, format!("larger than the limit of {max} bytes"))
}

/// What a non-regular file is, in words.
fn describe(t: &fs::FileType) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if t.is_fifo() {
            return "a named pipe";
        }
        if t.is_char_device() || t.is_block_device() {
            return "a device";
        }
        if t.is_socket() {
            return "a socket";
        }
    }
    if t.is_dir() { "a directory" } else { "not a file" }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regular_files_are_read_up_to_the_limit_and_refused_past_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        fs::write(&path, b"12345").unwrap();
        assert_eq!(read_regular(&path, 5).unwrap(), b"12345");
        let e = read_regular(&path, 4).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::FileTooLarge);
        assert!(e.to_string().contains("4 bytes"), "{e}");
    }

    #[test]
    fn directories_and_devices_are_refused_without_reading() {
        let dir = tempfile::tempdir().unwrap();
        let e = read_regular(dir.path(), 10).unwrap_err();
        assert!(e.to_string().contains("a directory"), "{e}");
        #[cfg(unix)]
        {
            let e = read_regular(Path::new("/dev/zero"), 10).unwrap_err();
            assert!(e.to_string().contains("a device"), "{e}");
        }
    }

    #[cfg(unix)]
    #[test]
    fn a_named_pipe_is_refused_instead_of_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("p");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status().unwrap();
        assert!(made.success());
        let e = read_regular(&fifo, 10).unwrap_err();
        assert!(e.to_string().contains("named pipe"), "{e}");
    }
}
