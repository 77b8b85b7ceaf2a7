//! Refresh: ask the providers what exists, by ownership tags.
//!
//! One inventory call per provider-region and one container list per engine — never a call per
//! object (invariant 5). Regions come from the spec *and* from what state remembers, so machines of a
//! cluster that moved region or was deleted from the spec are still found and cleaned up.

use std::collections::{BTreeMap, BTreeSet};

use futures::stream::{self, StreamExt};

use crate::actual::ActualState;
use crate::address::Address;
use crate::network::{Network, ProviderKind};
use crate::plan::Layer;
use crate::provider::{ProviderError, Providers};
use crate::resource::{Actual, MachineStatus};

/// How many provider-regions are asked at once.
const CONCURRENCY: usize = 16;

/// Why refresh failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RefreshError {
    /// The spec uses a provider that was not configured.
    #[error("the spec has {provider} clusters, but no {provider} provider is configured{hint}")]
    NoProvider {
        /// The provider.
        provider: ProviderKind,
        /// How to configure it.
        hint: String,
    },
    /// No container engine connector was configured, but containers must be listed.
    #[error(
        "no container engine is configured, so containers cannot be listed (use --only machines to skip them)"
    )]
    NoEngine,
    /// A provider call failed.
    #[error("refreshing {provider} {region}: {source}")]
    Provider {
        /// Provider.
        provider: ProviderKind,
        /// Region.
        region: String,
        /// The failure.
        source: ProviderError,
    },
    /// An engine call failed.
    #[error("listing containers on {engine}: {source}")]
    Engine {
        /// The engine's key.
        engine: String,
        /// The failure.
        source: ProviderError,
    },
}

fn hint(provider: ProviderKind) -> String {
    match provider {
        ProviderKind::Aws => " (AWS credentials come from the default chain: env, profiles, SSO)".into(),
        ProviderKind::DigitalOcean => " (set DIGITALOCEAN_TOKEN)".into(),
        ProviderKind::Local => " (is a Docker engine running?)".into(),
    }
}

/// The provider-regions refresh asks: the spec's, plus those where state remembers objects.
pub fn regions(network: &Network, remembered: &[Actual]) -> BTreeSet<(ProviderKind, String)> {
    let mut out: BTreeSet<(ProviderKind, String)> =
        network.clusters.iter().map(|c| (c.provider, c.region.slug.clone())).collect();
    for object in remembered {
        match object {
            Actual::Machine(m) => {
                out.insert((m.provider, m.region.clone()));
            }
            Actual::Firewall(f) => {
                if let Address::Firewall { provider, region } = &f.address {
                    out.insert((*provider, region.clone()));
                }
            }
            _ => {}
        }
    }
    out
}

/// Lists what exists of `network`.
///
/// `remembered` is what state last knew (for regions no longer in the spec). With
/// `only == Some(Layer::Machines)` containers are not listed, so no engine is contacted.
pub async fn refresh(
    network: &Network,
    providers: &Providers,
    remembered: &[Actual],
    only: Option<Layer>,
) -> Result<ActualState, RefreshError> {
    let regions = regions(network, remembered);
    let mut calls = Vec::new();
    for (kind, region) in regions {
        let provider = providers
            .machines(kind)
            .ok_or_else(|| RefreshError::NoProvider { provider: kind, hint: hint(kind) })?
            .clone();
        calls.push(async move {
            let result = provider.inventory(&network.name, &region).await;
            (kind, region, result)
        });
    }
    let results: Vec<_> = stream::iter(calls).buffer_unordered(CONCURRENCY).collect().await;
    let mut actual = ActualState::default();
    // Sort so duplicate resolution and everything downstream never depends on completion order.
    let mut objects = Vec::new();
    for (provider, region, result) in results {
        let inventory = result.map_err(|source| RefreshError::Provider { provider, region, source })?;
        objects.extend(inventory.machines.into_iter().map(Actual::Machine));
        objects.extend(inventory.firewalls.into_iter().map(Actual::Firewall));
        objects.extend(inventory.stable_ips.into_iter().map(Actual::StableIp));
    }
    objects.sort_by(|a, b| (a.address(), a.id()).cmp(&(b.address(), b.id())));
    for o in objects {
        actual.insert(o);
    }

    if only == Some(Layer::Machines) {
        return Ok(actual);
    }
    let machines: Vec<_> = actual
        .objects
        .values()
        .filter_map(|o| match o {
            Actual::Machine(m) if m.status == MachineStatus::Running => Some(m.clone()),
            _ => None,
        })
        .collect();
    if machines.is_empty() {
        actual.containers_listed = true;
        return Ok(actual);
    }
    let engines = providers.engines().ok_or(RefreshError::NoEngine)?;
    // One list per engine: machines sharing an engine (local virtual nodes) share a key.
    let mut by_key: BTreeMap<String, _> = BTreeMap::new();
    for m in &machines {
        // A cloud machine without an address has no reachable engine yet (still booting).
        if m.provider.capabilities().remote_engine && m.public_ip.is_none() {
            continue;
        }
        by_key.entry(engines.engine_key(m)).or_insert_with(|| m.clone());
    }
    let lists = stream::iter(by_key.into_iter().map(|(key, machine)| {
        let engines = engines.clone();
        let network = network.name.clone();
        async move {
            let listed = match engines.engine_for(&machine).await {
                Ok(engine) => engine.list_containers(&network).await,
                Err(e) => Err(e),
            };
            (key, listed)
        }
    }))
    .buffer_unordered(CONCURRENCY)
    .collect::<Vec<_>>()
    .await;
    let mut containers = Vec::new();
    for (engine, listed) in lists {
        containers.extend(listed.map_err(|source| RefreshError::Engine { engine, source })?);
    }
    containers.sort_by(|a, b| (&a.address, &a.id).cmp(&(&b.address, &b.id)));
    for c in containers {
        actual.insert(Actual::Container(c));
    }
    actual.containers_listed = true;
    Ok(actual)
}
