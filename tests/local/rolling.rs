//! Rolling upgrades of the nine relays on the real engine, through the CLI, on the nine-region local
//! network. One network serves every case in a row (bring-up is most of the cost, and each case starts
//! from what the previous one left, which is how a live network sees them): a good env change under a
//! 100 ms sampler, a broken one rolled back, the same broken one paused, a fixed one resuming, then half
//! at a time stop-first and half at a time start-first.
//!
//! "Healthy and peered" is the engine's health status: the relay's probe passes only while `/status`
//! shows it peered with the master on the pinned chain (`crates/node/src/probe.rs`), so a relay the
//! engine reports healthy is peered as of its last probe (500 ms ago at most).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use peerfleet::core::provider::ContainerEngine;
use peerfleet::core::resource::{Container, ContainerState, Health};

use super::{CHAIN, Cleanup, engine_available, engine_missing, env_of};
use crate::support::{local_spec, parts, peerfleet_within};

const NET: &str = "e2e-rolling";
const RELAYS: usize = 9;

/// `peerfleet ARGS` in `dir`, failing the test if it hangs.
fn peerfleet(dir: &Path, args: &[&str]) -> (i32, String) {
    let (code, out, err) = parts(&peerfleet_within(dir, args, Duration::from_secs(240)));
    (code, format!("{out}{err}"))
}

fn apply(dir: &Path) -> (i32, String) {
    peerfleet(dir, &["apply", "-f", "network.toml", "--auto-approve"])
}

/// The example spec with the relay service's env and extra tables (`[services.update]`,
/// `[services.health]`) appended: the relay service is the file's last table, so they belong to it.
fn write_relays(dir: &Path, base: &str, version: &str, extra: &str) -> Result<()> {
    let text = format!("{base}env = {{ CLIENT_VERSION = \"{version}\" }}\n{extra}");
    std::fs::write(dir.join("network.toml"), text).context("write the spec")
}

/// The relay rollout's batch sizes and first member, from `plan --json`.
fn planned_batches(dir: &Path) -> Result<(Vec<usize>, String)> {
    let (code, out) = peerfleet(dir, &["plan", "-f", "network.toml", "--json"]);
    ensure!(code == 0, "plan failed: {out}");
    let plan: serde_json::Value = serde_json::from_str(&out).with_context(|| format!("plan JSON: {out}"))?;
    let rollouts = plan["rollouts"].as_array().context("no rollouts in the plan JSON")?;
    ensure!(rollouts.len() == 1 && rollouts[0]["name"] == "relay", "{plan:#}");
    let batches = rollouts[0]["batches"].as_array().context("no batches")?;
    let sizes = batches.iter().filter_map(|b| b.as_array().map(Vec::len)).collect();
    let first = batches[0][0].as_str().context("no first member")?.to_string();
    Ok((sizes, first))
}

fn list(rt: &tokio::runtime::Runtime, engine: &dyn ContainerEngine) -> Result<Vec<Container>> {
    rt.block_on(engine.list_containers(NET)).context("list the network's containers")
}

fn healthy(c: &Container) -> bool {
    c.state == ContainerState::Running && c.health == Health::Healthy
}

fn is_relay(c: &Container) -> bool {
    c.address.to_string().starts_with("container.relay[")
}

/// What a sampler saw while it ran.
#[derive(Debug)]
struct Seen {
    /// The fewest relays (distinct addresses: a start-first replace runs two containers for one
    /// relay) healthy in any sample.
    fewest: usize,
    /// Samples in which the master was not running and healthy.
    master_down: usize,
    samples: usize,
    /// The longest time between two samples: a dip shorter than this could go unseen.
    longest_gap: Duration,
}

/// Polls the engine every 100 ms (its own thread and engine client, as a monitor would) until stopped.
struct Sampler {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<Result<Seen>>,
}

