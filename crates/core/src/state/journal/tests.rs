// Tests may unwrap: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::path::Path;

use super::*;
use crate::network::ProviderKind;
use crate::plan::Action;
use crate::resource::Firewall;
use crate::state::{LocalStateFile, StateBackend, Timestamp};

fn firewall(n: usize) -> (Address, Actual) {
    let address = Address::firewall(ProviderKind::Aws, format!("region-{n}"));
    let rules = vec![];
    (address.clone(), Actual::Firewall(Firewall { id: format!("sg-{n}"), address, rules }))
}

fn intent() -> Intent {
    Intent {
        action: Action::Create,
        idempotency_key: Some("key".into()),
        generation: Some(2),
        started_at: Timestamp::now(),
    }
}

/// A store in a fresh directory holding a whole state of `n` firewalls and a secret, saved once.
async fn saved(n: usize) -> (tempfile::TempDir, LocalStateFile, State) {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStateFile::new(dir.path().join("s.json"));
    let mut state = State::new();
    state.resources.extend((0..n).map(firewall));
    state.secrets.insert("ca_key".into(), Secret::new("-----BEGIN PRIVATE KEY----- very secret"));
    store.save(&mut state).await.unwrap();
    (dir, store, state)
}

/// Changes the state at firewall `n` (a new resource, or a new ID) and one intent, then saves only
/// that through the journal.
async fn change_and_save(store: &LocalStateFile, state: &mut State, n: usize) {
    let mut touched = Touched::new();
    let (address, mut actual) = firewall(n);
    if let Actual::Firewall(f) = &mut actual {
        f.id = format!("sg-{n}-s{}", state.serial);
    }
    state.resources.insert(address.clone(), actual);
    touched.insert(&address);
    let machine = Address::machine("virginia", n as u32);
    state.intents.insert(machine.clone(), intent());
    state.generations.insert(machine.clone(), 2);
    touched.insert(&machine);
    store.save_touched(state, &touched).await.unwrap();
}

/// A saved state with two records in its journal: the version after the first, and after both.
async fn two_records() -> (tempfile::TempDir, LocalStateFile, State, State) {
    let (dir, store, mut state) = saved(5).await;
    change_and_save(&store, &mut state, 7).await;
    let first = state.clone();
    change_and_save(&store, &mut state, 8).await;
    (dir, store, first, state)
}

/// The file alone holds `state`: there is no journal.
fn assert_whole(store: &LocalStateFile, state: &State) {
    assert!(!store.journal_path().exists());
    assert_eq!(&State::from_json(&std::fs::read(store.path()).unwrap()).unwrap(), state);
}

fn lines(path: &Path) -> usize {
    std::fs::read(path).map(|b| b.iter().filter(|&&c| c == b'\n').count()).unwrap_or(0)
}

#[tokio::test]
async fn saves_append_what_changed_and_loading_replays_it_over_the_file() {
    let (_dir, store, mut state) = saved(50).await;
    let file = std::fs::read(store.path()).unwrap();
    for n in 0..5 {
        change_and_save(&store, &mut state, n * 20).await;
    }
    // Removals are records too.
    let mut touched = Touched::new();
    let gone = firewall(1).0;
    state.resources.remove(&gone);
    touched.insert(&gone);
    state.outputs.insert("chain_id".into(), "abc".into());
    store.save_touched(&mut state, &touched).await.unwrap();

    assert_eq!(std::fs::read(store.path()).unwrap(), file, "the file is not rewritten");
    assert_eq!(lines(&store.journal_path()), 6);
    assert_eq!(state.serial, 7);
    assert_eq!(LocalStateFile::new(store.path()).load().await.unwrap(), state);

    store.compact(&state).await.unwrap();
    assert_whole(&store, &state);
}

#[tokio::test]
async fn a_record_cut_short_by_a_crash_is_ignored_and_cut_off_by_the_next_save() {
    let (_dir, store, before, _) = two_records().await;
    // The crash: the second record's last bytes never reached the disk.
    let journal = store.journal_path();
    let bytes = std::fs::read(&journal).unwrap();
    std::fs::write(&journal, &bytes[..bytes.len() - 10]).unwrap();

    let reopened = LocalStateFile::new(store.path());
    let mut loaded = reopened.load().await.unwrap();
    assert_eq!(loaded, before);
    change_and_save(&reopened, &mut loaded, 9).await;
    assert_eq!(lines(&journal), 2, "the torn record is gone, the new one follows the whole one");
    assert_eq!(LocalStateFile::new(store.path()).load().await.unwrap(), loaded);
}

