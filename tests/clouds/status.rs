//! `status --only machines` on the DigitalOcean stand-in: the machine layer judged through the CLI
//! with no container engine dialled (the stand-in's addresses are not machines), in every format.

use std::path::Path;
use std::time::{Duration, Instant};

use super::{CHAIN, Server, cli, example, ok, run};
use crate::support::{bounded, parts, samples, scrape};

/// `peerfleet status -f network.toml --only machines ARGS` in `dir`, failing the test if it hangs
/// (a dialled fake address would).
fn status(dir: &Path, env: &[(String, String)], args: &[&str]) -> (i32, String, String) {
    let mut cmd = cli(dir, env, &["status", "-f", "network.toml", "--only", "machines"]);
    parts(&bounded(cmd.args(args), Duration::from_secs(60)))
}

#[test]
fn status_only_machines_judges_the_droplets_in_every_format_without_dialling_an_engine() {
    let s = Server::start(Duration::from_millis(200));
    let env = s.env();
    let dir = example("digitalocean.toml");
    let dir = dir.path();

    // Nothing deployed: an error a monitor tells from "degraded", not a verdict.
    let (code, out, err) = status(dir, &env, &[]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("`digitalocean-five` has not been deployed"), "{err}");

    ok(run(dir, &env, &["apply", "-f", "network.toml", "--only", "machines", "--auto-approve"]));
    let (code, out, err) = status(dir, &env, &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("healthy: 5 machines running (containers not looked at)"), "{out}");
    for region in ["sgp1", "syd1", "fra1", "ams3", "lon1"] {
        assert!(out.contains(region), "{region}: {out}");
    }
    assert!(!out.contains("CONTAINER"), "no container table when containers are not looked at: {out}");

    let (code, out, err) = status(dir, &env, &["--json"]);
    assert_eq!(code, 0, "{err}");
    let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
    let nodes = doc["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 5, "{doc:#}");
    assert!(nodes.iter().all(|n| n["provider"] == "digitalocean" && n["state"] == "running"), "{doc:#}");
    assert!(nodes.iter().all(|n| n["public_ip"].is_string()), "{doc:#}");
    assert_eq!(doc["machines_only"], true);
    assert_eq!(doc["containers"].as_array().map(Vec::len), Some(0));
    assert_eq!(doc["chain_id"], CHAIN);

    let (code, out, err) = status(dir, &env, &["--format", "prometheus"]);
    assert_eq!(code, 0, "{err}");
    let metrics = scrape(&out);
    assert_eq!(samples(&metrics, "peerfleet_network_healthy", None), [1.0], "{out}");
    assert_eq!(samples(&metrics, "peerfleet_machine_running", None), [1.0; 5], "{out}");

    // --watch appends one JSON line per look and, bounded by --count, stops by itself.
    let started = Instant::now();
    let (code, out, err) = status(dir, &env, &["--json", "--watch", "1", "--count", "2"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.lines().count(), 2, "{out}");
    assert!(out.lines().all(|l| serde_json::from_str::<serde_json::Value>(l).is_ok()), "{out}");
    assert!(started.elapsed() >= Duration::from_secs(1), "the second look waited its period");

    // A declared machine that does not exist degrades the network, by name.
    let spec = dir.join("network.toml");
    let text = std::fs::read_to_string(&spec).unwrap();
    let from = "name = \"london\"\nprovider = \"digitalocean\"";
    assert!(text.contains(from));
    std::fs::write(
        &spec,
        text.replacen(from, "name = \"london\"\nnodes = 2\nprovider = \"digitalocean\"", 1),
    )
    .unwrap();
    let (code, out, err) = status(dir, &env, &[]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(
        out.contains("degraded: 5 machines running") && out.contains("machine.london[1] is missing"),
        "{out}"
    );
    std::fs::write(&spec, text).unwrap();

    ok(run(dir, &env, &["destroy", "-f", "network.toml", "--auto-approve", "--replace-genesis", CHAIN]));
    s.server.assert_conforms();
    drop(s.rt);
}