impl Sampler {
    fn start() -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            let engine = rt.block_on(peerfleet::docker::DockerEngine::connect_local())?;
            let mut seen =
                Seen { fewest: usize::MAX, master_down: 0, samples: 0, longest_gap: Duration::ZERO };
            let mut last: Option<Instant> = None;
            while !flag.load(Ordering::SeqCst) {
                let tick = Instant::now();
                let all = list(&rt, &engine)?;
                let relays: BTreeSet<String> =
                    all.iter().filter(|c| is_relay(c) && healthy(c)).map(|c| c.address.to_string()).collect();
                let master = all.iter().any(|c| c.address.to_string() == "container.master[0]" && healthy(c));
                seen.fewest = seen.fewest.min(relays.len());
                seen.master_down += usize::from(!master);
                seen.samples += 1;
                if let Some(last) = last {
                    seen.longest_gap = seen.longest_gap.max(tick - last);
                }
                last = Some(tick);
                std::thread::sleep(Duration::from_millis(100).saturating_sub(tick.elapsed()));
            }
            Ok(seen)
        });
        Sampler { stop, handle }
    }

    fn finish(self) -> Result<Seen> {
        self.stop.store(true, Ordering::SeqCst);
        match self.handle.join() {
            Ok(seen) => seen,
            Err(_) => bail!("the sampler panicked"),
        }
    }
}

/// Runs `apply` under a sampler; checks the sampler really polled through it.
fn apply_sampled(dir: &Path) -> Result<(i32, String, Seen)> {
    let sampler = Sampler::start();
    let (code, out) = apply(dir);
    let seen = sampler.finish()?;
    eprintln!("sampled apply: exit {code}, {seen:?}");
    ensure!(seen.samples >= 10, "the sampler hardly ran: {seen:?}");
    ensure!(seen.longest_gap < Duration::from_secs(1), "the sampler stalled: {seen:?}");
    Ok((code, out, seen))
}

/// Per relay address, the `CLIENT_VERSION` its running container was started with (read from the
/// engine's record of the container, not from peerfleet's labels), and whether it is healthy.
fn relays(
    engine: (&tokio::runtime::Runtime, &dyn ContainerEngine),
) -> Result<BTreeMap<String, (String, bool)>> {
    let mut out = BTreeMap::new();
    for c in list(engine.0, engine.1)?.iter().filter(|c| is_relay(c)) {
        let version = env_of(&c.id, "CLIENT_VERSION");
        if out.insert(c.address.to_string(), (version, healthy(c))).is_some() {
            bail!("two containers for {} after the apply", c.address);
        }
    }
    Ok(out)
}

