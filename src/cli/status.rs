//! `peerfleet status`: the live network judged against its spec, once or every N seconds, as a table,
//! JSON, or the Prometheus text format (for node_exporter's textfile collector or a scrape proxy).

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use peerfleet::Deployment;
use peerfleet::core::plan::Layer;
use peerfleet::core::provider::HealthDetail;
use peerfleet::core::refresh;
use peerfleet::core::resource::Actual;
use peerfleet::core::state::StateBackend;
use peerfleet::core::status::{self, StatusReport};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::args::{StatusArgs, StatusFormat};

/// Runs `status`; the exit code of the last look: 0 healthy, 2 degraded, 1 error.
pub async fn run(d: &Deployment, a: &StatusArgs) -> Result<u8> {
    let only = a.only.map(|_| Layer::Machines);
    let format = match (a.format, a.json) {
        (Some(f), _) => f,
        (None, true) => StatusFormat::Json,
        (None, false) => StatusFormat::Text,
    };
    let redraw = a.watch.is_some() && format == StatusFormat::Text && std::io::stdout().is_terminal();
    let mut looks = 0u64;
    loop {
        let code = match look(d, only).await {
            Ok(report) => {
                let out = match format {
                    StatusFormat::Text => report.text(),
                    StatusFormat::Json => format!("{}\n", serde_json::to_string(&report)?),
                    StatusFormat::Prometheus => prometheus(&report),
                };
                if redraw {
                    // Clear the screen and go home, so the table stays in place.
                    print!("\x1b[2J\x1b[H");
                }
                print!("{out}");
                report.exit_code()
            }
            Err(e) => {
                eprintln!("Error: {e:#}");
                1
            }
        };
        looks += 1;
        let Some(every) = a.watch else { return Ok(code) };
        if a.count.is_some_and(|n| looks >= n) {
            return Ok(code);
        }
        tokio::time::sleep(Duration::from_secs(every.max(1))).await;
    }
}

/// One look: refresh as `plan` does, then ask each container's engine what its health check said.
async fn look(d: &Deployment, only: Option<Layer>) -> Result<StatusReport> {
    let state = d.store().load().await?;
    let connected = d.connect(&state, only).await?;
    let remembered: Vec<Actual> = state.resources.values().cloned().collect();
    let actual = refresh::refresh(d.network(), &connected.providers, &remembered, only)
        .await
        .context("reading the network")?;
    let mut details = BTreeMap::new();
    if let (None, Some(engines)) = (only, connected.providers.engines()) {
        for object in actual.objects.values() {
            let Actual::Container(c) = object else { continue };
            let Some(machine) = c.spec.as_ref().and_then(|s| actual.machine(&s.node)) else { continue };
            let detail = match engines.engine_for(machine).await {
                Ok(engine) => engine.health_detail(c).await,
                Err(e) => Err(e),
            };
            match detail {
                Ok(Some(detail)) => {
                    details.insert(c.address.clone(), detail);
                }
                Ok(None) => {}
                // One unreachable engine degrades what it runs; it does not hide the rest.
                Err(e) => {
                    tracing::warn!(container = %c.address, error = %e, "no health detail");
                    details.insert(c.address.clone(), HealthDetail::default());
                }
            }
        }
    }
    let chain = state.chain.as_ref().map(|p| p.id.clone()).unwrap_or_else(|| d.network().chain.id.clone());
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|t| t.as_secs()).unwrap_or(0);
    Ok(status::assess(d.network(), &actual, &details, &chain, now, only.is_some()))
}

type Labels = Vec<(String, String)>;

fn family(registry: &mut Registry, name: &str, help: &str, values: Vec<(Labels, i64)>) {
    let f = Family::<Labels, Gauge>::default();
    for (labels, v) in values {
        f.get_or_create(&labels).set(v);
    }
    registry.register(name, help, f);
}

/// The report in the Prometheus text format, through `prometheus-client`.
pub fn prometheus(report: &StatusReport) -> String {
    let mut registry = Registry::with_prefix("peerfleet");
    let net = || ("network".to_string(), report.network.clone());
    let of = |c: &status::ContainerStatus| -> Labels {
        vec![
            net(),
            ("address".into(), c.address.clone()),
            ("name".into(), c.name.clone()),
            ("role".into(), c.role.to_string()),
        ]
    };
    family(
        &mut registry,
        "network_healthy",
        "1 when every declared container is healthy on the pinned chain",
        vec![(vec![net(), ("chain_id".into(), report.chain_id.to_string())], i64::from(report.is_healthy()))],
    );
    family(
        &mut registry,
        "node_up",
        "1 when the machine is running",
        report
            .nodes
            .iter()
            .map(|n| {
                let labels = vec![
                    net(),
                    ("address".into(), n.address.clone()),
                    ("provider".into(), n.provider.clone()),
                    ("region".into(), n.region.clone()),
                ];
                (labels, i64::from(n.state == peerfleet::core::resource::MachineStatus::Running))
            })
            .collect(),
    );
    let containers = &report.containers;
    family(
        &mut registry,
        "container_healthy",
        "1 when the container runs, is healthy and reports the pinned chain",
        containers.iter().map(|c| (of(c), i64::from(c.problem.is_none()))).collect(),
    );
    family(
        &mut registry,
        "container_chain_match",
        "1 when the chain the container reports is the pinned one",
        containers.iter().filter_map(|c| c.chain_matches.map(|m| (of(c), i64::from(m)))).collect(),
    );
    family(
        &mut registry,
        "relay_peered",
        "1 when the relay is peered with the master",
        containers.iter().filter_map(|c| c.master_peered.map(|p| (of(c), i64::from(p)))).collect(),
    );
    family(
        &mut registry,
        "container_peers",
        "Live peers the node reports",
        containers.iter().filter_map(|c| c.peers.map(|p| (of(c), i64::from(p)))).collect(),
    );
    family(
        &mut registry,
        "container_uptime_seconds",
        "Seconds since the container started",
        containers
            .iter()
            .filter_map(|c| c.uptime_s.map(|s| (of(c), i64::try_from(s).unwrap_or(i64::MAX))))
            .collect(),
    );
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = encode(&mut out, &registry);
    out
}
