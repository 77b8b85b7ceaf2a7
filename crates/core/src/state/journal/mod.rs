//! The state file's journal: saves that cost what changed.
//!
//! Rewriting a 10,000-container state (9 MB, fsync'ed) on every save made a large apply spend most of
//! its time saving. So [`super::LocalStateFile::save_touched`] appends one record to `<state>.journal`
//! instead: the new lineage and serial, the entries (resource, generation, intent) of the addresses
//! the save touched, and the small fields (network, chain, secrets, outputs) when they changed. The
//! append is fsync'ed before the save returns, so a saved version is as durable as a rewritten file.
//! The whole file is written again (and the journal removed) at the end of an apply, and whenever the
//! journal would outgrow the last whole file: the bytes written stay within about twice what changed.
//!
//! # Format
//! One record per line: the SHA-256 of the record's JSON in hex, a space, the JSON (compact, so it has
//! no newline), a newline. The checksum tells a record cut short by a crash (or padded with zeros by
//! a file system after a power cut) from a whole one.
//!
//! # Reading
//! [`replay`] applies the records over the state file:
//! - records at or below the file's serial are skipped: a crash between writing the whole file and
//!   removing the journal leaves them behind, and the file already holds them;
//! - every later record must continue the file's lineage, one serial at a time;
//! - a damaged *last* record is a save cut short by a crash: that save never returned, so nothing was
//!   sent to a provider on its strength, and it is ignored;
//! - a damaged record followed by whole ones is not a crash's doing: [`StateErrorKind::Journal`].
//!
//! The journal holds what the file holds, in the same form (secrets included, as the file keeps them),
//! so it gets the file's protections: mode 0600, only a regular file, never through a symlink, and no
//! more than [`super::MAX_STATE_BYTES`] read.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::error::StateErrorKind;
use super::{ChainPin, Intent, STATE_FORMAT_VERSION, Secret, State};
use crate::address::Address;
use crate::atomic::PRIVATE_FILE;
use crate::resource::Actual;

/// The addresses whose entries (resource, generation, intent) changed since the last save.
///
/// The executor fills it as it records steps, and hands it to
/// [`StateBackend::save_touched`](super::StateBackend::save_touched), so a store can write those
/// entries alone instead of the whole state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Touched {
    addresses: BTreeSet<Address>,
}

impl Touched {
    /// Nothing touched.
    pub fn new() -> Self {
        Self::default()
    }

    /// Notes that an entry at `address` changed (set or removed).
    pub fn insert(&mut self, address: &Address) {
        if !self.addresses.contains(address) {
            self.addresses.insert(address.clone());
        }
    }

    /// Whether nothing was touched.
    pub fn is_empty(&self) -> bool {
        self.addresses.is_empty()
    }

    /// How many addresses were touched.
    pub fn len(&self) -> usize {
        self.addresses.len()
    }

    /// Forgets every address (after a save recorded them).
    pub fn clear(&mut self) {
        self.addresses.clear();
    }

    /// The touched addresses, in order.
    pub fn iter(&self) -> impl Iterator<Item = &Address> {
        self.addresses.iter()
    }
}

/// The journal beside the state file at `state_path`: `<state>.journal`.
pub(super) fn journal_path(state_path: &Path) -> PathBuf {
    let mut name = state_path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".journal");
    state_path.with_file_name(name)
}

/// What one address holds in each of the state's per-address maps; a missing field is removed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Entry {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    resource: Option<Actual>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    generation: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    intent: Option<Intent>,
}

/// The state's small fields, written whole whenever one of them changed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Small {
    network: Option<String>,
    chain: Option<ChainPin>,
    secrets: BTreeMap<String, Secret>,
    outputs: BTreeMap<String, String>,
}

impl Small {
    pub(super) fn of(state: &State) -> Self {
        Small {
            network: state.network.clone(),
            chain: state.chain.clone(),
            secrets: state.secrets.clone(),
            outputs: state.outputs.clone(),
        }
    }

    fn apply(self, state: &mut State) {
        state.network = self.network;
        state.chain = self.chain;
        state.secrets = self.secrets;
        state.outputs = self.outputs;
    }
}

/// One save: the version it made and what changed since the one before.
#[derive(Debug, Serialize, Deserialize)]
struct Record {
    format_version: u32,
    lineage: String,
    serial: u64,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    entries: BTreeMap<Address, Entry>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    small: Option<Small>,
}

