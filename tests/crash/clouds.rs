//! Crash trials of the machine layer on moto and on the DigitalOcean test server, through the CLI:
//! a real `kill -9` of `peerfleet apply --only machines` at a seeded random moment.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use peerfleet::core::plan::Layer;
use peerfleet::core::provider::MachineProvider;
use peerfleet::core::state::{State, default_state_path};

use super::{Census, Tally, Trials, desired, state_problems};
use crate::clouds::{Server, aws_profiles, moto, ok, run};
use crate::support::{parts, root};

/// A two-cluster, four-machine network on `provider` in `regions` (two cities).
pub(crate) fn spec(dir: &Path, name: &str, provider: &str, cities: [&str; 2]) {
    let mut text = format!(
        "name = \"{name}\"\n\n[chain]\ngenesis = \"genesis.json\"\n\n[access]\nadmin_cidrs = [\"203.0.113.0/24\"]\n"
    );
    for (i, city) in cities.iter().enumerate() {
        text.push_str(&format!(
            "\n[[clusters]]\nname = \"c{i}\"\nprovider = \"{provider}\"\nregion = \"{city}\"\nnodes = 2\ntags = [\"peer_cluster\"]\n"
        ));
    }
    text.push_str(
        "\n[[services]]\nname = \"genesis\"\nrole = \"genesis\"\n\n[[services]]\nname = \"master\"\nrole = \"master\"\n\n\
         [[services]]\nname = \"relay\"\nrole = \"relay\"\ncontainers = 2\nstrategy = \"region_spread\"\n",
    );
    std::fs::write(dir.join("network.toml"), text).unwrap();
    std::fs::copy(root().join("examples/genesis.json"), dir.join("genesis.json")).unwrap();
}

/// Starts `apply --only machines` and kills it (SIGKILL) at `kill_at`; returns whether it was still
/// running then.
fn killed_apply(dir: &Path, env: &[(String, String)], kill_at: Duration) -> bool {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_peerfleet"));
    cmd.args(["apply", "-f", "network.toml", "--only", "machines", "--auto-approve"])
        .current_dir(dir)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    cmd.envs(env.iter().cloned());
    let mut child = cmd.spawn().unwrap();
    let start = Instant::now();
    while start.elapsed() < kill_at {
        if child.try_wait().unwrap().is_some() {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let running = child.try_wait().unwrap().is_none();
    child.kill().unwrap();
    child.wait().unwrap();
    running
}

/// One trial: kill, clear the killed run's lock as a person would, apply again, then check.
fn trial(
    dir: &Path,
    env: &[(String, String)],
    kill_at: Duration,
    tally: &mut Tally,
    census: impl Fn(&str) -> Census,
) {
    let network = peerfleet::core::spec::load(&dir.join("network.toml")).unwrap();
    let trial = format!("{} (killed at {kill_at:?})", network.name);
    tally.killed(killed_apply(dir, env, kill_at));
    ok(run(dir, env, &["force-unlock", "-f", "network.toml"]));
    let (code, out, err) =
        parts(&run(dir, env, &["apply", "-f", "network.toml", "--only", "machines", "--auto-approve"]));
    let mut problems = Vec::new();
    if code != 0 {
        problems.push(format!("the re-apply exited {code}:\n{out}\n{err}"));
    }
    let found = census(&network.name);
    tally.count(&trial, &desired(&network, Some(Layer::Machines)), &found);
    let state_path = default_state_path(&dir.join("network.toml"), &network.name);
    let state = State::from_json(&std::fs::read(state_path).unwrap()).unwrap();
    problems.extend(state_problems(&state, &found, Some(Layer::Machines)));
    for refresh in ["--refresh=false", "--refresh=true"] {
        let args = ["plan", "-f", "network.toml", "--only", "machines", "--detailed-exitcode", refresh];
        let (code, out, err) = parts(&run(dir, env, &args));
        if code != 0 {
            problems.push(format!("plan {refresh} exited {code}:\n{out}{err}"));
        }
    }
    tally.heal(&trial, problems);
}

/// Every object in `regions` of `provider` for `network`, from one inventory per region.
pub(crate) fn inventory_census(
    rt: &tokio::runtime::Runtime,
    provider: &dyn MachineProvider,
    network: &str,
    regions: &[&str],
) -> Census {
    let mut found = std::collections::BTreeMap::<_, Vec<String>>::new();
    for region in regions {
        let inventory = rt.block_on(provider.inventory(network, region)).unwrap();
        for m in inventory.machines {
            found.entry(m.address).or_default().push(m.id);
        }
        for f in inventory.firewalls {
            found.entry(f.address).or_default().push(f.id);
        }
        for s in inventory.stable_ips {
            found.entry(s.address).or_default().push(s.id);
        }
    }
    Census { found }
}

#[test]
fn crash_trials_on_moto_converge_without_duplicates_orphans_or_unhealed_state() {
    let Some(moto) = moto("crash_trials_on_moto_converge_without_duplicates_orphans_or_unhealed_state")
    else {
        return;
    };
    let trials = Trials::from_env();
    let mut tally = Tally::new("moto --only machines");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let provider = peerfleet::aws::AwsProvider::new(peerfleet::aws::testing::settings(&moto.endpoint()));
    for n in 0..trials.count {
        let dir = tempfile::tempdir().unwrap();
        let mut env = aws_profiles(dir.path());
        env.push(("AWS_ENDPOINT_URL".into(), moto.endpoint()));
        spec(dir.path(), &format!("crash-aws-{n}"), "aws", ["Virginia", "Frankfurt"]);
        let census = |net: &str| inventory_census(&rt, &provider, net, &["us-east-1", "eu-central-1"]);
        trial(dir.path(), &env, trials.kill_at(n, Duration::from_secs(4)), &mut tally, census);
    }
    tally.report(&trials);
    tally.assert_clean();
}

#[test]
fn crash_trials_on_the_digitalocean_server_converge_without_duplicates_orphans_or_unhealed_state() {
    let trials = Trials::from_env();
    let mut tally = Tally::new("DigitalOcean test server --only machines");
    let s = Server::start(Duration::from_millis(300));
    let provider = s.census_provider();
    for n in 0..trials.count {
        let dir = tempfile::tempdir().unwrap();
        spec(dir.path(), &format!("crash-do-{n}"), "digitalocean", ["Frankfurt", "Amsterdam"]);
        let census = |net: &str| inventory_census(&s.rt, &provider, net, &["fra1", "ams3"]);
        trial(dir.path(), &s.env(), trials.kill_at(n, Duration::from_secs(3)), &mut tally, census);
        // Reserved IPs carry no tags: count them all, so an unassigned one left by a crash shows.
        let reserved = s.server.reserved_ips().len();
        let stable = desired(
            &peerfleet::core::spec::load(&dir.path().join("network.toml")).unwrap(),
            Some(Layer::Machines),
        )
        .iter()
        .filter(|a| matches!(a, peerfleet::core::Address::StableIp { .. }))
        .count();
        assert!(reserved <= stable * (n as usize + 1), "{reserved} reserved IPs after {} trials", n + 1);
    }
    s.server.assert_conforms();
    tally.report(&trials);
    tally.assert_clean();
}
