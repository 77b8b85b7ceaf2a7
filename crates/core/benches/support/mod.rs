//! The network the core benchmarks plan and apply, in one place so that they measure the same one.

use peerfleet_core::network::{Network, ProviderKind, Role, Strategy};
use peerfleet_core::spec::{ClusterBuilder, NetworkBuilder, ServiceBuilder};

/// `nodes` machines in clusters of 20 over AWS, DigitalOcean and local regions; `containers`
/// containers: genesis, master, and relays by emptiest_node. (Clusters of 20 keep 4,000 nodes within
/// the spec's 200 clusters per network.)
pub fn network(nodes: u32, containers: u32) -> Network {
    let aws =
        ["Virginia", "Oregon", "São Paulo", "Frankfurt", "London", "Singapore", "Sydney", "Northern China"];
    let digitalocean = ["Amsterdam", "Frankfurt", "London", "Singapore", "Sydney"];
    let local = ["Virginia", "Oregon", "Amsterdam"];
    let mut b =
        NetworkBuilder::new("bench").genesis(b"{\"chain\":\"bench\"}".to_vec()).admin_cidr("203.0.113.0/24");
    for i in 0..nodes / 20 {
        let n = i as usize / 3;
        let (provider, city) = match i % 3 {
            0 => (ProviderKind::Aws, aws[n % aws.len()]),
            1 => (ProviderKind::DigitalOcean, digitalocean[n % digitalocean.len()]),
            _ => (ProviderKind::Local, local[n % local.len()]),
        };
        b = b.cluster(ClusterBuilder::new(format!("c{i}"), provider, city).nodes(20).tags(["peer_cluster"]));
    }
    b.service(ServiceBuilder::new("genesis", Role::Genesis))
        .service(ServiceBuilder::new("master", Role::Master))
        .service(
            ServiceBuilder::new("relay", Role::Relay)
                .containers(containers - 2)
                .strategy(Strategy::EmptiestNode)
                .deploy_tags(["peer_cluster"]),
        )
        .build()
        .expect("the benchmark network is valid")
}
