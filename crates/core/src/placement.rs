//! Placement: which node each container runs on — Tutum's strategies, made deterministic.
//!
//! Placement is a pure function of the network, the nodes that will exist, and where containers
//! already run. Containers that stay (slot still wanted, node still there and still matching) never
//! move; only new slots are placed, one at a time, each seeing the containers placed before it. Every
//! choice ends in a tie-break by node address, so the same input always gives the same placement.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::address::Address;
use crate::network::{Network, Service, Strategy};

/// A node containers can be placed on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// The machine's address.
    pub address: Address,
    /// The region placement spreads over (a city when the region is one of the nine, so AWS and
    /// DigitalOcean in Singapore count as one region).
    pub region: String,
    /// The machine's deploy tags.
    pub tags: BTreeSet<String>,
}

/// Where every wanted container runs: container address → node address.
pub type Placement = BTreeMap<Address, Address>;

/// A service that cannot be placed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("service `{service}`: no node carries all of its deploy tags {tags:?}")]
pub struct PlacementError {
    /// The service.
    pub service: String,
    /// Its deploy tags.
    pub tags: Vec<String>,
}

/// The nodes a service may run on: those carrying all its deploy tags (no tags = every node).
pub fn matching<'a>(service: &Service, nodes: &'a [Node]) -> Vec<&'a Node> {
    nodes.iter().filter(|n| service.deploy_tags.is_subset(&n.tags)).collect()
}

/// Places every container of every service.
///
/// `nodes` may come in any order (they are sorted by address here). `existing` is where containers run
/// now; entries for slots no longer wanted, or on nodes gone or no longer matching, are ignored.
///
/// Cost: one pass over `existing`, and O(log nodes) per container placed anew (see [`Chooser`]), so
/// a no-op plan of 10,000 relays and a first plan of them cost about the same.
pub fn place<'e>(
    network: &Network,
    nodes: &[Node],
    existing: impl IntoIterator<Item = (&'e Address, &'e Address)>,
) -> Result<Placement, PlacementError> {
    let mut nodes: Vec<&Node> = nodes.iter().collect();
    nodes.sort_by(|a, b| a.address.cmp(&b.address));
    // Hashed: looked up once per running container, where a tree would compare ~10 addresses.
    let index: HashMap<&Address, usize> = nodes.iter().enumerate().map(|(i, n)| (&n.address, i)).collect();
    // Tag checks compare sets of strings: done once per service and node, not once per container.
    let eligible: Vec<Vec<bool>> = network
        .services
        .iter()
        .map(|s| nodes.iter().map(|n| s.deploy_tags.is_subset(&n.tags)).collect())
        .collect();
    let by_name: HashMap<&str, usize> =
        network.services.iter().enumerate().map(|(s, service)| (service.name.as_str(), s)).collect();

    // Containers of any service per node: what `emptiest_node` balances.
    let mut total = vec![0usize; nodes.len()];
    // First every container that stays, across all services, so new ones see the full picture.
    let mut kept: Vec<Vec<Option<usize>>> = network
        .services
        .iter()
        .map(|s| match s.strategy {
            Strategy::EveryNode => Vec::new(), // pinned to their nodes by slot below; they never move either
            _ => vec![None; s.containers as usize],
        })
        .collect();
    for (container, node) in existing {
        let Address::Container { service, slot } = container else { continue };
        let Some(&s) = by_name.get(service.as_str()) else { continue };
        let Some(&i) = index.get(node) else { continue };
        if let Some(place) = kept[s].get_mut(*slot as usize)
            && eligible[s][i]
        {
            *place = Some(i);
            total[i] += 1;
        }
    }

    // Collected, then built in one go: a sorted list becomes a tree without a search per entry.
    let mut placement = Vec::new();
    for (s, service) in network.services.iter().enumerate() {
        let candidates: Vec<usize> = (0..nodes.len()).filter(|&i| eligible[s][i]).collect();
        if service.strategy == Strategy::EveryNode {
            for (slot, &i) in candidates.iter().enumerate() {
                total[i] += 1;
                placement
                    .push((Address::container(service.name.clone(), slot as u32), nodes[i].address.clone()));
            }
            continue;
        }
        if service.containers > 0 && candidates.is_empty() {
            return Err(PlacementError {
                service: service.name.clone(),
                tags: service.deploy_tags.iter().cloned().collect(),
            });
        }
        // Containers of this service per node and per region, counting those that stay.
        let mut own = vec![0usize; nodes.len()];
        let mut per_region: BTreeMap<&str, usize> = BTreeMap::new();
        for &i in kept[s].iter().flatten() {
            own[i] += 1;
            *per_region.entry(nodes[i].region.as_str()).or_default() += 1;
        }
        let mut chooser = None;
        for (slot, kept) in kept[s].iter().enumerate() {
            let i = match *kept {
                Some(i) => i,
                None => {
                    let chooser = chooser.get_or_insert_with(|| {
                        Chooser::new(service.strategy, &candidates, &nodes, &own, &total, &per_region)
                    });
                    let Some(i) = chooser.take() else { continue };
                    total[i] += 1;
                    own[i] += 1;
                    *per_region.entry(nodes[i].region.as_str()).or_default() += 1;
                    chooser.put_back(i, own[i], total[i]);
                    i
                }
            };
            placement.push((Address::container(service.name.clone(), slot as u32), nodes[i].address.clone()));
        }
    }
    Ok(placement.into_iter().collect())
}

