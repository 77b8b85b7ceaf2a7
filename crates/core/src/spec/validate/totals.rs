//! Limits on the network as a whole, and names that would collide once containers exist.
//!
//! Each field has its own limit, but a spec can respect every one of them and still ask for a
//! network no plan can be computed for in reasonable time or memory (a hundred clusters of a
//! thousand nodes, a hundred services of a hundred thousand containers). These totals bound the
//! work of validation, placement and planning; they are documented in `docs/spec.md`.

use std::collections::BTreeMap;

use crate::network::{Chain, Cluster, Service};

use super::super::MAX_GENESIS_BYTES;
use super::super::error::SpecErrorKind;
use super::super::raw::RawSpec;
use super::Checker;

/// Most `[[clusters]]` entries one network may declare.
pub const MAX_CLUSTERS: usize = 200;
/// Most `[[services]]` entries one network may declare.
pub const MAX_SERVICES: usize = 200;
/// Most tags in one `tags` or `deploy_tags` list.
pub const MAX_TAGS: usize = 32;
/// Most machines (nodes of all clusters together) one network may declare.
pub const MAX_NETWORK_NODES: u64 = 5_000;
/// Most containers (of all services together, `every_node` services counted by their nodes) one
/// network may declare.
pub const MAX_NETWORK_CONTAINERS: u64 = 50_000;

impl Checker<'_> {
    /// Refuses more clusters or services than [`MAX_CLUSTERS`]/[`MAX_SERVICES`] at once, before
    /// anything else is checked: the rest of validation compares every service with every cluster.
    pub(super) fn entry_counts(&mut self, raw: &RawSpec) -> Result<(), super::SpecErrors> {
        let lists =
            [("clusters", raw.clusters.iter().map(|c| c.span.clone()).collect::<Vec<_>>(), MAX_CLUSTERS)];
        let services =
            ("services", raw.services.iter().map(|s| s.span.clone()).collect::<Vec<_>>(), MAX_SERVICES);
        for (what, spans, max) in lists.into_iter().chain([services]) {
            if let Some(first_extra) = spans.get(max) {
                let expected = format!("at most {max} {what} in one network");
                let found = format!("{} (the first one too many is {what}[{max}])", spans.len());
                self.invalid::<()>(first_extra.clone(), what, &expected, found);
            }
        }
        match super::SpecErrors::with_omitted(std::mem::take(&mut self.errors), 0) {
            Some(errors) => Err(errors),
            None => Ok(()),
        }
    }

    /// Whether the genesis is within [`MAX_GENESIS_BYTES`] (reported when it is not). A file that
    /// is too large is refused when read; this catches a builder's bytes.
    pub(super) fn genesis_size(&mut self, raw: &RawSpec, chain: &Chain) -> bool {
        let len = chain.genesis.len() as u64;
        if len <= MAX_GENESIS_BYTES {
            return true;
        }
        let span = raw.chain.as_ref().and_then(|c| c.value.genesis.as_ref()).and_then(|g| g.span.clone());
        let expected = format!("a genesis of at most {MAX_GENESIS_BYTES} bytes");
        self.invalid::<()>(span, "chain.genesis", &expected, format!("{len} bytes"));
        false
    }

    /// Refuses a network over [`MAX_NETWORK_NODES`] or [`MAX_NETWORK_CONTAINERS`], located at the
    /// entry that crosses the limit. Sums are `u64`: per-field limits keep them far from overflow.
    pub(super) fn totals(
        &mut self,
        raw: &RawSpec,
        clusters: &[Option<Cluster>],
        services: &[Option<Service>],
    ) {
        let nodes = clusters.iter().map(|c| c.as_ref().map_or(0, |c| u64::from(c.nodes)));
        if let Some((i, total)) = crossing(nodes, MAX_NETWORK_NODES) {
            let span = raw.clusters.get(i).and_then(|c| c.value.nodes.as_ref().map(|n| n.span.clone()));
            let expected = format!("at most {MAX_NETWORK_NODES} nodes in the whole network");
            self.invalid::<()>(
                span.flatten(),
                &format!("clusters[{i}].nodes"),
                &expected,
                format!("{total} nodes"),
            );
        }
        let containers = services.iter().map(|s| s.as_ref().map_or(0, |s| u64::from(s.containers)));
        if let Some((i, total)) = crossing(containers, MAX_NETWORK_CONTAINERS) {
            let span = raw.services.get(i).map(|s| match &s.value.containers {
                Some(c) => c.span.clone(),
                None => s.span.clone(),
            });
            let expected = format!(
                "at most {MAX_NETWORK_CONTAINERS} containers in the whole network (every_node services count one per matching node)"
            );
            self.invalid::<()>(
                span.flatten(),
                &format!("services[{i}].containers"),
                &expected,
                format!("{total} containers"),
            );
        }
    }

    /// Refuses a service named `X-N` when service `X` has an N-th container: both would answer to
    /// the DNS name `X-N` on the network's shared network (a container's stable name is its
    /// service's name, a dash and its slot from 1).
    pub(super) fn alias_clashes(&mut self, raw: &RawSpec, services: &[Option<Service>]) {
        let containers: BTreeMap<&str, u32> =
            services.iter().flatten().map(|s| (s.name.as_str(), s.containers)).collect();
        for (i, service) in services.iter().enumerate() {
            let Some(service) = service else { continue };
            let Some((base, slot)) = service.name.rsplit_once('-') else { continue };
            let Some(slot) = slot.parse::<u32>().ok().filter(|&n| n > 0 && !slot.starts_with('0')) else {
                continue;
            };
            if containers.get(base).is_some_and(|&n| slot <= n) {
                let span =
                    raw.services.get(i).and_then(|s| s.value.name.as_ref()).and_then(|n| n.span.clone());
                let expected = format!(
                    "a name that no container has (container {slot} of service {base:?} is called {name:?} on the network)",
                    name = service.name
                );
                self.report(
                    span,
                    &format!("services[{i}].name"),
                    SpecErrorKind::Invalid { expected, found: format!("{:?}", service.name) },
                );
            }
        }
    }
}

/// The index at which a running sum first exceeds `max`, with the whole sum.
fn crossing(values: impl Iterator<Item = u64>, max: u64) -> Option<(usize, u64)> {
    let mut total = 0u64;
    let mut first = None;
    for (i, v) in values.enumerate() {
        total = total.saturating_add(v);
        if total > max && first.is_none() {
            first = Some(i);
        }
    }
    first.map(|i| (i, total))
}
