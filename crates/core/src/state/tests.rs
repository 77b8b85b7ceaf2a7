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
fn a_serial_with_no_successor_is_refused_on_reading() {
    let mut json: serde_json::Value = serde_json::from_slice(&State::new().to_json()).unwrap();
    json["serial"] = u64::MAX.into();
    let err = State::from_json(json.to_string().as_bytes()).unwrap_err();
    assert!(matches!(err, StateErrorKind::SerialExhausted), "{err}");
}

#[test]
fn a_chain_id_that_is_not_64_lowercase_hex_digits_is_refused_on_reading() {
    for id in ["a€€€€€€€", "ABCDEF", &"A".repeat(64), &"0".repeat(63)] {
        let mut json: serde_json::Value = serde_json::from_slice(&sample_state().to_json()).unwrap();
        json["chain"]["id"] = id.into();
        let err = State::from_json(json.to_string().as_bytes()).unwrap_err();
        assert!(err.to_string().contains("not a valid peerfleet state file"), "{id}: {err}");
    }
}

#[test]
fn a_state_is_claimed_by_one_network_and_refuses_another() {
    let mut state = State::new();
    state.claim("alpha").unwrap();
    assert_eq!(state.network.as_deref(), Some("alpha"));
    state.claim("alpha").unwrap();
    let err = state.claim("beta").unwrap_err();
    assert!(matches!(err, StateErrorKind::OtherNetwork { .. }), "{err}");
    assert!(err.to_string().contains("network \"alpha\"'s, but the spec declares `beta`"), "{err}");
}

