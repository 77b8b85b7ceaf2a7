//! Refresh: ask the providers what exists, by ownership tags.
//!
//! One inventory call per provider-region and one container list per engine — never a call per
//! object (invariant 5). Regions come from the spec *and* from what state remembers, so machines of a
//! cluster that moved region or was deleted from the spec are still found and cleaned up. The one
//! exception is a stable IP that lost its only link to the network (see [`lost_stable_ips`]): it is
//! looked up by the ID state remembers, one call each, and only when it is missing.

use std::collections::{BTreeMap, BTreeSet};

use futures::stream::{self, StreamExt};

use crate::actual::ActualState;
use crate::address::Address;
use crate::network::{Network, ProviderKind};
use crate::plan::Layer;
use crate::provider::{ProviderError, Providers};
use crate::resource::{Actual, Machine, MachineStatus, StableIp};

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

/// The stable IPs state remembers that no inventory listed, looked up one by one.
///
/// Where stable IPs carry no ownership tags (DigitalOcean's reserved IPs), the machine they are
/// assigned to is their only link to the network. A crash between deleting a machine and attaching
/// its IP to the replacement leaves the IP assigned to nothing: found here, it is attached to the new
/// machine (or released) by the next apply, instead of being billed forever while a second one is
/// reserved. Costs nothing when every remembered IP was listed.
async fn lost_stable_ips(
    network: &Network,
    providers: &Providers,
    remembered: &[Actual],
    listed: &[Actual],
) -> Result<Vec<StableIp>, RefreshError> {
    let listed: BTreeSet<&Address> = listed.iter().map(Actual::address).collect();
    let machine_provider = |machine: &Address| {
        let Address::Machine { cluster, .. } = machine else { return None };
        let in_spec = network.clusters.iter().find(|c| &c.name == cluster).map(|c| c.provider);
        in_spec.or_else(|| {
            remembered.iter().find_map(|a| match a {
                Actual::Machine(m) if &m.address == machine => Some(m.provider),
                _ => None,
            })
        })
    };
    let mut lookups = Vec::new();
    for object in remembered {
        let Actual::StableIp(ip) = object else { continue };
        if listed.contains(&ip.address) {
            continue;
        }
        let Some(kind) = ip.provider.or_else(|| machine_provider(&ip.address.machine_of_ip()?)) else {
            continue;
        };
        let provider = providers
            .machines(kind)
            .ok_or_else(|| RefreshError::NoProvider { provider: kind, hint: hint(kind) })?
            .clone();
        lookups.push(async move {
            let found = provider.find_stable_ip(ip).await;
            (kind, ip, found)
        });
    }
    let answers: Vec<_> = stream::iter(lookups).buffer_unordered(CONCURRENCY).collect().await;
    let mut found = Vec::new();
    for (provider, ip, answer) in answers {
        let answer = answer.map_err(|source| RefreshError::Provider {
            provider,
            region: ip.address.to_string(),
            source,
        })?;
        found.extend(answer.map(|f| StableIp { address: ip.address.clone(), ..f }));
    }
    Ok(found)
}

/// Which engines refresh lists containers on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engines {
    /// Every running machine's engine.
    All,
    /// Only engines that outlive their machines (local virtual nodes share the local engine). For
    /// destroy: a cloud machine's containers go with the machine, so its engine is never contacted.
    LocalOnly,
    /// None: `--only machines`.
    None,
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
    let engines = if only == Some(Layer::Machines) { Engines::None } else { Engines::All };
    refresh_engines(network, providers, remembered, engines).await
}

/// [`refresh`], choosing which engines are asked for containers.
pub async fn refresh_engines(
    network: &Network,
    providers: &Providers,
    remembered: &[Actual],
    engines_to_ask: Engines,
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
    let mut objects = Vec::new();
    for (provider, region, result) in results {
        let inventory = result.map_err(|source| RefreshError::Provider { provider, region, source })?;
        objects.extend(inventory.machines.into_iter().map(Actual::Machine));
        objects.extend(inventory.firewalls.into_iter().map(Actual::Firewall));
        objects.extend(inventory.stable_ips.into_iter().map(Actual::StableIp));
    }
    objects.extend(
        lost_stable_ips(network, providers, remembered, &objects).await?.into_iter().map(Actual::StableIp),
    );
    // Which of two objects with one address is kept never depends on the order providers answered
    // in (see `ActualState::insert`); the list of the others is sorted after each layer.
    for o in objects {
        actual.insert(o);
    }
    actual.sort_duplicates();

    if engines_to_ask == Engines::None {
        return Ok(actual);
    }
    // Borrowed, not copied: the lists below are awaited here, so every machine outlives them.
    let machines: Vec<&Machine> = actual
        .objects
        .values()
        .filter_map(|o| match o {
            Actual::Machine(m)
                if m.status == MachineStatus::Running
                    && (engines_to_ask == Engines::All || !m.provider.capabilities().remote_engine) =>
            {
                Some(m)
            }
            _ => None,
        })
        .collect();
    if machines.is_empty() {
        actual.containers_listed = true;
        return Ok(actual);
    }
    let engines = providers.engines().ok_or(RefreshError::NoEngine)?;
    // One list per engine: machines sharing an engine (local virtual nodes) share a key.
    let mut by_key: BTreeMap<String, &Machine> = BTreeMap::new();
    for m in machines {
        // A cloud machine without an address has no reachable engine yet (still booting).
        if m.provider.capabilities().remote_engine && m.public_ip.is_none() {
            continue;
        }
        by_key.entry(engines.engine_key(m)).or_insert(m);
    }
    let network_name = network.name.as_str();
    let lists = stream::iter(by_key.into_iter().map(|(key, machine)| {
        let engines = engines.clone();
        async move {
            let listed = match engines.engine_for(machine).await {
                Ok(engine) => engine.list_containers(network_name).await,
                Err(e) => Err(e),
            };
            (key, listed)
        }
    }))
    .buffer_unordered(CONCURRENCY)
    .collect::<Vec<_>>()
    .await;
    for (engine, listed) in lists {
        for c in listed.map_err(|source| RefreshError::Engine { engine, source })? {
            actual.insert(Actual::Container(c));
        }
    }
    actual.sort_duplicates();
    actual.containers_listed = true;
    Ok(actual)
}

