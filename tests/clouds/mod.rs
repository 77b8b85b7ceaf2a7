//! The machine layer on the clouds' stand-ins, through the CLI: AWS EC2 on moto, DigitalOcean on the
//! project's test server (every request and response checked against DigitalOcean's OpenAPI
//! description). Only `--only machines` runs here: the addresses the stand-ins hand out are not
//! machines, and nothing may connect to them.

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use peerfleet::aws::testing::Moto;
use peerfleet::core::network::ProviderKind;
use peerfleet::core::provider::MachineProvider;
use peerfleet_digitalocean_testserver::{Config, Delays, TestServer};

use crate::support::{parts, root, without_cloud_env};

mod status;

/// The chain of `examples/genesis.json`.
pub(crate) const CHAIN: &str = "c9deea424d5acb5719414c8d3779cc4363cc8c9b9ccaa380a34131b094215199";

/// A spec from `examples/` copied into a fresh directory with its genesis.
pub(crate) fn example(file: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(root().join("examples").join(file), dir.path().join("network.toml")).unwrap();
    std::fs::copy(root().join("examples/genesis.json"), dir.path().join("genesis.json")).unwrap();
    dir
}

/// Credentials files with a default profile and the `china` profile the aws-cn cluster names
/// (dummy keys: only the stand-in sees them).
pub(crate) fn aws_profiles(dir: &Path) -> Vec<(String, String)> {
    let config = dir.join("aws-config");
    let credentials = dir.join("aws-credentials");
    std::fs::write(&config, "[default]\nregion = us-east-1\n\n[profile china]\nregion = cn-north-1\n")
        .unwrap();
    std::fs::write(
        &credentials,
        "[default]\naws_access_key_id = testing\naws_secret_access_key = testing\n\n\
         [china]\naws_access_key_id = testing\naws_secret_access_key = testing\n",
    )
    .unwrap();
    vec![
        ("AWS_CONFIG_FILE".into(), config.display().to_string()),
        ("AWS_SHARED_CREDENTIALS_FILE".into(), credentials.display().to_string()),
    ]
}

