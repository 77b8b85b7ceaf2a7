//! `peerfleet status`: the live network judged against its spec, once or every N seconds, as tables,
//! JSON, or the Prometheus text format (for node_exporter's textfile collector or a cron job).
//!
//! The look itself is the library's ([`peerfleet::Deployment::status`]); this module chooses the
//! form, repeats it, and turns the verdict into the exit code a monitor reads: 0 healthy on the pinned
//! chain, 2 degraded, 1 error.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use anyhow::Result;
use peerfleet::core::plan::Layer;
use peerfleet::core::state::Timestamp;
use peerfleet::core::status::{ContainerStatus, StatusReport};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::time::Instant;

use super::advice;
use super::args::{StatusArgs, StatusFormat, StatusOnly};
use super::state::deployment;

/// Clears a terminal and puts the cursor home, so a watched table stays in place.
const REDRAW: &str = "\x1b[2J\x1b[H";

/// Runs `status`: one look, or `--watch` looks until `--count` of them (or an interrupt).
pub(super) async fn run(a: &StatusArgs) -> Result<u8> {
    let d = deployment(&a.target).await?;
    let only = a.only.map(|StatusOnly::Machines| Layer::Machines);
    let format = if a.json { StatusFormat::Json } else { a.format };
    let Some(every) = a.watch else {
        // One look: an error is the command's error (exit 1 with its next step, as every command).
        let report = d.status(only).await?;
        print!("{}", render(&report, format, false));
        return Ok(report.exit_code());
    };
    let redraw = std::io::stdout().is_terminal();
    let mut looks = 0u64;
    loop {
        let started = Instant::now();
        let look = d.status(only).await;
        looks += 1;
        if redraw {
            print!("{REDRAW}");
        }
        let code = match look {
            Ok(report) => {
                if format == StatusFormat::Text {
                    println!("Looked at {} (every {every}s)", Timestamp::now());
                }
                print!("{}", render(&report, format, true));
                report.exit_code()
            }
            // A monitor keeps watching through a failed look: the engine may come back.
            Err(e) => {
                let e = anyhow::Error::new(e);
                eprintln!("Error: {}", advice::message(&e, Some(&a.target.spec.file)));
                1
            }
        };
        // Piped output is block-buffered: each look must reach the reader when it is made.
        let _ = std::io::stdout().flush();
        if a.count.is_some_and(|n| looks >= n) {
            return Ok(code);
        }
        // Every N seconds from the start of a look, so slow looks do not stretch the period.
        tokio::time::sleep_until(started + Duration::from_secs(every)).await;
    }
}

/// The report in `format`; JSON on one line when `watching` (one document per line, appendable).
fn render(report: &StatusReport, format: StatusFormat, watching: bool) -> String {
    match format {
        StatusFormat::Text => report.text(),
        StatusFormat::Json if watching => format!("{}\n", serde_json::json!(report)),
        StatusFormat::Json => format!("{:#}\n", serde_json::json!(report)),
        StatusFormat::Prometheus => prometheus(report),
    }
}

type Labels = Vec<(String, String)>;

/// Registers one gauge family with a sample per `(labels, value)`.
fn gauges(registry: &mut Registry, name: &str, help: &str, samples: impl IntoIterator<Item = (Labels, i64)>) {
    let family = Family::<Labels, Gauge>::default();
    for (labels, value) in samples {
        family.get_or_create(&labels).set(value);
    }
    registry.register(name, help, family);
}