#[cfg(test)]
#[cfg(feature = "testing")]
mod tests {
    use super::*;
    use crate::network::{Role, Strategy};
    use crate::plan::{PlanOptions, Remembered, plan};
    use crate::spec::{ClusterBuilder, NetworkBuilder, ServiceBuilder};
    use crate::testing::{Op, TestWorld};

    /// Three provider-regions with `per_region` nodes each, and `relays` relays.
    fn network(per_region: u32, relays: u32) -> Network {
        NetworkBuilder::new("refresh")
            .genesis(b"g".to_vec())
            .admin_cidr("203.0.113.0/24")
            .cluster(ClusterBuilder::new("a", ProviderKind::Aws, "Virginia").nodes(per_region))
            .cluster(ClusterBuilder::new("b", ProviderKind::DigitalOcean, "Amsterdam").nodes(per_region))
            .cluster(ClusterBuilder::new("c", ProviderKind::Local, "Oregon").nodes(per_region))
            .service(ServiceBuilder::new("genesis", Role::Genesis))
            .service(ServiceBuilder::new("master", Role::Master))
            .service(
                ServiceBuilder::new("relay", Role::Relay).containers(relays).strategy(Strategy::EmptiestNode),
            )
            .build()
            .unwrap()
    }

    struct Quiet;
    impl crate::executor::Reporter for Quiet {
        fn event(&self, _: &crate::executor::ApplyEvent) {}
    }

    /// Applies the network to the world through the executor, as `peerfleet apply` would.
    async fn converge(world: &TestWorld, net: &Network) {
        let p =
            plan(net, &ActualState::default(), &Remembered::default(), &PlanOptions::default()).unwrap().plan;
        let options = crate::executor::ApplyOptions {
            genesis: Some(net.chain.genesis.clone()),
            parallelism: 32,
            ..Default::default()
        };
        let store = crate::state::MemoryState::new();
        let outcome =
            crate::executor::apply(&p, &world.providers(), &store, &options, &Quiet, Default::default())
                .await
                .unwrap();
        assert!(outcome.is_success(), "{:?}", outcome.failed);
    }

    #[tokio::test]
    async fn refresh_costs_one_inventory_per_provider_region_whatever_the_size() {
        for (per_region, relays) in [(1, 1), (20, 500)] {
            let world = TestWorld::new();
            let net = network(per_region, relays);
            converge(&world, &net).await;
            world.reset_counts();
            let actual = refresh(&net, &world.providers(), &[], None).await.unwrap();
            assert_eq!(world.calls(Op::Inventory), 3, "one per provider-region");
            // One list per engine, and never a call per container.
            assert_eq!(world.calls(Op::ListContainers), u64::from(3 * per_region));
            assert_eq!(world.calls(Op::InspectContainer), 0);
            assert_eq!(
                actual.objects.values().filter(|o| matches!(o, Actual::Container(_))).count(),
                relays as usize + 2
            );
            let p = plan(&net, &actual, &Remembered::default(), &PlanOptions::default()).unwrap().plan;
            assert!(!p.has_changes(), "a converged world plans nothing: {:?}", p.changes.first());
        }
    }

    #[tokio::test]
    async fn only_machines_contacts_no_engine() {
        let world = TestWorld::new();
        let net = network(2, 3);
        converge(&world, &net).await;
        world.reset_counts();
        let actual = refresh(&net, &world.providers(), &[], Some(Layer::Machines)).await.unwrap();
        assert_eq!(world.calls(Op::EngineFor) + world.calls(Op::ListContainers), 0);
        assert!(!actual.containers_listed);
    }

    #[tokio::test]
    async fn destroy_asks_only_engines_that_outlive_their_machines() {
        // Cloud machines' containers go with the machine, and in tests their addresses belong to
        // stand-ins that must never be contacted: only the local node's engine is asked.
        let world = TestWorld::new();
        let net = network(1, 1);
        converge(&world, &net).await;
        world.reset_counts();
        let actual = refresh_engines(&net, &world.providers(), &[], Engines::LocalOnly).await.unwrap();
        assert_eq!(world.calls(Op::EngineFor), 1, "one local node, no cloud engine");
        assert_eq!(world.calls(Op::ListContainers), 1);
        assert!(actual.containers_listed);
    }

    #[tokio::test]
    async fn regions_remembered_in_state_are_refreshed_too() {
        let world = TestWorld::new();
        let net = network(1, 1);
        converge(&world, &net).await;
        // The spec moved cluster `a` to Oregon; state still remembers its machine in Virginia.
        let old = world.machines(&net.name).into_iter().find(|m| m.region == "us-east-1").unwrap();
        let mut moved = net.clone();
        moved.clusters[0].region.slug = "us-west-2".into();
        let actual =
            refresh(&moved, &world.providers(), &[Actual::Machine(old.clone())], None).await.unwrap();
        assert_eq!(
            actual.machine(&old.address).map(|m| m.id.clone()),
            Some(old.id),
            "found where state said"
        );
    }
}