/// A node's measure within its group: (own containers, all containers, index).
type Key = (usize, usize, usize);

/// Picks the node for a service's next new container: the least loaded by the strategy's measure,
/// ties broken by node address (the node's index, as nodes are sorted by address).
///
/// The measure of a node is `(containers in its region, own containers, all containers)`, where the
/// first part counts only under `region_spread` and the second only under `high_availability` and
/// `region_spread`. Nodes are grouped by region (one group unless `region_spread`) in ordered sets, so
/// a pick is a look at each group's first node and an update is a removal and an insertion: scanning
/// every candidate for every container made placing 40,000 relays on 4,000 nodes quadratic.
struct Chooser {
    strategy: Strategy,
    /// Per group: its container count (`region_spread` only) and its nodes by (own, total, index).
    groups: Vec<(usize, BTreeSet<Key>)>,
    /// The node taken and not yet put back: its group and its old key.
    taken: Option<(usize, Key)>,
}

impl Chooser {
    fn new(
        strategy: Strategy,
        candidates: &[usize],
        nodes: &[&Node],
        own: &[usize],
        total: &[usize],
        per_region: &BTreeMap<&str, usize>,
    ) -> Self {
        let mut chooser = Chooser { strategy, groups: Vec::new(), taken: None };
        let mut group_by_region: BTreeMap<&str, usize> = BTreeMap::new();
        for &i in candidates {
            let spread = strategy == Strategy::RegionSpread;
            let region = if spread { nodes[i].region.as_str() } else { "" };
            let g = *group_by_region.entry(region).or_insert_with(|| {
                let count = if spread { per_region.get(region).copied().unwrap_or(0) } else { 0 };
                chooser.groups.push((count, BTreeSet::new()));
                chooser.groups.len() - 1
            });
            let key = chooser.key(i, own[i], total[i]);
            chooser.groups[g].1.insert(key);
        }
        chooser
    }

    fn key(&self, i: usize, own: usize, total: usize) -> Key {
        match self.strategy {
            Strategy::EmptiestNode => (0, total, i),
            _ => (own, total, i),
        }
    }

    /// The node with the smallest (region count, key); it stays out until [`Chooser::put_back`].
    fn take(&mut self) -> Option<usize> {
        let (g, key) = self
            .groups
            .iter()
            .enumerate()
            .filter_map(|(g, (count, set))| set.first().map(|key| (g, (*count, *key))))
            .min_by_key(|(_, key)| *key)
            .map(|(g, (_, key))| (g, key))?;
        self.groups[g].1.remove(&key);
        self.taken = Some((g, key));
        Some(key.2)
    }

