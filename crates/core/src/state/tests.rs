use std::time::Duration;

use super::*;
use crate::network::ProviderKind;
use crate::resource::Firewall;

fn sample_state() -> State {
    let mut s = State::new();
    let fw = Address::firewall(ProviderKind::Aws, "us-east-1");
    s.resources
        .insert(fw.clone(), Actual::Firewall(Firewall { id: "sg-1".into(), address: fw, rules: vec![] }));
    s.generations.insert(Address::machine("virginia", 0), 3);
    s.intents.insert(
        Address::machine("oregon", 0),
        Intent {
            action: Action::Create,
            idempotency_key: Some("key-1".into()),
            generation: Some(1),
            started_at: Timestamp::now(),
        },
    );
    s.secrets.insert("ca_key".into(), Secret::new("-----BEGIN PRIVATE KEY----- very secret"));
    s.outputs.insert("chain_id".into(), "abc".into());
    s.chain = Some(ChainPin::new(b"{\"genesis\":true}"));
    s
}

async fn in_time<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(20), f).await.expect("test hung")
}

#[test]
fn state_round_trips_through_json() {
    let s = sample_state();
    let back = State::from_json(&s.to_json()).unwrap();
    assert_eq!(back, s);
}

#[test]
fn secrets_never_show_in_debug_output() {
    let text = format!("{:?}", sample_state());
    assert!(!text.contains("very secret"), "{text}");
    assert!(text.contains("redacted"));
}

#[test]
fn a_newer_state_format_asks_for_an_upgrade() {
    let mut json: serde_json::Value = serde_json::from_slice(&State::new().to_json()).unwrap();
    json["format_version"] = (STATE_FORMAT_VERSION + 1).into();
    json["something_new"] = true.into();
    let err = State::from_json(json.to_string().as_bytes()).unwrap_err();
    assert!(matches!(err, StateErrorKind::Version { .. }), "{err}");
    assert!(err.to_string().contains("upgrade"));
}

#[test]
fn chain_pin_keeps_bytes_that_hash_to_its_id() {
    let pin = ChainPin::new(b"genesis bytes");
    assert_eq!(pin.id, ChainId::of(b"genesis bytes"));
    assert_eq!(pin.genesis().as_deref(), Some(&b"genesis bytes"[..]));
    let tampered = ChainPin { genesis_b64: ChainPin::new(b"other").genesis_b64, ..pin };
    assert_eq!(tampered.genesis(), None);
}

#[test]
fn last_generation_counts_in_flight_intents() {
    let s = sample_state();
    assert_eq!(s.last_generation(&Address::machine("virginia", 0)), Some(3));
    assert_eq!(s.last_generation(&Address::machine("oregon", 0)), Some(1));
    assert_eq!(s.last_generation(&Address::machine("london", 0)), None);
}

#[test]
fn default_state_path_sits_next_to_the_spec() {
    assert_eq!(
        default_state_path(Path::new("deploy/network.toml"), "testnet"),
        PathBuf::from("deploy/.peerfleet/testnet.state.json")
    );
    assert_eq!(
        default_state_path(Path::new("network.toml"), "a/../b"),
        PathBuf::from("./.peerfleet/a_.._b.state.json")
    );
    assert_eq!(default_state_path(Path::new("n.toml"), ".."), PathBuf::from("./.peerfleet/_...state.json"));
}

#[tokio::test]
async fn save_assigns_lineage_once_and_counts_serials() {
    let store = MemoryState::new();
    let mut s = store.load().await.unwrap();
    assert_eq!((s.lineage.as_deref(), s.serial), (None, 0));
    store.save(&mut s).await.unwrap();
    let lineage = s.lineage.clone().unwrap();
    assert_eq!(s.serial, 1);
    store.save(&mut s).await.unwrap();
    assert_eq!((s.lineage.as_deref(), s.serial), (Some(lineage.as_str()), 2));
    assert_eq!(store.current(), s);
}

#[tokio::test]
async fn failed_save_keeps_the_previous_serial() {
    let store = MemoryState::new();
    let mut s = State::new();
    store.save(&mut s).await.unwrap();
    store.fail_writes(1);
    assert!(store.save(&mut s).await.is_err());
    assert_eq!(s.serial, 1);
    assert_eq!(store.current().serial, 1);
}

mod local_file {
    use super::*;

