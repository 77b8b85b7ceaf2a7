//! A team's state on S3 (moto's S3, with moto's EC2 for the machine layer), through the CLI: two
//! concurrent applies, a holder killed mid-apply, `state migrate` there and back, encryption.
//!
//! The CLI reaches moto through the fault proxy, which forwards S3 conditional writes one at a time:
//! moto checks `If-None-Match`/`If-Match` but not atomically with the write, as S3 does (see
//! `peerfleet_aws::testing`). Only `--only machines` is ever applied: moto's machines have public
//! addresses nobody may dial.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use peerfleet::aws::testing::{self, FaultProxy, Moto};
use peerfleet::core::provider::MachineProvider;
use peerfleet::core::state::{LocalStateFile, Secret, State, StateBackend, StateKey};

use crate::clouds::{aws_profiles, example, moto, run};
use crate::support::parts;

const BUCKET: &str = "team-state";
const KEY: &str = "peerfleet/aws-eight-regions.json";

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

/// The conditional-write layer in front of moto, and the runtime it runs on; both live as long as
/// the test holds this.
struct Layer {
    proxy: FaultProxy,
    _runtime: tokio::runtime::Runtime,
}

/// The eight-region AWS example in a fresh directory, its environment pointing at `moto` through the
/// conditional-write layer, and the state bucket created.
fn setup(moto: &Moto) -> (tempfile::TempDir, Vec<(String, String)>, Layer) {
    let dir = example("aws_eight_regions.toml");
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let proxy = runtime.block_on(FaultProxy::start(moto.addr())).unwrap();
    let mut env = aws_profiles(dir.path());
    env.push(("AWS_ENDPOINT_URL".into(), proxy.endpoint()));
    env.push(("AWS_REGION".into(), "us-east-1".into()));
    rt().block_on(testing::create_bucket(&moto.endpoint(), BUCKET)).unwrap();
    (dir, env, Layer { proxy, _runtime: runtime })
}

/// Declares the S3 state in the spec's `[state]` table.
fn declare_s3_state(dir: &Path, extra: &str) {
    let spec = dir.join("network.toml");
    let mut text = std::fs::read_to_string(&spec).unwrap();
    text.push_str(&format!(
        "\n[state]\nbackend = \"s3\"\nbucket = \"{BUCKET}\"\nkey = \"{KEY}\"\nregion = \"us-east-1\"\nencryption = \"sse-s3\"\n{extra}"
    ));
    std::fs::write(spec, text).unwrap();
}

fn spawn(dir: &Path, env: &[(String, String)], args: &[&str]) -> Child {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_peerfleet"));
    cmd.args(args).current_dir(dir).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
    for key in
        ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE", "RUST_LOG", "PEERFLEET_STATE_KEY"]
    {
        cmd.env_remove(key);
    }
    cmd.env("AWS_EC2_METADATA_DISABLED", "true").env("NO_COLOR", "1");
    cmd.envs(env.iter().cloned()).spawn().unwrap()
}

/// The object at `key`, if any, as a bucket reader sees it.
fn object(moto: &Moto, key: &str) -> Option<Vec<u8>> {
    rt().block_on(async {
        let client = testing::s3_client(&moto.endpoint()).await;
        let out = client.get_object().bucket(BUCKET).key(key).send().await.ok()?;
        Some(out.body.collect().await.ok()?.into_bytes().to_vec())
    })
}

fn stored_state(moto: &Moto) -> State {
    State::from_json(&object(moto, KEY).expect("a state object")).unwrap()
}

fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < limit, "{what} did not happen within {limit:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn machines(moto: &Moto) -> usize {
    let rt = rt();
    let provider = peerfleet::aws::AwsProvider::new(testing::settings(&moto.endpoint()));
    testing::EIGHT_REGIONS
        .iter()
        .map(|r| rt.block_on(provider.inventory("aws-eight-regions", r)).unwrap().machines.len())
        .sum()
}