    /// Puts the taken node back with its new counts; its group now holds one container more.
    fn put_back(&mut self, i: usize, own: usize, total: usize) {
        let Some((g, _)) = self.taken.take() else { return };
        let key = self.key(i, own, total);
        let group = &mut self.groups[g];
        if self.strategy == Strategy::RegionSpread {
            group.0 += 1;
        }
        group.1.insert(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::network::*;

    fn node(cluster: &str, slot: u32, region: &str, tags: &[&str]) -> Node {
        Node {
            address: Address::machine(cluster, slot),
            region: region.into(),
            tags: tags.iter().map(|t| t.to_string()).collect(),
        }
    }

    fn service(name: &str, role: Role, containers: u32, strategy: Strategy, tags: &[&str]) -> Service {
        Service {
            name: name.into(),
            role,
            image: Image::Reference,
            containers,
            strategy,
            deploy_tags: tags.iter().map(|t| t.to_string()).collect(),
            env: Default::default(),
            secrets: Default::default(),
            ports: vec![],
            restart: RestartPolicy::Always,
            health: None,
            update: Default::default(),
        }
    }

    fn network(services: Vec<Service>) -> Network {
        Network {
            name: "t".into(),
            chain: Chain::from_genesis(b"g".to_vec(), None),
            clusters: vec![],
            services,
            access: Access::default(),
            state: Default::default(),
        }
    }

    fn on(p: &Placement, service: &str, slot: u32) -> String {
        p[&Address::container(service, slot)].to_string()
    }

    fn count_on(p: &Placement, node: &Address) -> usize {
        p.values().filter(|n| *n == node).count()
    }

    #[test]
    fn emptiest_node_counts_containers_of_every_service() {
        let nodes = [node("a", 0, "x", &[]), node("b", 0, "y", &[]), node("c", 0, "z", &[])];
        let net = network(vec![
            service("genesis", Role::Genesis, 1, Strategy::EmptiestNode, &[]),
            service("master", Role::Master, 1, Strategy::EmptiestNode, &[]),
            service("relay", Role::Relay, 4, Strategy::EmptiestNode, &[]),
        ]);
        let p = place(&net, &nodes, &Placement::new()).unwrap();
        assert_eq!(on(&p, "genesis", 0), "machine.a[0]");
        assert_eq!(on(&p, "master", 0), "machine.b[0]");
        // c is emptiest, then a and b tie with c at one each: address order.
        let relays: Vec<_> = (0..4).map(|s| on(&p, "relay", s)).collect();
        assert_eq!(relays, ["machine.c[0]", "machine.a[0]", "machine.b[0]", "machine.c[0]"]);
    }

    #[test]
    fn high_availability_counts_only_its_own_containers() {
        let nodes = [node("a", 0, "x", &[]), node("b", 0, "y", &[])];
        let net = network(vec![
            service("other", Role::Genesis, 1, Strategy::EmptiestNode, &[]),
            service("relay", Role::Relay, 2, Strategy::HighAvailability, &[]),
        ]);
        let p = place(&net, &nodes, &Placement::new()).unwrap();
        assert_eq!(on(&p, "other", 0), "machine.a[0]");
        // One relay per node even though `a` already runs another service's container.
        let mut relays: Vec<_> = (0..2).map(|s| on(&p, "relay", s)).collect();
        relays.sort();
        assert_eq!(relays, ["machine.a[0]", "machine.b[0]"]);
    }

    #[test]
    fn every_node_puts_one_container_on_each_matching_node() {
        let nodes = [node("a", 0, "x", &["t"]), node("b", 0, "y", &[]), node("c", 0, "z", &["t"])];
        let net = network(vec![service("relay", Role::Relay, 2, Strategy::EveryNode, &["t"])]);
        let p = place(&net, &nodes, &Placement::new()).unwrap();
        assert_eq!(p.len(), 2);
        assert_eq!(on(&p, "relay", 0), "machine.a[0]");
        assert_eq!(on(&p, "relay", 1), "machine.c[0]");
    }

    #[test]
    fn region_spread_fills_every_region_before_doubling_up() {
        // Region x has three nodes, y and z one each: the first three relays must cover x, y, z.
        let nodes = [
            node("a", 0, "x", &[]),
            node("a", 1, "x", &[]),
            node("a", 2, "x", &[]),
            node("b", 0, "y", &[]),
            node("c", 0, "z", &[]),
        ];
        let net = network(vec![service("relay", Role::Relay, 3, Strategy::RegionSpread, &[])]);
        let p = place(&net, &nodes, &Placement::new()).unwrap();
        let regions: BTreeSet<_> = (0..3)
            .map(|s| {
                nodes.iter().find(|n| n.address == p[&Address::container("relay", s)]).unwrap().region.clone()
            })
            .collect();
        assert_eq!(regions.len(), 3);
    }

    #[test]
    fn deploy_tags_restrict_nodes_and_unmatched_tags_fail() {
        let nodes = [node("a", 0, "x", &["peer_cluster"]), node("b", 0, "y", &[])];
        let net = network(vec![service("relay", Role::Relay, 3, Strategy::EmptiestNode, &["peer_cluster"])]);
        let p = place(&net, &nodes, &Placement::new()).unwrap();
        assert!(p.values().all(|n| n.to_string() == "machine.a[0]"));
        let net = network(vec![service("relay", Role::Relay, 1, Strategy::EmptiestNode, &["gpu"])]);
        assert_eq!(place(&net, &nodes, &Placement::new()).unwrap_err().service, "relay");
    }

    #[test]
    fn scaling_up_and_down_never_moves_the_containers_that_stay() {
        let nodes: Vec<_> = (0..4).map(|i| node("n", i, &format!("r{i}"), &[])).collect();
        let net3 = network(vec![service("relay", Role::Relay, 3, Strategy::EmptiestNode, &[])]);
        let p3 = place(&net3, &nodes, &Placement::new()).unwrap();
        let net9 = network(vec![service("relay", Role::Relay, 9, Strategy::EmptiestNode, &[])]);
        let p9 = place(&net9, &nodes, &p3).unwrap();
        for (addr, node) in &p3 {
            assert_eq!(&p9[addr], node, "{addr} moved when scaling up");
        }
        // Balanced after scaling up: 9 over 4 nodes is 3,2,2,2.
        let mut counts: Vec<_> = nodes.iter().map(|n| count_on(&p9, &n.address)).collect();
        counts.sort();
        assert_eq!(counts, [2, 2, 2, 3]);
        let net2 = network(vec![service("relay", Role::Relay, 2, Strategy::EmptiestNode, &[])]);
        let p2 = place(&net2, &nodes, &p9).unwrap();
        assert_eq!(p2.len(), 2);
        for (addr, node) in &p2 {
            assert_eq!(&p9[addr], node, "{addr} moved when scaling down");
        }
    }

    #[test]
    fn containers_on_vanished_nodes_are_placed_again() {
        let nodes = [node("a", 0, "x", &[])];
        let net = network(vec![service("relay", Role::Relay, 1, Strategy::EmptiestNode, &[])]);
        let existing = Placement::from([(Address::container("relay", 0), Address::machine("gone", 0))]);
        let p = place(&net, &nodes, &existing).unwrap();
        assert_eq!(on(&p, "relay", 0), "machine.a[0]");
    }

    #[test]
    fn same_input_gives_the_same_placement_whatever_the_node_order() {
        let mut nodes: Vec<_> =
            (0..7).map(|i| node(&format!("c{i}"), 0, &format!("r{}", i % 3), &[])).collect();
        let net = network(vec![service("relay", Role::Relay, 20, Strategy::RegionSpread, &[])]);
        let a = place(&net, &nodes, &Placement::new()).unwrap();
        nodes.reverse();
        let b = place(&net, &nodes, &Placement::new()).unwrap();
        assert_eq!(a, b);
    }

    /// The straightforward placement (every candidate scanned for every new container), which
    /// [`place`] must match exactly: a different tie-break would move no container that stays, but it
    /// would change where new ones go from one version to the next.
    fn place_by_scanning(network: &Network, nodes: &[Node], existing: &Placement) -> Placement {
        let mut nodes: Vec<Node> = nodes.to_vec();
        nodes.sort_by(|a, b| a.address.cmp(&b.address));
        let index: BTreeMap<&Address, usize> =
            nodes.iter().enumerate().map(|(i, n)| (&n.address, i)).collect();
        let mut placement = Placement::new();
        let mut total = vec![0usize; nodes.len()];
        for service in network.services.iter().filter(|s| s.strategy != Strategy::EveryNode) {
            for slot in 0..service.containers {
                let addr = Address::container(service.name.clone(), slot);
                if let Some(&i) = existing.get(&addr).and_then(|node| index.get(node))
                    && service.deploy_tags.is_subset(&nodes[i].tags)
                {
                    total[i] += 1;
                    placement.insert(addr, nodes[i].address.clone());
                }
            }
        }
        for service in &network.services {
            let candidates: Vec<usize> =
                (0..nodes.len()).filter(|&i| service.deploy_tags.is_subset(&nodes[i].tags)).collect();
            if service.strategy == Strategy::EveryNode {
                for (slot, &i) in candidates.iter().enumerate() {
                    total[i] += 1;
                    placement.insert(
                        Address::container(service.name.clone(), slot as u32),
                        nodes[i].address.clone(),
                    );
                }
                continue;
            }
            let mut own = vec![0usize; nodes.len()];
            let mut per_region: BTreeMap<&str, usize> = BTreeMap::new();
            for slot in 0..service.containers {
                if let Some(node) = placement.get(&Address::container(service.name.clone(), slot)) {
                    own[index[node]] += 1;
                    *per_region.entry(nodes[index[node]].region.as_str()).or_default() += 1;
                }
            }
            for slot in 0..service.containers {
                let addr = Address::container(service.name.clone(), slot);
                if placement.contains_key(&addr) {
                    continue;
                }
                let chosen = match service.strategy {
                    Strategy::EmptiestNode => candidates.iter().copied().min_by_key(|&i| total[i]),
                    Strategy::HighAvailability => {
                        candidates.iter().copied().min_by_key(|&i| (own[i], total[i]))
                    }
                    _ => candidates.iter().copied().min_by_key(|&i| {
                        (per_region.get(nodes[i].region.as_str()).copied().unwrap_or(0), own[i], total[i])
                    }),
                };
                let Some(i) = chosen else { continue };
                total[i] += 1;
                own[i] += 1;
                *per_region.entry(nodes[i].region.as_str()).or_default() += 1;
                placement.insert(addr, nodes[i].address.clone());
            }
        }
        placement
    }

    #[test]
    fn placement_matches_scanning_every_candidate_for_every_container() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(12);
        let strategies =
            [Strategy::EmptiestNode, Strategy::HighAvailability, Strategy::RegionSpread, Strategy::EveryNode];
        for case in 0..300 {
            let nodes: Vec<Node> = (0..rng.random_range(1..12u32))
                .map(|i| {
                    let tags: &[&str] = if rng.random_bool(0.7) { &["peer"] } else { &[] };
                    node(&format!("c{}", i % 4), i, &format!("r{}", rng.random_range(0..4)), tags)
                })
                .collect();
            let services: Vec<Service> = (0..rng.random_range(1..4))
                .map(|s| {
                    let strategy = strategies[rng.random_range(0..strategies.len())];
                    let tags: &[&str] = if rng.random_bool(0.5) { &["peer"] } else { &[] };
                    service(&format!("s{s}"), Role::Relay, rng.random_range(0..30), strategy, tags)
                })
                .collect();
            let net = network(services);
            // Some containers already run, some of them on nodes gone or of slots no longer wanted.
            let mut existing = Placement::new();
            for s in &net.services {
                for slot in 0..s.containers + 3 {
                    if rng.random_bool(0.4) {
                        let n = rng.random_range(0..nodes.len() + 1);
                        let node =
                            nodes.get(n).map(|n| n.address.clone()).unwrap_or(Address::machine("gone", 0));
                        existing.insert(Address::container(s.name.clone(), slot), node);
                    }
                }
            }
            let Ok(fast) = place(&net, &nodes, &existing) else { continue };
            assert_eq!(fast, place_by_scanning(&net, &nodes, &existing), "case {case}");
        }
    }
}