/// The report in the Prometheus text exposition format, encoded by `prometheus-client` (which
/// escapes label values: names and chain IDs come from labels and probes).
pub(super) fn prometheus(report: &StatusReport) -> String {
    let mut registry = Registry::with_prefix("peerfleet");
    let network = || ("network".to_string(), report.network.clone());
    let of = |c: &ContainerStatus| -> Labels {
        vec![
            network(),
            ("address".into(), c.address.clone()),
            ("name".into(), c.name.clone()),
            ("role".into(), c.role.as_str().into()),
        ]
    };
    let containers = &report.containers;
    let count = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    gauges(
        &mut registry,
        "network_healthy",
        "1 when every declared machine and container is up, healthy and on the pinned chain",
        [(vec![network(), ("chain_id".into(), report.chain_id.to_string())], i64::from(report.is_healthy()))],
    );
    // `machine_`, not `node_`: the reference node's own metrics are `peerfleet_node_*`.
    gauges(
        &mut registry,
        "machine_running",
        "1 when the machine is running",
        report.nodes.iter().map(|n| {
            let labels = vec![
                network(),
                ("address".into(), n.address.clone()),
                ("provider".into(), n.provider.clone()),
                ("region".into(), n.region.clone()),
            ];
            (labels, i64::from(n.state == peerfleet::core::resource::MachineStatus::Running))
        }),
    );
    gauges(
        &mut registry,
        "container_healthy",
        "1 when the container runs, is healthy and reports the pinned chain (0 when missing)",
        containers.iter().map(|c| (of(c), i64::from(c.problem.is_none()))),
    );
    gauges(
        &mut registry,
        "container_chain_match",
        "1 when the chain the container reports is the pinned one (absent when it reports none)",
        containers.iter().filter_map(|c| Some((of(c), i64::from(c.chain_matches?)))),
    );
    gauges(
        &mut registry,
        "relay_peered",
        "1 when the relay is peered with the master",
        containers.iter().filter_map(|c| Some((of(c), i64::from(c.master_peered?)))),
    );
    gauges(
        &mut registry,
        "master_relays",
        "Relays peered with the master",
        containers.iter().filter_map(|c| Some((of(c), i64::from(c.relays?)))),
    );
    gauges(
        &mut registry,
        "container_peers",
        "Live peers the node reports",
        containers.iter().filter_map(|c| Some((of(c), i64::from(c.peers?)))),
    );
    gauges(
        &mut registry,
        "container_uptime_seconds",
        "Seconds since the container started",
        containers.iter().filter_map(|c| Some((of(c), count(c.uptime_s?)))),
    );
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = encode(&mut out, &registry);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use peerfleet::core::network::{ChainId, Role};
    use peerfleet::core::resource::{Health, MachineStatus};
    use peerfleet::core::status::NodeStatus;
    use prometheus_parse::{Scrape, Value};

    fn container(name: &str, role: Role, peered: Option<bool>, problem: Option<&str>) -> ContainerStatus {
        ContainerStatus {
            address: format!("container.{}[0]", role.as_str()),
            name: name.into(),
            role,
            node: Some("machine.virginia[0]".into()),
            state: "running".into(),
            health: Some(Health::Healthy),
            chain_id: Some(ChainId::of(b"g").to_string()),
            chain_matches: Some(true),
            peers: Some(1),
            master_peered: peered,
            peered_since_unix_s: peered.map(|_| 900),
            relays: (role == Role::Master).then_some(1),
            uptime_s: Some(120),
            last_refusal: None,
            probe_says: None,
            problem: problem.map(Into::into),
        }
    }

    fn report() -> StatusReport {
        StatusReport {
            network: "st \"quoted\"".into(),
            chain_id: ChainId::of(b"g"),
            nodes: vec![NodeStatus {
                address: "machine.virginia[0]".into(),
                provider: "local".into(),
                region: "virginia".into(),
                public_ip: None,
                state: MachineStatus::Running,
            }],
            containers: vec![
                container("master-1", Role::Master, None, None),
                container("relay-1", Role::Relay, Some(false), Some("not peered with the master")),
            ],
            problems: vec!["relay-1 (container.relay[0]): not peered with the master".into()],
            checked_unix_s: 1000,
            machines_only: false,
        }
    }

    fn value(scrape: &Scrape, metric: &str, name: Option<&str>) -> Option<f64> {
        scrape
            .samples
            .iter()
            .find(|s| s.metric == metric && name.is_none_or(|n| s.labels.get("name") == Some(n)))
            .and_then(|s| match s.value {
                Value::Gauge(v) | Value::Untyped(v) => Some(v),
                _ => None,
            })
    }

    #[test]
    fn prometheus_output_parses_and_carries_health_peering_peers_chain_and_uptime() {
        let text = prometheus(&report());
        let scrape = Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).expect("Prometheus text format");
        assert_eq!(value(&scrape, "peerfleet_network_healthy", None), Some(0.0), "{text}");
        assert_eq!(value(&scrape, "peerfleet_machine_running", None), Some(1.0), "{text}");
        assert_eq!(value(&scrape, "peerfleet_container_healthy", Some("master-1")), Some(1.0), "{text}");
        assert_eq!(value(&scrape, "peerfleet_container_healthy", Some("relay-1")), Some(0.0), "{text}");
        assert_eq!(value(&scrape, "peerfleet_relay_peered", Some("relay-1")), Some(0.0), "{text}");
        assert_eq!(value(&scrape, "peerfleet_relay_peered", Some("master-1")), None, "{text}");
        assert_eq!(value(&scrape, "peerfleet_master_relays", Some("master-1")), Some(1.0), "{text}");
        assert_eq!(value(&scrape, "peerfleet_container_chain_match", Some("relay-1")), Some(1.0), "{text}");
        assert_eq!(value(&scrape, "peerfleet_container_uptime_seconds", Some("relay-1")), Some(120.0));
        // Label values are escaped by the encoder, not spliced in (a name could end the label early).
        assert!(text.contains(r##"network="st \"quoted\"""##), "{text}");
    }

    #[test]
    fn json_is_one_line_per_look_when_watching_and_carries_the_per_container_facts() {
        let watched = render(&report(), StatusFormat::Json, true);
        assert_eq!(watched.lines().count(), 1, "{watched}");
        let doc: serde_json::Value = serde_json::from_str(&watched).unwrap();
        assert_eq!(doc["containers"][1]["master_peered"], false);
        assert_eq!(doc["containers"][0]["relays"], 1);
        assert_eq!(doc["checked_unix_s"], 1000);
        let once = render(&report(), StatusFormat::Json, false);
        assert_eq!(serde_json::from_str::<serde_json::Value>(&once).unwrap(), doc);
    }
}