#[test]
fn two_applies_on_one_s3_state_one_proceeds_the_other_fails_naming_it_or_waits() {
    let test = "two_applies_on_one_s3_state_one_proceeds_the_other_fails_naming_it_or_waits";
    let Some(moto) = moto(test) else { return };
    let (dir, env, layer) = setup(&moto);
    let dir = dir.path();
    declare_s3_state(dir, "");
    let apply = ["apply", "-f", "network.toml", "--only", "machines", "--auto-approve", "--parallelism", "1"];
    let mut first = spawn(dir, &env, &apply);
    wait_until("the first apply taking the lock", Duration::from_secs(60), || {
        object(&moto, &format!("{KEY}.lock")).is_some()
    });
    // At once: refused, naming the holder.
    let started = Instant::now();
    let (code, _, err) = parts(&run(dir, &env, &apply));
    assert!(first.try_wait().unwrap().is_none(), "the first apply finished too soon for this test");
    assert_eq!(code, 1, "{err}");
    assert!(started.elapsed() < Duration::from_secs(20), "refused at once");
    assert!(err.contains(&format!("pid {}", first.id())) && err.contains("s3://team-state/"), "{err}");
    // With --lock-timeout: waits for the first to finish, then plans on the state it saved.
    let mut waiting = apply.to_vec();
    waiting.extend(["--lock-timeout", "240"]);
    let (code, out, err) = parts(&run(dir, &env, &waiting));
    let status = first.wait().unwrap();
    assert!(status.success(), "the first apply failed");
    assert_eq!(code, 0, "{out}{err}");
    assert!(err.contains("for the state lock held by"), "it waited: {err}");
    // It planned on the state the first one saved, which holds every machine: nothing left to do.
    assert!(out.contains("No changes"), "{out}");
    assert_eq!(machines(&moto), 8, "nothing created twice");
    let saved = stored_state(&moto);
    assert!(saved.serial > 1 && saved.lineage.is_some());
    // The second run's lock was refused by S3's condition (412), never by a look-then-write.
    let lock_puts = layer.proxy.requests_of(&format!("PUT /{BUCKET}/{KEY}.lock"));
    assert!(lock_puts.iter().any(|r| r.status == 412), "{lock_puts:?}");
    let (code, text) = {
        let (code, out, err) = parts(&run(
            dir,
            &env,
            &["plan", "-f", "network.toml", "--only", "machines", "--detailed-exitcode"],
        ));
        (code, format!("{out}{err}"))
    };
    assert_eq!(code, 0, "converged:\n{text}");
    assert!(object(&moto, &format!("{KEY}.lock")).is_none(), "both released the lock");
}

#[test]
fn kill_9_of_the_s3_lock_holder_lets_the_next_apply_take_over_after_the_lease() {
    let test = "kill_9_of_the_s3_lock_holder_lets_the_next_apply_take_over_after_the_lease";
    let Some(moto) = moto(test) else { return };
    let (dir, env, _layer) = setup(&moto);
    let dir = dir.path();
    let state = format!("s3://{BUCKET}/{KEY}");
    let apply = ["apply", "-f", "network.toml", "--only", "machines", "--auto-approve", "--state", &state];
    let mut first = apply.to_vec();
    first.extend(["--parallelism", "1", "--lock-lease", "4"]);
    let mut holder = spawn(dir, &env, &first);
    // Kill it once some machines are recorded: mid-apply, with its lock on S3.
    wait_until("the first apply recording steps", Duration::from_secs(90), || {
        object(&moto, KEY).and_then(|b| State::from_json(&b).ok()).is_some_and(|s| s.serial >= 4)
    });
    holder.kill().unwrap(); // SIGKILL: no release, the lock object stays
    holder.wait().unwrap();
    let lock = object(&moto, &format!("{KEY}.lock")).expect("the dead holder's lock is still there");
    assert!(String::from_utf8_lossy(&lock).contains(&format!("\"pid\": {}", holder.id())));

    let mut next = apply.to_vec();
    next.extend(["--lock-timeout", "60"]);
    let (code, out, err) = parts(&run(dir, &env, &next));
    assert_eq!(code, 0, "{out}{err}");
    assert!(err.contains("abandoned"), "the take-over is reported: {err}");
    assert_eq!(machines(&moto), 8, "exactly the desired set: nothing created twice");
    let (code, out, err) = parts(&run(
        dir,
        &env,
        &["plan", "-f", "network.toml", "--only", "machines", "--detailed-exitcode", "--state", &state],
    ));
    assert_eq!(code, 0, "converged:\n{out}{err}");
}

