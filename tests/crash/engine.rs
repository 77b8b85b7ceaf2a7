//! Crash trials of a whole network (nodes and containers) on the local Docker engine, through the
//! CLI: a real `kill -9` of `peerfleet apply` at a seeded random moment. Each trial destroys its
//! network afterwards (the engine has room for about thirty bridge networks).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use peerfleet::core::Address;
use peerfleet::core::state::{LocalStateFile, default_state_path};

use super::{Census, Tally, Trials, desired, state_problems};
use crate::support::{parts, peerfleet, root};

const CHAIN: &str = "c9deea424d5acb5719414c8d3779cc4363cc8c9b9ccaa380a34131b094215199";

fn docker(args: &[&str]) -> String {
    let out = Command::new("docker").args(args).output().expect("the docker CLI runs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Two local clusters (three nodes), genesis, master and two relays.
pub(crate) fn spec(dir: &Path, name: &str) {
    let text = format!(
        "name = \"{name}\"\n\n[chain]\ngenesis = \"genesis.json\"\n\n\
         [[clusters]]\nname = \"east\"\nprovider = \"local\"\nregion = \"Virginia\"\nnodes = 2\ntags = [\"peer_cluster\"]\n\n\
         [[clusters]]\nname = \"west\"\nprovider = \"local\"\nregion = \"Oregon\"\ntags = [\"peer_cluster\"]\n\n\
         [[services]]\nname = \"genesis\"\nrole = \"genesis\"\n\n[[services]]\nname = \"master\"\nrole = \"master\"\n\n\
         [[services]]\nname = \"relay\"\nrole = \"relay\"\ncontainers = 2\n"
    );
    std::fs::write(dir.join("network.toml"), text).unwrap();
    std::fs::copy(root().join("examples/genesis.json"), dir.join("genesis.json")).unwrap();
}

/// Containers and node networks of `network`, by the address label; the internet network is
/// counted under `None`.
fn census(network: &str) -> (Census, usize) {
    let label = format!("label=peerfleet.network={network}");
    let format = "{{.ID}} {{.Label \"peerfleet.address\"}}";
    let mut found: BTreeMap<Address, Vec<String>> = BTreeMap::new();
    let mut unaddressed = 0;
    for listing in [
        docker(&["ps", "-a", "--no-trunc", "--filter", &label, "--format", format]),
        docker(&["network", "ls", "--no-trunc", "--filter", &label, "--format", format]),
    ] {
        for line in listing.lines() {
            let (id, address) = line.split_once(' ').unwrap_or((line, ""));
            match address.parse::<Address>() {
                Ok(a) => found.entry(a).or_default().push(id.to_string()),
                Err(_) => unaddressed += 1,
            }
        }
    }
    (Census { found }, unaddressed)
}

/// Removes what a trial left of its network, even when it failed half-way.
struct Cleanup(String);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let label = format!("label=peerfleet.network={}", self.0);
        for id in docker(&["ps", "-aq", "--filter", &label]).split_whitespace() {
            docker(&["rm", "-f", id]);
        }
        for id in docker(&["network", "ls", "-q", "--filter", &label]).split_whitespace() {
            docker(&["network", "rm", id]);
        }
    }
}

fn trial(trials: &Trials, n: u32, tally: &mut Tally) {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let name = format!("crash-local-{}-{n}", std::process::id());
    let _cleanup = Cleanup(name.clone());
    spec(dir, &name);
    let kill_at = trials.kill_at(n, Duration::from_secs(6));
    let trial = format!("{name} (killed at {kill_at:?})");
    let mut child = Command::new(env!("CARGO_BIN_EXE_peerfleet"))
        .args(["apply", "-f", "network.toml", "--auto-approve"])
        .current_dir(dir)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while start.elapsed() < kill_at && child.try_wait().unwrap().is_none() {
        std::thread::sleep(Duration::from_millis(5));
    }
    tally.killed(child.try_wait().unwrap().is_none());
    child.kill().unwrap();
    child.wait().unwrap();

    parts(&peerfleet(dir, &["force-unlock", "-f", "network.toml"]));
    let (code, out, err) = parts(&peerfleet(dir, &["apply", "-f", "network.toml", "--auto-approve"]));
    let mut problems = Vec::new();
    if code != 0 {
        problems.push(format!("the re-apply exited {code}:\n{out}\n{err}"));
    }
    let network = peerfleet::core::spec::load(&dir.join("network.toml")).unwrap();
    let (found, internet) = census(&name);
    if internet != 1 {
        problems.push(format!("{internet} internet networks"));
    }
    tally.count(&trial, &desired(&network, None), &found);
    let state_path = default_state_path(&dir.join("network.toml"), &name);
    // Through the store: a killed run leaves its last saves in the journal beside the file.
    let state = LocalStateFile::new(state_path).load_sync().unwrap();
    problems.extend(state_problems(&state, &found, None));
    if state.chain.as_ref().map(|p| p.id.as_str()) != Some(CHAIN) {
        problems.push(format!("the state pins {:?}", state.chain));
    }
    for refresh in ["--refresh=false", "--refresh=true"] {
        let (code, out, err) =
            parts(&peerfleet(dir, &["plan", "-f", "network.toml", "--detailed-exitcode", refresh]));
        if code != 0 {
            problems.push(format!("plan {refresh} exited {code}:\n{out}{err}"));
        }
    }
    let destroy = ["destroy", "-f", "network.toml", "--auto-approve", "--replace-genesis", CHAIN];
    let (code, out, err) = parts(&peerfleet(dir, &destroy));
    if code != 0 {
        problems.push(format!("destroy exited {code}:\n{out}{err}"));
    }
    tally.heal(&trial, problems);
}

#[test]
fn crash_trials_on_the_local_engine_converge_without_duplicates_orphans_or_unhealed_state() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    if rt.block_on(peerfleet::docker::DockerEngine::connect_local()).is_err() {
        return crate::local::engine_missing(
            "crash_trials_on_the_local_engine_converge_without_duplicates_orphans_or_unhealed_state",
        );
    }
    let trials = Trials::from_env();
    let mut tally = Tally::new("local Docker engine");
    for n in 0..trials.count {
        trial(&trials, n, &mut tally);
    }
    tally.report(&trials);
    tally.assert_clean();
}
