//! Crash trials of the machine layer on moto and on the DigitalOcean test server, through the CLI:
//! a real `kill -9` of `peerfleet apply --only machines` at a seeded random moment.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use peerfleet::core::plan::Layer;
use peerfleet::core::provider::MachineProvider;
use peerfleet::core::state::{LocalStateFile, default_state_path};

use super::{Census, Tally, Trials, desired, state_problems};
use crate::clouds::{CHAIN, Server, aws_profiles, moto, ok, run};
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
    let start = Instant::now();
    killed_apply_when(dir, env, &[], || start.elapsed() >= kill_at)
}

/// Starts `apply --only machines` (with `more` arguments) and kills it (SIGKILL) as soon as `now`
/// says so (asked every 5 ms); returns whether it was still running then.
fn killed_apply_when(
    dir: &Path,
    env: &[(String, String)],
    more: &[&str],
    mut now: impl FnMut() -> bool,
) -> bool {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_peerfleet"));
    cmd.args(["apply", "-f", "network.toml", "--only", "machines", "--auto-approve"])
        .args(more)
        .current_dir(dir)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    cmd.envs(env.iter().cloned());
    let mut child = cmd.spawn().unwrap();
    while !now() {
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
    // Through the store: a killed run leaves its last saves in the journal beside the file.
    let state = LocalStateFile::new(state_path).load_sync().unwrap();
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
    // Kill moments fall within a whole apply's time, measured here (the faster of two; moto's first
    // answers are slow): moto answers fast, and with a fixed window most kills landed after the
    // apply had finished (7 of 30 crashed mid-run).
    let timed = |name: &str| {
        let dir = tempfile::tempdir().unwrap();
        let mut env = aws_profiles(dir.path());
        env.push(("AWS_ENDPOINT_URL".into(), moto.endpoint()));
        spec(dir.path(), name, "aws", ["Virginia", "Frankfurt"]);
        let started = Instant::now();
        ok(run(dir.path(), &env, &["apply", "-f", "network.toml", "--only", "machines", "--auto-approve"]));
        started.elapsed()
    };
    let window = timed("crash-aws-timing-0").min(timed("crash-aws-timing-1"));
    eprintln!("moto: a whole apply takes {window:?}");
    for n in 0..trials.count {
        let dir = tempfile::tempdir().unwrap();
        let mut env = aws_profiles(dir.path());
        env.push(("AWS_ENDPOINT_URL".into(), moto.endpoint()));
        spec(dir.path(), &format!("crash-aws-{n}"), "aws", ["Virginia", "Frankfurt"]);
        let census = |net: &str| inventory_census(&rt, &provider, net, &["us-east-1", "eu-central-1"]);
        trial(dir.path(), &env, trials.kill_at(n, window), &mut tally, census);
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

/// The reserved IPs of the test server: address and the droplet each is assigned to.
fn reserved(s: &Server) -> std::collections::BTreeMap<String, Option<u64>> {
    s.server
        .reserved_ips()
        .iter()
        .map(|r| (r["ip"].as_str().unwrap().to_string(), r.pointer("/droplet/id").and_then(|v| v.as_u64())))
        .collect()
}

/// Sets every cluster's machine image (a replace of every droplet).
fn set_image(dir: &Path, image: &str) {
    let spec = dir.join("network.toml");
    let text = std::fs::read_to_string(&spec).unwrap();
    let text = text
        .lines()
        .filter(|l| !l.starts_with("image = "))
        .map(|l| if l == "nodes = 2" { format!("nodes = 2\nimage = \"{image}\"") } else { l.to_string() })
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(spec, text).unwrap();
}

#[test]
fn a_crash_between_deleting_a_droplet_and_attaching_its_reserved_ip_leaks_no_reserved_ip() {
    // DigitalOcean's reserved IPs carry no tags: the droplet they are assigned to is their only link
    // to the network, and deleting it unassigns them. A replace kills the apply in that window.
    let s = Server::start(Duration::from_millis(400));
    let env = s.env();
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    spec(dir, "crash-reserved", "digitalocean", ["Frankfurt", "Amsterdam"]);
    let apply = ["apply", "-f", "network.toml", "--only", "machines", "--auto-approve"];
    ok(run(dir, &env, &apply));
    let converged = reserved(&s);
    assert_eq!(converged.len(), 2, "the genesis and master hosts: {converged:?}");
    assert!(converged.values().all(Option::is_some), "{converged:?}");

    for image in ["ubuntu-24-04-x64", "debian-13-x64"] {
        set_image(dir, image);
        let unassigned = || reserved(&s).values().any(Option::is_none);
        // The genesis host is replaced too: in the machine layer that is what `--replace-genesis` allows.
        let replace = ["--replace-genesis", CHAIN];
        assert!(
            killed_apply_when(dir, &env, &replace, unassigned),
            "the apply ended before a reserved IP was unassigned"
        );
        assert!(unassigned(), "killed while a reserved IP was assigned to nothing");

        // What a read-only plan sees: the lost IP, to be attached again; no new one.
        let plan = ["plan", "-f", "network.toml", "--only", "machines", "--replace-genesis", CHAIN];
        let (code, out, err) = parts(&run(dir, &env, &plan));
        assert_eq!(code, 0, "{out}{err}");
        assert!(out.contains("~ ip."), "the unassigned reserved IP is attached again:\n{out}");
        assert!(!out.contains("+ ip."), "no second reserved IP:\n{out}");

        ok(run(dir, &env, &[&apply[..], &replace[..]].concat()));
        let after = reserved(&s);
        assert_eq!(
            after.keys().collect::<Vec<_>>(),
            converged.keys().collect::<Vec<_>>(),
            "the same reserved IPs, none leaked, none reserved twice"
        );
        let droplets: Vec<u64> = s.server.droplets().iter().map(|d| d.id).collect();
        assert_eq!(droplets.len(), 4);
        for (ip, droplet) in &after {
            assert!(droplet.is_some_and(|d| droplets.contains(&d)), "{ip} is assigned to a live droplet");
        }
        let state_path = default_state_path(&dir.join("network.toml"), "crash-reserved");
        // Through the store: a killed run leaves its last saves in the journal beside the file.
        let state = LocalStateFile::new(state_path).load_sync().unwrap();
        assert!(state.intents.is_empty(), "{:?}", state.intents);
        let mut remembered: Vec<&str> = state
            .resources
            .values()
            .filter_map(|r| match r {
                peerfleet::core::resource::Actual::StableIp(ip) => Some(ip.ip.as_str()),
                _ => None,
            })
            .collect();
        remembered.sort();
        assert_eq!(remembered, converged.keys().map(String::as_str).collect::<Vec<_>>());
        let refresh_false =
            ["plan", "-f", "network.toml", "--only", "machines", "--detailed-exitcode", "--refresh=false"];
        assert_eq!(parts(&run(dir, &env, &refresh_false)).0, 0);
    }

    // Killed in the same window again, then destroyed: the unassigned IP is released too.
    set_image(dir, "ubuntu-24-04-x64");
    let replace = ["--replace-genesis", CHAIN];
    assert!(killed_apply_when(dir, &env, &replace, || reserved(&s).values().any(Option::is_none)));
    ok(run(dir, &env, &["destroy", "-f", "network.toml", "--auto-approve", "--replace-genesis", CHAIN]));
    assert_eq!(reserved(&s), Default::default(), "every reserved IP released");
    assert!(s.server.droplets().is_empty());
    s.server.assert_conforms();
}