#[test]
fn state_migrate_local_to_s3_and_back_keeps_lineage_and_serial_encrypted_on_s3() {
    let test = "state_migrate_local_to_s3_and_back_keeps_lineage_and_serial_encrypted_on_s3";
    let Some(moto) = moto(test) else { return };
    let (dir, mut env, _layer) = setup(&moto);
    let dir = dir.path();
    // A local state with history and a CA key, as a laptop would have it.
    let local = dir.join(".peerfleet/aws-eight-regions.state.json");
    let mut state = State::new();
    state.secrets.insert("ca_key".into(), Secret::new("-----BEGIN PRIVATE KEY----- team-ca-key"));
    let store = LocalStateFile::new(&local);
    for _ in 0..3 {
        rt().block_on(store.save(&mut state)).unwrap();
    }
    let to = format!("s3://{BUCKET}/{KEY}");
    // The spec demands client-side encryption: without a key, nothing happens.
    declare_s3_state(dir, "client_encryption = true\n");
    let migrate = |env: &[(String, String)], from: &str, to: &str| {
        parts(&run(dir, env, &["state", "migrate", "-f", "network.toml", "--state", from, "--to", to]))
    };
    let (code, _, err) = migrate(&env, local.to_str().unwrap(), &to);
    assert_eq!(code, 1);
    assert!(err.contains("PEERFLEET_STATE_KEY"), "{err}");
    assert!(object(&moto, KEY).is_none(), "nothing written without a key");

    env.push(("PEERFLEET_STATE_KEY".into(), StateKey::generate().to_base64()));
    let (code, out, err) = migrate(&env, local.to_str().unwrap(), &to);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("serial 3"), "{out}");
    let raw = String::from_utf8(object(&moto, KEY).unwrap()).unwrap();
    assert!(!raw.contains("team-ca-key") && !raw.contains("PRIVATE KEY"), "encrypted on S3: {raw}");
    assert!(local.exists(), "the source is left as it was");
    // Again: already there, nothing copied.
    let (code, out, _) = migrate(&env, local.to_str().unwrap(), &to);
    assert_eq!(code, 0);
    assert!(out.contains("already holds"), "{out}");

    // Back to another local file (the spec's [state] now points at S3, so no --state needed).
    let back = dir.join("back.state.json");
    let (code, out, err) =
        parts(&run(dir, &env, &["state", "migrate", "-f", "network.toml", "--to", back.to_str().unwrap()]));
    assert_eq!(code, 0, "{out}{err}");
    let returned = rt().block_on(LocalStateFile::new(&back).load()).unwrap();
    assert_eq!(returned, state, "same lineage, serial and content");

    // A target holding another lineage is never overwritten.
    let other = dir.join("other.state.json");
    let mut foreign = State::new();
    rt().block_on(LocalStateFile::new(&other).save(&mut foreign)).unwrap();
    let before = std::fs::read(&other).unwrap();
    let (code, _, err) =
        parts(&run(dir, &env, &["state", "migrate", "-f", "network.toml", "--to", other.to_str().unwrap()]));
    assert_eq!(code, 1);
    assert!(err.contains("another lineage"), "{err}");
    assert_eq!(std::fs::read(&other).unwrap(), before);
}
