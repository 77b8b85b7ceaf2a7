//! Rolling upgrades of the nine relays on the real engine, through the CLI: one network, several
//! rollouts in a row (a good one under a 100 ms sampler, a broken one rolled back, a broken one paused,
//! a fixed one resuming, then 50% start-first).

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use super::{CHAIN, Cleanup, docker, engine_available, engine_missing, env_of};
use crate::support::{local_spec, parts, peerfleet};

/// Relay containers of `net` that the engine reports healthy, and whether the master is healthy.
fn healthy(net: &str) -> (Vec<String>, bool) {
    let label = format!("label=peerfleet.network={net}");
    let (_, out, _) = docker(&["ps", "--filter", &label, "--format", "{{.Names}}\t{{.Status}}"]);
    let mut relays = Vec::new();
    let mut master = false;
    for line in out.lines() {
        let Some((name, status)) = line.split_once('\t') else { continue };
        if !status.ends_with("(healthy)") {
            continue;
        }
        if name.starts_with(&format!("{net}-relay-")) {
            relays.push(name.to_string());
        } else if name == format!("{net}-master-1") {
            master = true;
        }
    }
    (relays, master)
}

/// Polls every 100 ms until stopped; keeps the fewest healthy relays seen and whether the master was
/// ever not healthy.
struct Sampler {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<(usize, bool, usize)>,
}

impl Sampler {
    fn start(net: &str) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let (flag, net) = (stop.clone(), net.to_string());
        let handle = std::thread::spawn(move || {
            let (mut fewest, mut master_down, mut samples) = (usize::MAX, false, 0);
            while !flag.load(Ordering::SeqCst) {
                let (relays, master) = healthy(&net);
                fewest = fewest.min(relays.len());
                master_down |= !master;
                samples += 1;
                std::thread::sleep(Duration::from_millis(100));
            }
            (fewest, master_down, samples)
        });
        Sampler { stop, handle }
    }

    /// (fewest healthy relays, master ever down, samples taken).
    fn finish(self) -> (usize, bool, usize) {
        self.stop.store(true, Ordering::SeqCst);
        self.handle.join().expect("the sampler does not panic")
    }
}

/// The spec with the relays' version and rollout table set (the relay service is the file's last table).
fn write_relays(dir: &Path, base: &str, version: &str, extra: &str) {
    let text = format!("{base}env = {{ CLIENT_VERSION = \"{version}\" }}\n{extra}");
    std::fs::write(dir.join("network.toml"), text).expect("write spec");
}

fn apply(dir: &Path) -> (i32, String) {
    let (code, out, err) = parts(&peerfleet(dir, &["apply", "-f", "network.toml", "--auto-approve"]));
    (code, format!("{out}{err}"))
}

fn relay_versions(net: &str) -> Vec<String> {
    (1..=9).map(|i| env_of(&running_name(net, i), "CLIENT_VERSION")).collect()
}

/// The running container of relay `i` (start-first replaces alternate between two names).
fn running_name(net: &str, i: u32) -> String {
    let base = format!("{net}-relay-{i}");
    let next = format!("{base}-next");
    let label = format!("label=peerfleet.network={net}");
    let (_, out, _) = docker(&["ps", "--filter", &label, "--format", "{{.Names}}"]);
    out.lines().find(|n| *n == base || *n == next).unwrap_or(&base).to_string()
}

const BROKEN_HEALTH: &str = "[services.health]\ncommand = [\"/no-such-probe\"]\ninterval_ms = 500\n";