#[tokio::test]
async fn zeros_a_file_system_left_after_a_power_cut_read_as_a_torn_record() {
    let (_dir, store, before, _) = two_records().await;
    let journal = store.journal_path();
    let mut bytes = std::fs::read(&journal).unwrap();
    let last = bytes.len() - 2;
    bytes[last - 100..last].fill(0);
    std::fs::write(&journal, &bytes).unwrap();
    assert_eq!(LocalStateFile::new(store.path()).load().await.unwrap(), before);
}

#[tokio::test]
async fn records_the_file_already_holds_are_skipped() {
    let (_dir, store, _, state) = two_records().await;
    let journal = std::fs::read(store.journal_path()).unwrap();
    store.compact(&state).await.unwrap();
    // The crash between rewriting the file and removing the journal.
    std::fs::write(store.journal_path(), &journal).unwrap();

    let reopened = LocalStateFile::new(store.path());
    let mut loaded = reopened.load().await.unwrap();
    assert_eq!(loaded, state);
    change_and_save(&reopened, &mut loaded, 9).await;
    assert_eq!(lines(&reopened.journal_path()), 3);
    assert_eq!(LocalStateFile::new(store.path()).load().await.unwrap(), loaded);
}

#[tokio::test]
async fn a_damaged_record_followed_by_whole_ones_is_an_error_naming_it() {
    let (_dir, store, _, _) = two_records().await;
    let journal = store.journal_path();
    let mut bytes = std::fs::read(&journal).unwrap();
    let sg = bytes.windows(4).position(|w| w == b"sg-7").unwrap();
    bytes[sg + 3] = b'6';
    std::fs::write(&journal, &bytes).unwrap();

    let err = LocalStateFile::new(store.path()).load().await.unwrap_err();
    assert!(matches!(err.kind(), StateErrorKind::Journal { record: 1, .. }), "{err}");
    assert!(err.to_string().contains("damaged at record 1"), "{err}");
}

#[tokio::test]
async fn a_record_that_does_not_continue_the_file_is_an_error() {
    let (_dir, store, mut state) = saved(5).await;
    change_and_save(&store, &mut state, 7).await;
    let journal = std::fs::read(store.journal_path()).unwrap();

    // Another lineage's file beside this journal.
    let other = LocalStateFile::new(store.path().with_file_name("other.json"));
    other.save(&mut State::new()).await.unwrap();
    std::fs::copy(other.path(), store.path()).unwrap();
    std::fs::write(store.journal_path(), &journal).unwrap();
    let err = LocalStateFile::new(store.path()).load().await.unwrap_err();
    assert!(err.to_string().contains("continues lineage"), "{err}");

    // A record that skips a serial.
    let (_dir, store, _, _) = two_records().await;
    let bytes = std::fs::read(store.journal_path()).unwrap();
    let second = bytes.iter().position(|&b| b == b'\n').unwrap() + 1;
    std::fs::write(store.journal_path(), &bytes[second..]).unwrap();
    let err = LocalStateFile::new(store.path()).load().await.unwrap_err();
    assert!(err.to_string().contains("serial 3, and the state before it is serial 1"), "{err}");
}

#[tokio::test]
async fn a_journal_without_its_state_file_is_an_error() {
    let (_dir, store, mut state) = saved(5).await;
    change_and_save(&store, &mut state, 7).await;
    std::fs::remove_file(store.path()).unwrap();
    let err = LocalStateFile::new(store.path()).load().await.unwrap_err();
    assert!(err.to_string().contains("no state file"), "{err}");
}