/// The journal line recording `state` (already advanced to its new serial), given the addresses
/// touched since the previous version and that version's small fields; with the small fields and the
/// version (lineage, serial) it records.
///
/// # Panics
/// Never: the caller saves only states with a lineage (it was assigned by the first, whole save).
pub(super) fn encode(state: &State, touched: &Touched, previous: &Small) -> (Vec<u8>, Small, (String, u64)) {
    let entries = touched
        .iter()
        .map(|a| {
            let entry = Entry {
                resource: state.resources.get(a).cloned(),
                generation: state.generations.get(a).copied(),
                intent: state.intents.get(a).cloned(),
            };
            (a.clone(), entry)
        })
        .collect();
    let small = Small::of(state);
    let lineage = state.lineage.clone().expect("a journaled state has a lineage: its first save was whole");
    let record = Record {
        format_version: state.format_version,
        lineage: lineage.clone(),
        serial: state.serial,
        entries,
        small: (small != *previous).then(|| small.clone()),
    };
    // Every map key is an address or a string: serializing cannot fail.
    let json = serde_json::to_vec(&record).unwrap_or_default();
    let mut line = Vec::with_capacity(json.len() + 66);
    line.extend_from_slice(hex::encode(Sha256::digest(&json)).as_bytes());
    line.push(b' ');
    line.extend_from_slice(&json);
    line.push(b'\n');
    (line, small, (lineage, state.serial))
}

/// What [`replay`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) struct Replayed {
    /// Bytes of whole records: where the next record goes (past them, a torn record may follow).
    pub(super) valid_len: u64,
    /// Records applied (the rest were at or below the file's serial).
    pub(super) applied: usize,
    /// Whether a torn last record was ignored.
    pub(super) torn: bool,
}

/// Applies the journal's records, `bytes`, over `state` (the state file's content). See the module
/// documentation for the rules.
///
/// # Errors
/// [`StateErrorKind::Journal`] for a damaged record with whole ones after it, a record of another
/// lineage or one that skips a serial; [`StateErrorKind::Version`] for a record of a newer format.
pub(super) fn replay(bytes: &[u8], state: &mut State) -> Result<Replayed, StateErrorKind> {
    let mut replayed = Replayed::default();
    let mut offset = 0;
    let mut number = 0;
    while offset < bytes.len() {
        number += 1;
        let rest = &bytes[offset..];
        let (line, next) = match rest.iter().position(|&b| b == b'\n') {
            Some(end) => (&rest[..end], offset + end + 1),
            None => (rest, bytes.len()),
        };
        let unterminated = next == bytes.len() && !rest.ends_with(b"\n");
        let record = match parse(line, unterminated) {
            Ok(Some(record)) => record,
            Ok(None) if next == bytes.len() => {
                // A save cut short: it never returned, so nothing was done on its strength.
                replayed.torn = true;
                break;
            }
            Ok(None) => return Err(damaged(number, "its checksum does not match, and records follow it")),
            Err(why) => return Err(damaged(number, &why)),
        };
        let applied = apply(record, state).map_err(|kind| match kind {
            StateErrorKind::Journal { reason, .. } => StateErrorKind::Journal { record: number, reason },
            other => other,
        })?;
        if applied {
            replayed.applied += 1;
        }
        offset = next;
        replayed.valid_len = next as u64;
    }
    Ok(replayed)
}

/// A whole record; `None` when the line is torn (cut short, or its checksum does not match).
///
/// # Errors
/// A line whose checksum matches but that is not a record: not a crash's doing, so never ignored.
fn parse(line: &[u8], unterminated: bool) -> Result<Option<Record>, String> {
    if unterminated || line.len() < 65 || line[64] != b' ' {
        return Ok(None);
    }
    let (sum, json) = (&line[..64], &line[65..]);
    if hex::encode(Sha256::digest(json)).as_bytes() != sum {
        return Ok(None);
    }
    serde_json::from_slice(json).map(Some).map_err(|e| format!("it is not a journal record ({e})"))
}