    #[cfg(unix)]
    fn mode(path: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    fn dir_entries(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[tokio::test]
    async fn a_missing_state_file_is_an_empty_state() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStateFile::new(dir.path().join("nothing.json"));
        assert_eq!(store.load().await.unwrap(), State::new());
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn saved_state_is_private_to_its_owner() {
        let dir = tempfile::tempdir().unwrap();
        let path = default_state_path(&dir.path().join("network.toml"), "testnet");
        let store = LocalStateFile::new(&path);
        let mut s = sample_state();
        store.save(&mut s).await.unwrap();
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(path.parent().unwrap()), 0o700);
        assert_eq!(store.load().await.unwrap(), s);
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn a_world_readable_state_file_is_made_private_on_load() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.json");
        std::fs::write(&path, State::new().to_json()).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        LocalStateFile::new(&path).load().await.unwrap();
        assert_eq!(mode(&path), 0o600);
    }

    #[test]
    fn a_failed_write_leaves_the_old_file_whole_and_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.json");
        let store = LocalStateFile::new(&path);
        let mut old = State::new();
        old.serial = 7;
        store.write_sync(&old).unwrap();
        let before = std::fs::read(&path).unwrap();

        let new = sample_state();
        let err = store
            .write_with(&new.to_json(), |f, bytes| {
                // Half the bytes reach the disk, then the disk is "full".
                f.write_all(&bytes[..bytes.len() / 2])?;
                Err(io::Error::other("no space left on device"))
            })
            .unwrap_err();
        assert!(matches!(err.kind(), StateErrorKind::Io { .. }), "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), before);
        assert_eq!(dir_entries(dir.path()), ["s.json"]);
    }

    #[test]
    fn a_failed_rename_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        // A directory in the state file's place: the final rename fails.
        let path = dir.path().join("s.json");
        std::fs::create_dir(&path).unwrap();
        std::fs::write(path.join("inside"), b"x").unwrap();
        let err = LocalStateFile::new(&path).write_sync(&sample_state()).unwrap_err();
        assert!(err.to_string().contains("cannot replace the state file"), "{err}");
        assert_eq!(dir_entries(dir.path()), ["s.json"]);
    }