/// The CLI in `dir` with exactly the cloud environment given (and none inherited), ready to run.
pub(crate) fn cli(dir: &Path, env: &[(String, String)], args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_peerfleet"));
    cmd.args(args).current_dir(dir).stdin(std::process::Stdio::null()).env("NO_COLOR", "1");
    without_cloud_env(&mut cmd);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

/// Runs [`cli`] to completion.
pub(crate) fn run(dir: &Path, env: &[(String, String)], args: &[&str]) -> Output {
    cli(dir, env, args).output().expect("the peerfleet binary runs")
}

pub(crate) fn ok(out: Output) -> String {
    let (code, stdout, stderr) = parts(&out);
    assert_eq!(code, 0, "exit {code}:\n{stdout}\n{stderr}");
    stdout
}

fn machine_plan_exit(dir: &Path, env: &[(String, String)]) -> (i32, String) {
    let (code, out, err) =
        parts(&run(dir, env, &["plan", "-f", "network.toml", "--only", "machines", "--detailed-exitcode"]));
    (code, format!("{out}{err}"))
}

pub(crate) fn moto(test: &str) -> Option<Moto> {
    match Moto::for_test(test) {
        Ok(m) => m,
        Err(e) => panic!("{test}: moto did not start: {e}"),
    }
}

#[test]
fn aws_eight_regions_machine_layer_applies_converges_and_destroys_through_the_cli() {
    let Some(moto) = moto("aws_eight_regions_machine_layer_applies_converges_and_destroys_through_the_cli")
    else {
        return;
    };
    let dir = example("aws_eight_regions.toml");
    let dir = dir.path();
    let mut env = aws_profiles(dir);
    env.push(("AWS_ENDPOINT_URL".into(), moto.endpoint()));

    // At the most verbose logging: user data carries each machine's TLS key, and no log may show it.
    let applied =
        run(dir, &env, &["-vv", "apply", "-f", "network.toml", "--only", "machines", "--auto-approve"]);
    let logs = String::from_utf8_lossy(&applied.stderr).into_owned();
    assert!(logs.contains("TRACE") || logs.contains("DEBUG"), "-vv logs something");
    for secret in ["PRIVATE KEY", "UserData", "LS0tLS1CRUdJTi", "server-key"] {
        assert!(!logs.contains(secret), "`{secret}` appeared in the logs");
    }
    let out = ok(applied);
    // 8 machines, 8 security groups, Elastic IPs for the genesis and master hosts.
    assert!(out.contains("18 added"), "{out}");
    let (code, text) = machine_plan_exit(dir, &env);
    assert_eq!(code, 0, "the machine layer converged:\n{text}");

    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let provider = peerfleet::aws::AwsProvider::new(peerfleet::aws::testing::settings(&moto.endpoint()));
    let regions = peerfleet::aws::testing::EIGHT_REGIONS;
    let count = |rt: &tokio::runtime::Runtime| -> usize {
        regions
            .iter()
            .map(|r| rt.block_on(provider.inventory("aws-eight-regions", r)).unwrap().machines.len())
            .sum()
    };
    assert_eq!(count(&rt), 8);

    // Destroying the genesis host needs the chain ID even though no container ever ran: the machine
    // carries the pin from its creation.
    let (code, _, err) = parts(&run(dir, &env, &["destroy", "-f", "network.toml", "--auto-approve"]));
    assert_eq!(code, 1, "{err}");
    assert!(err.contains(CHAIN), "{err}");
    ok(run(dir, &env, &["destroy", "-f", "network.toml", "--auto-approve", "--replace-genesis", CHAIN]));
    assert_eq!(count(&rt), 0, "no tagged instance is left");
    for r in regions {
        let inv = rt.block_on(provider.inventory("aws-eight-regions", r)).unwrap();
        assert!(inv.firewalls.is_empty() && inv.stable_ips.is_empty(), "{r}: {inv:?}");
    }
}

pub(crate) struct Server {
    pub(crate) rt: tokio::runtime::Runtime,
    pub(crate) server: TestServer,
}

impl Server {
    pub(crate) fn start(boot: Duration) -> Server {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let config =
            Config { timing: Delays { boot, action: Duration::from_millis(100) }, ..Config::default() };
        let server = rt.block_on(TestServer::start_with(config)).unwrap();
        Server { rt, server }
    }

    pub(crate) fn env(&self) -> Vec<(String, String)> {
        vec![
            ("DIGITALOCEAN_API_URL".into(), self.server.url().to_string()),
            ("DIGITALOCEAN_TOKEN".into(), self.server.token().to_string()),
        ]
    }

    /// A provider of this server for a test's own census: every listing is made afresh, since one
    /// reused from an earlier trial would miss objects.
    pub(crate) fn census_provider(&self) -> peerfleet::digitalocean::DigitalOceanProvider {
        let settings = peerfleet::digitalocean::Settings {
            api_url: self.server.url().to_string(),
            refresh_reuse: Duration::ZERO,
            ..peerfleet::digitalocean::Settings::default()
        };
        let token = peerfleet::core::provider::Secret::new(self.server.token().to_string());
        peerfleet::digitalocean::DigitalOceanProvider::new(token, settings).unwrap()
    }

    fn droplets(&self) -> Vec<peerfleet_digitalocean_testserver::Droplet> {
        self.server.with_world(|w| w.droplets())
    }
}

#[test]
fn digitalocean_machine_layer_through_the_cli_creates_updates_replaces_adopts_and_deletes() {
    let s = Server::start(Duration::from_millis(1500));
    let env = s.env();
    let dir = example("digitalocean.toml");
    let dir = dir.path();
    let spec = dir.join("network.toml");
    let edit = |from: &str, to: &str| {
        let text = std::fs::read_to_string(&spec).unwrap();
        assert!(text.contains(from), "{from}");
        std::fs::write(&spec, text.replacen(from, to, 1)).unwrap();
    };

    // Crash mid-apply (kill -9 while droplets boot), then apply again: what carries our tags is
    // adopted, nothing is created twice.
    let mut child = Command::new(env!("CARGO_BIN_EXE_peerfleet"))
        .args(["apply", "-f", "network.toml", "--only", "machines", "--auto-approve"])
        .current_dir(dir)
        .envs(env.iter().cloned())
        .env_remove("DIGITALOCEAN_ACCESS_TOKEN")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while s.droplets().is_empty() {
        assert!(start.elapsed() < Duration::from_secs(60), "no droplet was ever created");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let before_rerun = s.droplets().len();
    // The killed run's lock died with it (an operating-system lock): no force-unlock, no lease to
    // wait out; a lock still held would fail this apply at once.
    ok(run(dir, &env, &["apply", "-f", "network.toml", "--only", "machines", "--auto-approve"]));
    let droplets = s.droplets();
    assert_eq!(droplets.len(), 5, "adopted {before_rerun} droplets from the crash, created only the rest");
    let mut names: Vec<_> = droplets.iter().map(|d| d.name.clone()).collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), 5, "no duplicate names: {names:?}");
    assert_eq!(machine_plan_exit(dir, &env).0, 0);

    // Tags change in place.
    edit(
        "name = \"london\"\nprovider = \"digitalocean\"\nregion = \"London\"    # lon1\nsize = \"s-1vcpu-1gb\"\ntags = [\"peer_cluster\"]",
        "name = \"london\"\nprovider = \"digitalocean\"\nregion = \"London\"    # lon1\nsize = \"s-2vcpu-2gb\"\ntags = [\"peer_cluster\", \"edge\"]",
    );
    let (code, text) = machine_plan_exit(dir, &env);
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("~ machine.london[0]") || text.contains("~ machine.london[0]".trim()), "{text}");
    assert!(text.contains("Plan: 0 to add, 1 to change, 0 to replace, 0 to destroy."), "{text}");
    let london_id = s.droplets().iter().find(|d| d.name.contains("london")).unwrap().id;
    ok(run(dir, &env, &["apply", "-f", "network.toml", "--only", "machines", "--auto-approve"]));
    let london = s.droplets().into_iter().find(|d| d.name.contains("london")).unwrap();
    assert_eq!(london.id, london_id, "resized and retagged in place");
    assert_eq!(london.size, "s-2vcpu-2gb");
    assert!(london.tags.contains(&"edge".to_string()), "{:?}", london.tags);
    assert_eq!(machine_plan_exit(dir, &env).0, 0);

    // A new image replaces the droplet.
    edit(
        "name = \"sydney\"\nprovider = \"digitalocean\"",
        "name = \"sydney\"\nimage = \"ubuntu-24-04-x64\"\nprovider = \"digitalocean\"",
    );
    let sydney_id = s.droplets().iter().find(|d| d.name.contains("sydney")).unwrap().id;
    let (code, text) = machine_plan_exit(dir, &env);
    assert_eq!(code, 2);
    assert!(text.contains("-/+ machine.sydney[0]"), "{text}");
    ok(run(dir, &env, &["apply", "-f", "network.toml", "--only", "machines", "--auto-approve"]));
    let sydney = s.droplets().into_iter().find(|d| d.name.contains("sydney")).unwrap();
    assert_ne!(sydney.id, sydney_id);
    assert_eq!(s.droplets().len(), 5);
    assert_eq!(machine_plan_exit(dir, &env).0, 0);

    // Delete cleans up droplets, firewalls and reserved IPs.
    ok(run(dir, &env, &["destroy", "-f", "network.toml", "--auto-approve", "--replace-genesis", CHAIN]));
    assert!(s.droplets().is_empty());
    let (firewalls, ips) = s.server.with_world(|w| (w.firewalls_json().len(), w.reserved_ips_json().len()));
    assert_eq!((firewalls, ips), (0, 0));
    s.server.assert_conforms();
    drop(s.rt);
}

#[test]
fn the_nine_region_machine_layer_applies_on_moto_and_the_digitalocean_server_together() {
    let Some(moto) =
        moto("the_nine_region_machine_layer_applies_on_moto_and_the_digitalocean_server_together")
    else {
        return;
    };
    let s = Server::start(Duration::from_millis(200));
    let dir = example("nine_regions.toml");
    let dir = dir.path();
    let mut env = aws_profiles(dir);
    env.push(("AWS_ENDPOINT_URL".into(), moto.endpoint()));
    env.extend(s.env());
    let out = ok(run(dir, &env, &["apply", "-f", "network.toml", "--only", "machines", "--auto-approve"]));
    assert!(out.contains("Apply complete!"), "{out}");
    let (code, text) = machine_plan_exit(dir, &env);
    assert_eq!(code, 0, "{text}");
    assert_eq!(s.droplets().len(), 5);
    let kinds: std::collections::BTreeSet<_> = [ProviderKind::Aws, ProviderKind::DigitalOcean].into();
    assert_eq!(kinds.len(), 2);
    ok(run(dir, &env, &["destroy", "-f", "network.toml", "--auto-approve", "--replace-genesis", CHAIN]));
    assert!(s.droplets().is_empty());
    s.server.assert_conforms();
}