#[test]
fn relay_rollouts_keep_the_network_up_pause_roll_back_and_resume() {
    if !engine_available() {
        return engine_missing("relay_rollouts_keep_the_network_up_pause_roll_back_and_resume");
    }
    let net = "e2e-rolling";
    let _cleanup = Cleanup(net.into());
    let (dir, spec) = local_spec(net, 9);
    let dir = dir.path();
    let base = std::fs::read_to_string(&spec).expect("spec");
    write_relays(dir, &base, "v1", "");
    let (code, out) = apply(dir);
    assert_eq!(code, 0, "{out}");
    super::until_probe_passes(&format!("{net}-relay-9"), Duration::from_secs(30));

    // A good change: one relay at a time, never fewer than 8 healthy, the master never down.
    write_relays(dir, &base, "v2", "");
    let (_, plan, _) = parts(&peerfleet(dir, &["plan", "-f", "network.toml", "--json"]));
    let plan: serde_json::Value = serde_json::from_str(&plan).expect("plan JSON");
    assert_eq!(plan["rollouts"][0]["batches"].as_array().map(Vec::len), Some(9), "{plan:#}");
    let sampler = Sampler::start(net);
    let (code, out) = apply(dir);
    let (fewest, master_down, samples) = sampler.finish();
    assert_eq!(code, 0, "{out}");
    assert!(samples > 10, "the sampler ran ({samples} samples)");
    assert!(fewest >= 8, "only {fewest} of 9 relays were healthy at some point");
    assert!(!master_down, "the master went down during a relay rollout");
    assert_eq!(relay_versions(net), vec!["v2"; 9]);
    assert_eq!(env_of(&format!("{net}-master-1"), "CHAIN_ID"), CHAIN);

    // A broken spec with rollback: the first relay fails its gate and is put back on v2.
    let rollback = "[services.update]\nfailure_action = \"rollback\"\ngate_timeout_ms = 5000\n";
    write_relays(dir, &base, "v3", &format!("{rollback}{BROKEN_HEALTH}"));
    let (code, out) = apply(dir);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("rollout of relay rolled back and stopped at batch 1 of 9"), "{out}");
    assert!(out.contains("container.relay[0]") && out.contains("rolled back to the previous spec"), "{out}");
    assert_eq!(relay_versions(net), vec!["v2"; 9]);
    super::until_probe_passes(&running_name(net, 1), Duration::from_secs(30));

    // The same broken spec with pause: it stops after the first batch; the other 8 keep v2, healthy.
    let pause = "[services.update]\ngate_timeout_ms = 5000\n";
    write_relays(dir, &base, "v3", &format!("{pause}{BROKEN_HEALTH}"));
    let (code, out) = apply(dir);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("rollout of relay paused at batch 1 of 9"), "{out}");
    assert!(out.contains("relay-1 peered with the master") && out.contains("health"), "{out}");
    let versions = relay_versions(net);
    assert_eq!(versions[0], "v3");
    assert_eq!(&versions[1..], vec!["v2"; 8].as_slice());
    let (relays, master) = healthy(net);
    assert!(master);
    assert_eq!(relays.len(), 8, "{relays:?}");

    // A fixed spec resumes: everything ends on it.
    write_relays(dir, &base, "v3", pause);
    let (code, out) = apply(dir);
    assert_eq!(code, 0, "{out}");
    assert_eq!(relay_versions(net), vec!["v3"; 9]);

    // Half at a time, start-first: local nodes publish no ports, so new relays start beside the old.
    let half = "[services.update]\nmax_unavailable = \"50%\"\norder = \"start-first\"\n";
    write_relays(dir, &base, "v4", half);
    let (_, plan, _) = parts(&peerfleet(dir, &["plan", "-f", "network.toml", "--json"]));
    let plan: serde_json::Value = serde_json::from_str(&plan).expect("plan JSON");
    let sizes: Vec<usize> = plan["rollouts"][0]["batches"]
        .as_array()
        .map(|b| b.iter().filter_map(|x| x.as_array().map(Vec::len)).collect())
        .unwrap_or_default();
    assert_eq!(sizes, [4, 4, 1], "{plan:#}");
    let sampler = Sampler::start(net);
    let (code, out) = apply(dir);
    let (fewest, master_down, _) = sampler.finish();
    assert_eq!(code, 0, "{out}");
    assert_eq!(fewest, 9, "start-first took a relay down");
    assert!(!master_down);
    assert_eq!(relay_versions(net), vec!["v4"; 9]);
    let (code, out, err) = parts(&peerfleet(dir, &["plan", "-f", "network.toml", "--detailed-exitcode"]));
    assert_eq!(code, 0, "converged after the rollouts:\n{out}{err}");
}