/// Applies one record; `Ok(false)` when the file already holds it.
fn apply(record: Record, state: &mut State) -> Result<bool, StateErrorKind> {
    if record.format_version > STATE_FORMAT_VERSION {
        return Err(StateErrorKind::Version {
            found: record.format_version,
            supported: STATE_FORMAT_VERSION,
        });
    }
    if state.lineage.as_deref() != Some(record.lineage.as_str()) {
        let file = state.lineage.as_deref().unwrap_or("none (no state file)");
        return Err(damaged(
            0,
            &format!("it continues lineage {}, the state file's is {file}", record.lineage),
        ));
    }
    if record.serial <= state.serial {
        return Ok(false);
    }
    if record.serial != state.serial + 1 {
        return Err(damaged(
            0,
            &format!("it is serial {}, and the state before it is serial {}", record.serial, state.serial),
        ));
    }
    if record.serial == u64::MAX {
        return Err(StateErrorKind::SerialExhausted);
    }
    for (address, entry) in record.entries {
        set(&mut state.resources, &address, entry.resource);
        set(&mut state.generations, &address, entry.generation);
        set(&mut state.intents, &address, entry.intent);
    }
    if let Some(small) = record.small {
        small.apply(state);
    }
    state.serial = record.serial;
    state.format_version = record.format_version;
    Ok(true)
}

fn set<T>(map: &mut BTreeMap<Address, T>, address: &Address, value: Option<T>) {
    match value {
        Some(v) => {
            map.insert(address.clone(), v);
        }
        None => {
            map.remove(address);
        }
    }
}

fn damaged(record: usize, reason: &str) -> StateErrorKind {
    StateErrorKind::Journal { record, reason: reason.to_string() }
}

/// Reads the journal at `path`, at most `max` bytes; `None` when there is none.
///
/// Only a regular file is read, and never through a symlink: the journal is always written in place
/// by peerfleet, so anything else at its path was put there by someone else.
pub(super) fn read(path: &Path, max: u64) -> io::Result<Option<Vec<u8>>> {
    let named = match fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    ensure_plain_file(&named)?;
    let file = File::open(path)?;
    ensure_same(&file, &named)?;
    let len = file.metadata()?.len();
    crate::input::read_capped(file, len, max).map(Some)
}

/// Appends `line` to the journal at `path` at offset `at` (the end of its whole records: a torn record
/// a killed run left past it is cut off first), and syncs it to disk before returning. Creates the
/// journal (mode 0600) when `at` is 0 and there is none, and then syncs its directory too, so the new
/// file's name survives a power cut as well as its content.
///
/// # Errors
/// The usual I/O errors; [`io::ErrorKind::InvalidInput`] when something other than a regular file is
/// at `path`; [`io::ErrorKind::UnexpectedEof`] when the journal is shorter than `at` (someone removed
/// or cut it: the caller then writes the whole state instead).
pub(super) fn append(path: &Path, at: u64, line: &[u8]) -> io::Result<()> {
    let (mut file, created) = match fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound && at == 0 => (create(path)?, true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(shorter(at)),
        Err(e) => return Err(e),
        Ok(named) => {
            ensure_plain_file(&named)?;
            let file = OpenOptions::new().write(true).open(path)?;
            ensure_same(&file, &named)?;
            (file, false)
        }
    };
    let len = file.metadata()?.len();
    if len < at {
        return Err(shorter(at));
    }
    if len > at {
        file.set_len(at)?;
    }
    io::Seek::seek(&mut file, io::SeekFrom::Start(at))?;
    file.write_all(line)?;
    file.sync_data()?;
    if created {
        crate::atomic::sync_dir(super::local::parent_dir(path))?;
    }
    Ok(())
}

/// Removes the journal, if there is one.
pub(super) fn remove(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

fn create(path: &Path) -> io::Result<File> {
    let mut options = OpenOptions::new();
    // `create_new` (O_EXCL) never follows a symlink, not even a dangling one.
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(PRIVATE_FILE);
    }
    options.open(path)
}

fn ensure_plain_file(meta: &fs::Metadata) -> io::Result<()> {
    if meta.is_file() {
        return Ok(());
    }
    Err(io::Error::new(io::ErrorKind::InvalidInput, "the journal is not a regular file (a symlink?)"))
}

/// Checks that the opened file is the one whose metadata was read from the path (not something
/// swapped in between).
#[cfg(unix)]
fn ensure_same(file: &File, named: &fs::Metadata) -> io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let opened = file.metadata()?;
    if opened.dev() == named.dev() && opened.ino() == named.ino() {
        return Ok(());
    }
    Err(io::Error::new(io::ErrorKind::InvalidInput, "the journal was replaced while being opened"))
}

#[cfg(not(unix))]
fn ensure_same(_file: &File, _named: &fs::Metadata) -> io::Result<()> {
    Ok(())
}

fn shorter(at: u64) -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        format!("the journal is shorter than the {at} bytes written to it"),
    )
}

#[cfg(test)]
mod tests;