#[tokio::test]
async fn a_save_never_wraps_the_serial() {
    let store = MemoryState::new();
    let mut state = State::new();
    state.serial = u64::MAX;
    let err = store.save(&mut state).await.unwrap_err();
    assert!(matches!(err.kind(), StateErrorKind::SerialExhausted), "{err}");
    assert_eq!(state.serial, u64::MAX);
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
    fn a_file_that_is_not_state_is_refused_without_touching_its_mode() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let spec = dir.path().join("network.toml");
        std::fs::write(&spec, b"name = \"x\"\n").unwrap();
        std::fs::set_permissions(&spec, std::fs::Permissions::from_mode(0o644)).unwrap();
        let link = dir.path().join("s.json");
        std::os::unix::fs::symlink(&spec, &link).unwrap();
        for path in [&spec, &link] {
            let err = LocalStateFile::new(path).load_sync().unwrap_err();
            assert!(matches!(err.kind(), StateErrorKind::Corrupt(_)), "{err}");
        }
        assert_eq!(mode(&spec), 0o644);
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
            .write_with(&new, |f, bytes| {
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

    fn leftover_lock(path: &Path) -> LockInfo {
        let mut ghost = LockInfo::without_lease("apply");
        ghost.pid = 999_999;
        ghost.host = "crashed-host".into();
        ghost.created_at = Timestamp::parse("2020-01-01T00:00:00Z").unwrap();
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
    async fn a_lock_file_left_by_a_dead_run_is_free_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStateFile::new(dir.path().join("s.json"));
        leftover_lock(&store.lock_path());
        let started = std::time::Instant::now();
        let lock = in_time(store.lock("apply", &LockOptions::default())).await.unwrap();
        assert!(started.elapsed() < Duration::from_secs(1), "no lease to wait for");
        assert!(lock.took_over().is_none() && lock.lease().is_none());
        let on_disk: LockInfo = serde_json::from_slice(&std::fs::read(store.lock_path()).unwrap()).unwrap();
        assert_eq!(&on_disk, lock.info());
        assert_eq!(dir_entries(dir.path()), ["s.json.lock"]);
    }

    /// Not a test of its own: the child process of
    /// `a_holder_killed_with_sigkill_frees_the_lock_at_once`, which runs it with
    /// `PEERFLEET_LOCK_CHILD` set to a state path. It takes the lock, says so, and waits to be killed.
    #[tokio::test]
    #[ignore = "run as a child process by a_holder_killed_with_sigkill_frees_the_lock_at_once"]
    async fn lock_holder_child() {
        let path = std::env::var("PEERFLEET_LOCK_CHILD").expect("run by the parent test only");
        let lock = LocalStateFile::new(path).lock("apply", &LockOptions::default()).await.unwrap();
        println!("LOCKED {}", lock.info().pid);
        tokio::time::sleep(Duration::from_secs(60)).await;
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn a_holder_killed_with_sigkill_frees_the_lock_at_once() {
        use std::io::BufRead;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.json");
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "state::tests::local_file::lock_holder_child", "--ignored", "--nocapture"])
            .env("PEERFLEET_LOCK_CHILD", &path)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let locked = lines.find_map(|l| l.ok().filter(|l| l.starts_with("LOCKED "))).expect("child locked");
        assert_eq!(locked, format!("LOCKED {}", child.id()));

        let store = LocalStateFile::new(&path);
        let err = in_time(store.lock("apply", &LockOptions::default())).await.err().unwrap();
        assert_eq!(err.lock_holder().map(|h| h.pid), Some(child.id()), "{err}");
        let refused = force_unlock(&path).unwrap_err();
        assert!(matches!(refused.kind(), StateErrorKind::HeldByRunningProcess(_)), "{refused}");
        assert!(refused.to_string().contains(&format!("pid {}", child.id())), "{refused}");

        child.kill().unwrap(); // SIGKILL: no destructor, no cleanup in the child
        child.wait().unwrap();
        let started = std::time::Instant::now();
        let lock = in_time(store.lock("apply", &LockOptions::default())).await.unwrap();
        assert!(started.elapsed() < Duration::from_secs(1), "no lease, no force-unlock");
        assert_eq!(lock.info().pid, std::process::id());
    }

    #[tokio::test]
    async fn a_lock_file_removed_by_hand_is_noticed_on_renew() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStateFile::new(dir.path().join("s.json"));
        let mut lock = store.lock("apply", &LockOptions::default()).await.unwrap();
        lock.renew().await.unwrap();
        std::fs::remove_file(store.lock_path()).unwrap();
        let theirs = store.lock("apply", &LockOptions::default()).await.unwrap();
        let err = lock.renew().await.unwrap_err();
        assert!(matches!(err.kind(), StateErrorKind::LockLost(Some(_))), "{err}");
        // Our release must not remove their lock.
        lock.release().await.unwrap();
        assert!(store.lock_path().exists());
        drop(theirs);
        assert!(!store.lock_path().exists(), "dropping a lock releases it");
    }

    #[tokio::test]
    async fn force_unlock_tidies_a_leftover_and_never_breaks_a_live_lock() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStateFile::new(dir.path().join("s.json"));
        assert_eq!(force_unlock(store.path()).unwrap(), None);
        let ghost = leftover_lock(&store.lock_path());
        assert_eq!(force_unlock(store.path()).unwrap(), Some(ghost));
        assert!(!store.lock_path().exists());

        let held = store.lock("apply", &LockOptions::default()).await.unwrap();
        let err = force_unlock(store.path()).unwrap_err();
        assert_eq!(err.lock_holder(), Some(held.info()), "{err}");
        assert!(err.to_string().contains("still running"), "{err}");
        assert!(store.lock_path().exists());
    }

    #[tokio::test]
    async fn a_lock_file_peerfleet_did_not_write_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStateFile::new(dir.path().join("s.json"));
        std::fs::write(store.lock_path(), b"garbage").unwrap();
        let err = in_time(store.lock("apply", &LockOptions::default())).await.err().unwrap();
        assert!(matches!(err.kind(), StateErrorKind::LockUnreadable), "{err}");
        assert!(err.to_string().contains("remove it by hand"), "{err}");
        // Not a lock peerfleet wrote: force-unlock leaves it (it may be someone else's file).
        let refused = force_unlock(store.path()).unwrap_err();
        assert!(matches!(refused.kind(), StateErrorKind::NotALock { .. }), "{refused}");
        assert_eq!(std::fs::read(store.lock_path()).unwrap(), b"garbage");
        std::fs::remove_file(store.lock_path()).unwrap();
        store.lock("apply", &LockOptions::default()).await.unwrap();
    }

    #[test]
    fn a_holder_without_a_user_name_is_named_by_pid_and_host() {
        let mut info = LockInfo::without_lease("apply");
        info.owner = String::new();
        info.host = "build-7".into();
        let text = info.to_string();
        assert!(text.starts_with(&format!("pid {} on host build-7, running `apply`", info.pid)), "{text}");
        assert!(!text.contains("unknown") && !text.contains("lease"), "{text}");
        info.owner = "alice".into();
        assert!(info.to_string().contains("(user alice)"));
    }

    #[tokio::test]
    async fn an_empty_lock_file_left_by_a_crash_is_force_unlocked() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStateFile::new(dir.path().join("s.json"));
        std::fs::write(store.lock_path(), b"").unwrap();
        assert_eq!(force_unlock(store.path()).unwrap(), None);
        assert!(!store.lock_path().exists());
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

    #[tokio::test]
    async fn a_kept_renewed_lock_outlives_its_lease_while_the_holder_is_busy() {
        let store = MemoryState::new();
        let options = LockOptions { lease: Duration::from_millis(300), ..Default::default() };
        let lock = keep_renewed(store.lock("apply", &options).await.unwrap());
        // Three leases pass without the holder doing anything (a confirmation prompt waits).
        tokio::time::sleep(Duration::from_millis(900)).await;
        let err = store.lock("apply", &options).await.err().unwrap();
        assert!(matches!(err.kind(), StateErrorKind::Locked(_)), "{err}");
        lock.release().await.unwrap();
        assert_eq!(store.holder(), None);
    }

    #[tokio::test]
    async fn a_kept_renewed_lock_reports_a_take_over_on_its_next_renew() {
        let store = MemoryState::new();
        let options = LockOptions { lease: Duration::from_millis(150), ..Default::default() };
        let mut lock = keep_renewed(store.lock("apply", &options).await.unwrap());
        store.set_holder(Some(LockInfo::for_this_process("apply", Duration::from_secs(60))));
        tokio::time::sleep(Duration::from_millis(200)).await;
        let err = lock.renew().await.unwrap_err();
        assert!(matches!(err.kind(), StateErrorKind::LockLost(Some(_))), "{err}");
    }
}
