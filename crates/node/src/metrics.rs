//! `GET /metrics`: the node's counters in the Prometheus text format, encoded by `prometheus-client`.
//!
//! A registry is built per request from a snapshot of the node's state: the numbers live where the
//! node already keeps them ([`Shared`]), so there is one source for `/status`, the probe and metrics.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::state::Shared;

type Labels = Vec<(String, String)>;

fn gauge(value: u64) -> Gauge {
    let g = Gauge::default();
    g.set(i64::try_from(value).unwrap_or(i64::MAX));
    g
}

fn counter(value: u64) -> Counter {
    let c = Counter::default();
    c.inc_by(value);
    c
}

/// The metrics document of the node.
pub(crate) fn render(shared: &Shared) -> String {
    let status = shared.status();
    let counters = shared.counters();
    let mut registry = Registry::with_prefix("peerfleet_node");
    let labels: Labels =
        vec![("role".into(), status.role.to_string()), ("chain_id".into(), status.chain_id.to_string())];
    let info = Family::<Labels, Gauge>::default();
    info.get_or_create(&labels).set(1);
    registry.register("info", "The node's role and chain (always 1)", info);
    registry.register("peers", "Live peers", gauge(u64::try_from(status.peers.len()).unwrap_or(u64::MAX)));
    registry.register("uptime_seconds", "Seconds since the node started", gauge(status.uptime_s));
    registry.register("handshakes_accepted", "Handshakes that completed", counter(counters.accepted));
    let refused = Family::<Labels, Counter>::default();
    for (reason, n) in &counters.refused {
        refused.get_or_create(&vec![("reason".into(), (*reason).to_string())]).inc_by(*n);
    }
    registry.register("handshakes_refused", "Refused handshakes, either side, by reason", refused);
    registry.register("genesis_served_bytes", "Bytes of genesis served", counter(counters.genesis_bytes));
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = encode(&mut out, &registry);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ChainId, Role};

    #[test]
    fn metrics_parse_as_prometheus_text_with_refusals_by_reason() {
        let shared = Shared::new(Role::Master, ChainId::of(b"g"), "me".into());
        shared.record_refusal(true, "chain ID mismatch: expected 1a…, got 2b…");
        shared.record_refusal(true, "chain ID mismatch: expected 1a…, got 3c…");
        shared.record_genesis_served(120);
        let text = render(&shared);
        let lines = text.lines().map(|l| Ok(l.to_string()));
        let scrape = prometheus_parse::Scrape::parse(lines).expect("Prometheus text format");
        let value = |name: &str, label: Option<(&str, &str)>| {
            scrape
                .samples
                .iter()
                .find(|s| s.metric == name && label.is_none_or(|(k, v)| s.labels.get(k) == Some(v)))
                .map(|s| match s.value {
                    prometheus_parse::Value::Counter(v)
                    | prometheus_parse::Value::Gauge(v)
                    | prometheus_parse::Value::Untyped(v) => v,
                    _ => f64::NAN,
                })
        };
        assert_eq!(
            value("peerfleet_node_handshakes_refused_total", Some(("reason", "chain_mismatch"))),
            Some(2.0),
            "{text}"
        );
        assert_eq!(value("peerfleet_node_genesis_served_bytes_total", None), Some(120.0), "{text}");
        assert_eq!(value("peerfleet_node_peers", None), Some(0.0), "{text}");
        assert_eq!(value("peerfleet_node_info", Some(("role", "master"))), Some(1.0), "{text}");
    }
}