#[tokio::test]
async fn the_file_is_rewritten_once_the_journal_would_outgrow_it() {
    // Each save touches every firewall: about 600 KB a record, against a file of about 1.2 MB.
    let (_dir, store, mut state) = saved(6_000).await;
    let all = Touched { addresses: state.resources.keys().cloned().collect() };
    let mut rewrites = 0;
    for _ in 0..6 {
        let file = std::fs::read(store.path()).unwrap();
        store.save_touched(&mut state, &all).await.unwrap();
        let (file_len, journal_len) =
            (file.len() as u64, std::fs::metadata(store.journal_path()).map_or(0, |m| m.len()));
        assert!(
            journal_len <= file_len.max(crate::state::local::MIN_JOURNAL_BYTES),
            "{journal_len} > {file_len}"
        );
        if std::fs::read(store.path()).unwrap() != file {
            rewrites += 1;
            assert_eq!(journal_len, 0, "a rewritten file replaces the journal");
        }
    }
    assert!((2..=4).contains(&rewrites), "{rewrites} rewrites");
    assert_eq!(LocalStateFile::new(store.path()).load().await.unwrap(), state);
}

#[tokio::test]
async fn a_handle_that_did_not_load_the_stored_version_writes_it_whole() {
    let (_dir, store, mut state) = saved(5).await;
    change_and_save(&store, &mut state, 7).await;
    let stranger = LocalStateFile::new(store.path());
    let mut touched = Touched::new();
    let (address, actual) = firewall(9);
    state.resources.insert(address.clone(), actual);
    touched.insert(&address);
    stranger.save_touched(&mut state, &touched).await.unwrap();
    assert_whole(&store, &state);
}

#[tokio::test]
async fn writing_a_state_the_journal_does_not_lead_to_removes_the_journal_first() {
    let (_dir, store, mut state) = saved(5).await;
    change_and_save(&store, &mut state, 7).await;
    // Another network's history written over this one (`state migrate` onto the wrong file): the
    // journal must not survive to be replayed over it, whatever the handle knows.
    let mut other = State::new();
    other.lineage = Some("another".into());
    other.serial = 1;
    LocalStateFile::new(store.path()).write(&other).await.unwrap();
    assert!(!store.journal_path().exists());
    assert_eq!(LocalStateFile::new(store.path()).load().await.unwrap(), other);
}

#[cfg(unix)]
#[tokio::test]
async fn the_journal_is_private_and_never_reached_through_a_symlink() {
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let (dir, store, mut state) = saved(5).await;
    change_and_save(&store, &mut state, 7).await;
    let journal = store.journal_path();
    assert_eq!(mode(&journal), 0o600);
    std::fs::set_permissions(&journal, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut loaded = store.load().await.unwrap();
    assert_eq!(mode(&journal), 0o600, "made private again on load");

    // A symlink planted where the journal is: never read, never written through.
    let target = dir.path().join("elsewhere");
    std::fs::write(&target, b"not yours").unwrap();
    std::fs::remove_file(&journal).unwrap();
    std::os::unix::fs::symlink(&target, &journal).unwrap();
    let err = LocalStateFile::new(store.path()).load().await.unwrap_err();
    let cause = std::error::Error::source(&err).map(ToString::to_string).unwrap_or_default();
    assert!(cause.contains("not a regular file"), "{err}: {cause}");
    change_and_save(&store, &mut loaded, 8).await;
    assert_eq!(std::fs::read(&target).unwrap(), b"not yours");
    assert!(!journal.exists(), "the whole file was written instead, and the link removed");
    assert_eq!(LocalStateFile::new(store.path()).load().await.unwrap(), loaded);
}

#[test]
fn a_journal_over_the_size_limit_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.json.journal");
    std::fs::write(&path, vec![b'x'; 100]).unwrap();
    assert_eq!(read(&path, 100).unwrap().unwrap().len(), 100);
    let err = read(&path, 99).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::FileTooLarge);
}

#[tokio::test]
async fn secrets_reach_the_journal_only_in_the_form_the_file_keeps_them() {
    let (_dir, store, mut state) = saved(5).await;
    state.secrets.insert("seal".into(), Secret::new("another secret"));
    change_and_save(&store, &mut state, 7).await;
    let journal = String::from_utf8(std::fs::read(store.journal_path()).unwrap()).unwrap();
    let file = String::from_utf8(state.to_json()).unwrap();
    // The same serialisation as the file's: nothing the file would not hold.
    assert!(journal.contains("\"seal\":\"another secret\"") && file.contains("\"seal\": \"another secret\""));
    // Unchanged secrets are not written again.
    change_and_save(&store, &mut state, 8).await;
    let journal = String::from_utf8(std::fs::read(store.journal_path()).unwrap()).unwrap();
    assert_eq!(journal.matches("another secret").count(), 1);
}