    #[test]
    fn a_corrupt_state_file_is_named_with_its_position() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.json");
        std::fs::write(&path, b"{\"format_version\": 1,\n \"serial\": }").unwrap();
        let err = LocalStateFile::new(&path).load_sync().unwrap_err();
        let chain = format!("{err}: {}", std::error::Error::source(&err).unwrap());
        assert!(chain.contains("s.json") && chain.contains("line 2"), "{chain}");
    }

    use std::io::{self, Write};

    #[tokio::test]
    async fn a_second_lock_fails_at_once_naming_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStateFile::new(dir.path().join("s.json"));
        let held = in_time(store.lock("apply", &LockOptions::default())).await.unwrap();
        let started = std::time::Instant::now();
        let err = in_time(store.lock("apply", &LockOptions::default())).await.err().unwrap();
        assert!(started.elapsed() < Duration::from_secs(1));
        assert!(matches!(err.kind(), StateErrorKind::Locked(_)), "{err}");
        let text = err.to_string();
        let me = held.info();
        for part in [
            me.owner.as_str(),
            &format!("pid {}", me.pid),
            me.host.as_str(),
            &me.created_at.to_string(),
            "apply",
        ] {
            assert!(text.contains(part), "{text} lacks {part}");
        }
        assert_eq!(err.lock_holder(), Some(me));
        #[cfg(unix)]
        assert_eq!(mode(&store.lock_path()), 0o600);
        held.release().await.unwrap();
        assert!(!store.lock_path().exists());
        in_time(store.lock("apply", &LockOptions::default())).await.unwrap();
    }

    #[tokio::test]
    async fn a_waiting_lock_gets_it_when_the_holder_releases() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStateFile::new(dir.path().join("s.json"));
        let held = store.lock("apply", &LockOptions::default()).await.unwrap();
        let releaser = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            held.release().await.unwrap();
        });
        let options = LockOptions {
            timeout: Duration::from_secs(10),
            poll: Duration::from_millis(20),
            ..Default::default()
        };
        let started = std::time::Instant::now();
        let lock = in_time(store.lock("apply", &options)).await.unwrap();
        assert!(started.elapsed() >= Duration::from_millis(250));
        assert!(lock.took_over().is_none());
        releaser.await.unwrap();
    }

    #[tokio::test]
    async fn a_waiting_lock_gives_up_after_its_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStateFile::new(dir.path().join("s.json"));
        let _held = store.lock("destroy", &LockOptions::default()).await.unwrap();
        let options = LockOptions {
            timeout: Duration::from_millis(300),
            poll: Duration::from_millis(20),
            ..Default::default()
        };
        let started = std::time::Instant::now();
        let err = in_time(store.lock("apply", &options)).await.err().unwrap();
        assert!(started.elapsed() >= Duration::from_millis(300));
        assert!(matches!(err.kind(), StateErrorKind::LockTimeout { .. }), "{err}");
        assert!(err.to_string().contains("still locked by") && err.to_string().contains("destroy"), "{err}");
    }

    fn abandoned_lock(path: &Path) -> LockInfo {
        let mut ghost = LockInfo::for_this_process("apply", Duration::ZERO);
        ghost.pid = 999_999;
        ghost.host = "crashed-host".into();
        ghost.created_at = Timestamp::parse("2020-01-01T00:00:00Z").unwrap();
        ghost.lease_expires_at = Timestamp::parse("2020-01-01T00:02:00Z").unwrap();
        std::fs::write(path, serde_json::to_vec(&ghost).unwrap()).unwrap();
        ghost
    }

    #[tokio::test]
    async fn taking_the_lock_removes_temporary_files_a_killed_writer_left() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStateFile::new(dir.path().join("s.json"));
        let mut s = sample_state();
        store.save(&mut s).await.unwrap();
        // What a kill -9 between creating the temporary file and renaming it leaves behind.
        for left in [".s.json.tmp.4242.0badf00d", ".s.json.lock.tmp.4242.0badf00d"] {
            std::fs::write(dir.path().join(left), b"half").unwrap();
        }
        // Someone else's files in the same directory are not ours to remove.
        std::fs::write(dir.path().join(".other.json.tmp.1.2"), b"x").unwrap();
        let lock = in_time(store.lock("apply", &LockOptions::default())).await.unwrap();
        assert_eq!(dir_entries(dir.path()), [".other.json.tmp.1.2", "s.json", "s.json.lock"]);
        lock.release().await.unwrap();
        assert_eq!(store.load().await.unwrap(), s);
    }

    #[tokio::test]
    async fn an_expired_lease_is_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStateFile::new(dir.path().join("s.json"));
        let ghost = abandoned_lock(&store.lock_path());
        let lock = in_time(store.lock("apply", &LockOptions::default())).await.unwrap();
        assert_eq!(lock.took_over(), Some(&ghost));
        assert_eq!(lock.info().pid, std::process::id());
        let on_disk: LockInfo = serde_json::from_slice(&std::fs::read(store.lock_path()).unwrap()).unwrap();
        assert_eq!(&on_disk, lock.info());
        assert_eq!(dir_entries(dir.path()), ["s.json.lock"]);
    }

    #[tokio::test]
    async fn renewing_extends_the_lease_and_notices_a_take_over() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStateFile::new(dir.path().join("s.json"));
        let options = LockOptions { lease: Duration::from_secs(60), ..Default::default() };
        let mut lock = store.lock("apply", &options).await.unwrap();
        let first = lock.info().lease_expires_at;
        tokio::time::sleep(Duration::from_millis(5)).await;
        lock.renew().await.unwrap();
        assert!(lock.info().lease_expires_at > first);

        // Someone force-unlocks and takes the lock: our renewal must fail, and our release must not
        // remove their lock.
        store.force_unlock().await.unwrap();
        let theirs = store.lock("apply", &options).await.unwrap();
        let err = lock.renew().await.unwrap_err();
        assert!(matches!(err.kind(), StateErrorKind::LockLost(Some(_))), "{err}");
        lock.release().await.unwrap();
        assert!(store.lock_path().exists());
        drop(theirs);
        assert!(!store.lock_path().exists(), "dropping a lock releases it");
    }

    #[tokio::test]
    async fn force_unlock_removes_the_lock_and_names_who_held_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStateFile::new(dir.path().join("s.json"));
        assert_eq!(force_unlock(store.path()).unwrap(), None);
        let held = store.lock("apply", &LockOptions::default()).await.unwrap();
        let info = held.info().clone();
        std::mem::forget(held); // the holder "crashed": no release
        assert_eq!(force_unlock(store.path()).unwrap(), Some(info));
        assert!(!store.lock_path().exists());
        store.lock("apply", &LockOptions::default()).await.unwrap();
    }

    #[tokio::test]
    async fn an_unreadable_lock_file_is_reported_not_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStateFile::new(dir.path().join("s.json"));
        std::fs::write(store.lock_path(), b"garbage").unwrap();
        let err = in_time(store.lock("apply", &LockOptions::default())).await.err().unwrap();
        assert!(matches!(err.kind(), StateErrorKind::LockUnreadable), "{err}");
        assert!(err.to_string().contains("force-unlock"));
        assert_eq!(force_unlock(store.path()).unwrap(), None);
        store.lock("apply", &LockOptions::default()).await.unwrap();
    }
}

mod memory_backend {
    use super::*;

    #[tokio::test]
    async fn memory_lock_has_the_same_semantics() {
        let store = MemoryState::new();
        let held = store.lock("apply", &LockOptions::default()).await.unwrap();
        let err = store.lock("apply", &LockOptions::default()).await.err().unwrap();
        assert!(matches!(err.kind(), StateErrorKind::Locked(h) if **h == *held.info()));
        drop(held);
        assert_eq!(store.holder(), None);

        let mut ghost = LockInfo::for_this_process("apply", Duration::ZERO);
        ghost.host = "gone".into();
        store.set_holder(Some(ghost.clone()));
        let lock = in_time(store.lock("apply", &LockOptions::default())).await.unwrap();
        assert_eq!(lock.took_over(), Some(&ghost));
    }
}
