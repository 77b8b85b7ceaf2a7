//! A fifth of the provider calls failing: through the fault proxy in front of moto and the
//! DigitalOcean test server's injection, `apply --only machines` converges and creates nothing
//! twice. (The test provider's run is in `tests/heal`.)

use std::path::Path;
use std::time::Duration;

use peerfleet::core::plan::Layer;
use peerfleet::core::state::{LocalStateFile, default_state_path};
use peerfleet_digitalocean_testserver::Fault;

use super::clouds::{inventory_census, spec};
use super::{Census, Tally, Trials, desired, state_problems};
use crate::clouds::{Server, aws_profiles, moto, run};
use crate::support::parts;

/// How many applies a network may need to converge under faults (a step whose retries are all
/// spent fails its branch; the next apply picks it up).
const APPLIES: usize = 3;

/// Applies until it succeeds (at most [`APPLIES`] times), then checks with faults switched off.
fn converge(
    dir: &Path,
    env: &[(String, String)],
    tally: &mut Tally,
    faults_off: impl Fn(),
    census: impl Fn(&str) -> Census,
) {
    let network = peerfleet::core::spec::load(&dir.join("network.toml")).unwrap();
    let trial = format!("{} under faults", network.name);
    let apply = ["apply", "-f", "network.toml", "--only", "machines", "--auto-approve"];
    let mut outputs = Vec::new();
    let converged = (0..APPLIES).any(|_| {
        let (code, out, err) = parts(&run(dir, env, &apply));
        outputs.push(format!("exit {code}\n{out}{err}"));
        code == 0
    });
    eprintln!("{trial}: {} apply run(s)", outputs.len());
    faults_off();
    let mut problems = Vec::new();
    if !converged {
        problems.push(format!("no convergence in {APPLIES} applies:\n{}", outputs.join("\n---\n")));
    }
    let found = census(&network.name);
    tally.count(&trial, &desired(&network, Some(Layer::Machines)), &found);
    let state_path = default_state_path(&dir.join("network.toml"), &network.name);
    // Through the store: a killed run leaves its last saves in the journal beside the file.
    let state = LocalStateFile::new(state_path).load_sync().unwrap();
    problems.extend(state_problems(&state, &found, Some(Layer::Machines)));
    let plan = ["plan", "-f", "network.toml", "--only", "machines", "--detailed-exitcode", "--refresh=false"];
    let (code, out, err) = parts(&run(dir, env, &plan));
    if code != 0 {
        problems.push(format!("plan --refresh=false exited {code}:\n{out}{err}"));
    }
    tally.heal(&trial, problems);
}

#[test]
fn with_a_fifth_of_ec2_requests_failing_apply_converges_and_creates_nothing_twice() {
    let Some(moto) = moto("with_a_fifth_of_ec2_requests_failing_apply_converges_and_creates_nothing_twice")
    else {
        return;
    };
    let trials = Trials::from_env();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let proxy = rt.block_on(peerfleet::aws::testing::FaultProxy::start(moto.addr())).unwrap();
    // EC2 honours ClientToken; moto does not, so the proxy does it in its place.
    proxy.honour_client_tokens(true);
    // Every action's responses may be lost after moto acted, AllocateAddress's too (it has no client
    // token: the provider looks the address up by tag before allocating again).
    let direct = peerfleet::aws::AwsProvider::new(peerfleet::aws::testing::settings(&moto.endpoint()));
    let mut tally = Tally::new("moto, 20 % faults");
    // One network: each lost EC2 answer costs the SDK's backoff, so this run takes tens of seconds.
    for n in 0..1u32 {
        proxy.fail_randomly(trials.seed + u64::from(n), 0.2);
        let dir = tempfile::tempdir().unwrap();
        let mut env = aws_profiles(dir.path());
        env.push(("AWS_ENDPOINT_URL".into(), proxy.endpoint()));
        spec(dir.path(), &format!("faults-aws-{n}"), "aws", ["Virginia", "Frankfurt"]);
        let census = |net: &str| inventory_census(&rt, &direct, net, &["us-east-1", "eu-central-1"]);
        converge(dir.path(), &env, &mut tally, || proxy.fail_randomly(0, 0.0), census);
    }
    let faulted = proxy.requests().iter().filter(|r| r.answered_by_proxy && r.status >= 500).count();
    assert!(faulted > 0, "the proxy answered no request with a fault");
    tally.report(&trials);
    tally.assert_clean();
}

#[test]
fn with_a_fifth_of_digitalocean_requests_failing_apply_converges_and_creates_nothing_twice() {
    let trials = Trials::from_env();
    let s = Server::start(Duration::from_millis(200));
    let direct = s.census_provider();
    let mut tally = Tally::new("DigitalOcean test server, 20 % faults");
    // Server errors before acting, and lost answers after acting.
    let faults = vec![Fault::Fail(500), Fault::Fail(503), Fault::FailAfter(500), Fault::FailAfter(502)];
    for n in 0..2u32 {
        s.server.inject_randomly(trials.seed + u64::from(n), 0.2, faults.clone());
        let dir = tempfile::tempdir().unwrap();
        spec(dir.path(), &format!("faults-do-{n}"), "digitalocean", ["Frankfurt", "Amsterdam"]);
        let census = |net: &str| inventory_census(&s.rt, &direct, net, &["fra1", "ams3"]);
        converge(dir.path(), &s.env(), &mut tally, || s.server.inject_randomly(0, 0.0, Vec::new()), census);
    }
    assert!(s.server.random_faults() > 0, "no fault struck");
    eprintln!("{} requests, {} random faults", s.server.total_requests(), s.server.random_faults());
    s.server.assert_conforms();
    tally.report(&trials);
    tally.assert_clean();
}