/// Waits (bounded) until every relay runs `version` and is healthy; returns the last look on failure.
fn until_all_on(engine: (&tokio::runtime::Runtime, &dyn ContainerEngine), version: &str) -> Result<()> {
    let start = Instant::now();
    loop {
        let now = relays(engine)?;
        if now.len() == RELAYS && now.values().all(|(v, h)| v == version && *h) {
            return Ok(());
        }
        if start.elapsed() > Duration::from_secs(30) {
            bail!("not every relay is healthy on {version}: {now:?}");
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// The genesis container's engine ID and the chain ID the master was started with.
fn chain_facts(engine: (&tokio::runtime::Runtime, &dyn ContainerEngine)) -> Result<(String, String)> {
    let all = list(engine.0, engine.1)?;
    let genesis =
        all.iter().find(|c| c.address.to_string() == "container.genesis[0]").context("no genesis")?;
    let master = all.iter().find(|c| c.address.to_string() == "container.master[0]").context("no master")?;
    Ok((genesis.id.clone(), env_of(&master.id, "CHAIN_ID")))
}

/// A new relay spec whose health check can never pass: it names a probe this image does not have (the
/// node's command exits 2 on an unknown subcommand), as a client upgrade with a renamed probe would.
/// One retry and a 4 s gate keep the failure quick.
const BROKEN_HEALTH: &str =
    "[services.health]\ncommand = [\"/peerfleet-node\", \"probe-v2\"]\ninterval_ms = 500\nretries = 1\n";
const GATE: &str = "gate_timeout_ms = 4000\n";

#[test]
fn relay_rollouts_keep_all_but_max_unavailable_up_pause_roll_back_and_resume_on_the_engine() -> Result<()> {
    if !engine_available() {
        engine_missing(
            "relay_rollouts_keep_all_but_max_unavailable_up_pause_roll_back_and_resume_on_the_engine",
        );
        return Ok(());
    }
    let _cleanup = Cleanup(NET.into());
    let (tmp, spec) = local_spec(NET, RELAYS as u32);
    let dir = tmp.path();
    let base = std::fs::read_to_string(&spec)?;
    ensure!(
        base.trim_end().ends_with("deploy_tags = [\"peer_cluster\"]"),
        "the example's last table changed"
    );
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let engine = rt.block_on(peerfleet::docker::DockerEngine::connect_local())?;
    let engine = (&rt, &engine as &dyn ContainerEngine);

    let started = Instant::now();
    write_relays(dir, &base, "v1", "")?;
    let (code, out) = apply(dir);
    ensure!(code == 0, "bring-up failed: {out}");
    until_all_on(engine, "v1")?;
    let (genesis_id, chain) = chain_facts(engine)?;
    ensure!(chain == CHAIN);
    eprintln!("up in {:?}", started.elapsed());

    // 1. An env change, max_unavailable = 1 (the default): nine batches of one; at every sample eight
    // relays are healthy and peered (exactly eight at some point: the sampler does see each one go),
    // and the master never goes down.
    let t = Instant::now();
    write_relays(dir, &base, "v2", "")?;
    let (batches, first) = planned_batches(dir)?;
    ensure!(batches == vec![1; RELAYS], "{batches:?}");
    let (code, out, seen) = apply_sampled(dir)?;
    ensure!(code == 0, "{out}");
    ensure!(out.contains("replace relay in 9 batches of 1 (stop-first, on failure pause)"), "{out}");
    ensure!(seen.fewest == RELAYS - 1, "fewest relays healthy during a one-at-a-time rollout: {seen:?}");
    ensure!(seen.master_down == 0, "the master went down during a relay rollout: {seen:?}");
    until_all_on(engine, "v2")?;
    ensure!(chain_facts(engine)? == (genesis_id.clone(), CHAIN.to_string()), "the chain changed");
    eprintln!("1. one at a time: {:?}", t.elapsed());

    // 2a. A broken spec with rollback: the first batch fails its gate; its relay is put back on v2
    // and the rest are never touched.
    let t = Instant::now();
    let rollback = format!("[services.update]\nfailure_action = \"rollback\"\n{GATE}{BROKEN_HEALTH}");
    write_relays(dir, &base, "v3", &rollback)?;
    let (code, out, seen) = apply_sampled(dir)?;
    ensure!(code == 1, "a failed gate exits 1: {out}");
    ensure!(out.contains("rollout of relay rolled back and stopped at batch 1 of 9"), "{out}");
    ensure!(
        out.contains(&format!("{first} (not healthy after 4s waiting for relay-1 peered with the master; last seen: container running, health unhealthy; rolled back to the previous spec)")),
        "the message names the container and what its gate saw: {out}"
    );
    ensure!(out.contains("0 replaced, 8 not reached still run the previous spec"), "{out}");
    ensure!(seen.fewest >= RELAYS - 1 && seen.master_down == 0, "{seen:?}");
    until_all_on(engine, "v2")?;
    eprintln!("2a. rollback: {:?}", t.elapsed());

    // 2b. The same broken spec with pause: it stops after the first batch, which keeps the broken
    // container; the other eight still run v2 and are healthy.
    let t = Instant::now();
    let pause = format!("[services.update]\n{GATE}");
    write_relays(dir, &base, "v3", &format!("{pause}{BROKEN_HEALTH}"))?;
    let (code, out, seen) = apply_sampled(dir)?;
    ensure!(code == 1, "{out}");
    ensure!(out.contains("rollout of relay paused at batch 1 of 9"), "{out}");
    ensure!(
        out.contains(&format!("{first} (not healthy after 4s waiting for relay-1 peered with the master; last seen: container running, health unhealthy)")),
        "{out}"
    );
    ensure!(seen.fewest >= RELAYS - 1 && seen.master_down == 0, "{seen:?}");
    let now = relays(engine)?;
    ensure!(now[&first] == ("v3".to_string(), false), "the failed relay keeps the new spec: {now:?}");
    let others: Vec<_> = now.iter().filter(|(a, _)| **a != first).map(|(_, v)| v.clone()).collect();
    ensure!(others == vec![("v2".to_string(), true); RELAYS - 1], "the other eight: {now:?}");
    eprintln!("2b. pause: {:?}", t.elapsed());

    // 2c. A fixed spec resumes and converges; the broken relay is in the first batch, so eight stay up.
    let t = Instant::now();
    write_relays(dir, &base, "v3", &pause)?;
    let (code, out, seen) = apply_sampled(dir)?;
    ensure!(code == 0, "{out}");
    ensure!(seen.fewest >= RELAYS - 1 && seen.master_down == 0, "{seen:?}");
    until_all_on(engine, "v3")?;
    eprintln!("2c. resume: {:?}", t.elapsed());

    // 3a. Half at a time, stop-first: 50% of 9 rounds down to batches of 4 (`MaxUnavailable::
    // batch_size`), so 4, 4, 1, and never fewer than 9 - 4 healthy.
    let t = Instant::now();
    write_relays(dir, &base, "v4", "[services.update]\nmax_unavailable = \"50%\"\n")?;
    let (batches, _) = planned_batches(dir)?;
    ensure!(batches == [4, 4, 1], "{batches:?}");
    let (code, out, seen) = apply_sampled(dir)?;
    ensure!(code == 0, "{out}");
    ensure!(out.contains("replace relay in 3 batches of 4 (stop-first, on failure pause)"), "{out}");
    ensure!((RELAYS - 4..RELAYS).contains(&seen.fewest), "half at a time: {seen:?}");
    ensure!(seen.master_down == 0, "{seen:?}");
    until_all_on(engine, "v4")?;
    eprintln!("3a. 50% stop-first: {:?}", t.elapsed());

    // 3b. Half at a time, start-first: local nodes publish no ports, so every new relay starts beside
    // its old one, which goes only once the new one is healthy: all nine stay up throughout.
    let t = Instant::now();
    write_relays(
        dir,
        &base,
        "v5",
        "[services.update]\nmax_unavailable = \"50%\"\norder = \"start-first\"\n",
    )?;
    let (batches, _) = planned_batches(dir)?;
    ensure!(batches == [4, 4, 1], "{batches:?}");
    let (code, out, seen) = apply_sampled(dir)?;
    ensure!(code == 0, "{out}");
    ensure!(out.contains("replace relay in 3 batches of 4 (start-first, on failure pause)"), "{out}");
    ensure!(seen.fewest == RELAYS && seen.master_down == 0, "start-first took a relay down: {seen:?}");
    until_all_on(engine, "v5")?;
    eprintln!("3b. 50% start-first: {:?}", t.elapsed());

    // After all of it: the same genesis server and chain, and nothing left to do.
    ensure!(chain_facts(engine)? == (genesis_id, CHAIN.to_string()), "the chain changed");
    let (code, out) = peerfleet(dir, &["plan", "-f", "network.toml", "--detailed-exitcode"]);
    ensure!(code == 0, "converged after the rollouts: {out}");
    Ok(())
}
