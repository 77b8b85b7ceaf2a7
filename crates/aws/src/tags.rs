//! Ownership tags: how peerfleet recognises its EC2 objects, and what it reads back from them.
//!
//! Reserved keys live under `peerfleet:`; deploy tags (Tutum's labels such as `peer_cluster`) are tag
//! *keys* with an empty value, the way a label without a value reads in the EC2 console. Tags with a
//! value that peerfleet did not set (`Owner=alice`, added by hand) are neither: they are left alone and
//! never reported as deploy tags, so an update never deletes them.

use std::collections::{BTreeMap, BTreeSet};

use aws_sdk_ec2::types::{Filter, ResourceType, Tag, TagSpecification};
use peerfleet_core::network::PEER_CLUSTER_TAG;
use peerfleet_core::resource::MachineSpec;
use peerfleet_core::{Address, ChainId};

/// Network name.
pub const NETWORK: &str = "peerfleet:network";
/// The object's address (`machine.virginia[0]`, `firewall.aws.us-east-1`, `ip.virginia[0]`).
pub const ADDRESS: &str = "peerfleet:address";
/// Machine generation (raised on every replace).
pub const GENERATION: &str = "peerfleet:generation";
/// Bootstrap (user data) version.
pub const BOOTSTRAP: &str = "peerfleet:bootstrap";
/// The pinned chain ID, on the genesis host.
pub const CHAIN_ID: &str = "peerfleet:chain-id";
/// EC2's display name.
pub const NAME: &str = "Name";

/// The value deploy tags carry: none, they are labels.
pub const DEPLOY_TAG_VALUE: &str = "";

/// Keys peerfleet never treats as deploy tags.
fn is_reserved(key: &str) -> bool {
    key == NAME || key.starts_with("peerfleet:") || key.starts_with("aws:")
}

/// A tag map as EC2 tags.
pub fn to_tags(map: &BTreeMap<String, String>) -> Vec<Tag> {
    map.iter().map(|(k, v)| Tag::builder().key(k).value(v).build()).collect()
}

/// EC2 tags as a map (a key appears once per resource, so nothing is lost).
pub fn to_map(tags: &[Tag]) -> BTreeMap<String, String> {
    tags.iter()
        .filter_map(|t| Some((t.key()?.to_string(), t.value().unwrap_or_default().to_string())))
        .collect()
}

/// The describe filter `tag:<key>` = `value`.
pub(crate) fn tag_filter(key: &str, value: &str) -> Filter {
    Filter::builder().name(format!("tag:{key}")).values(value).build()
}

/// One `TagSpecification` per resource type, all with the same tags: applied by EC2 atomically with
/// the create, so no object ever exists untagged.
pub fn specifications(types: &[ResourceType], map: &BTreeMap<String, String>) -> Vec<TagSpecification> {
    types
        .iter()
        .map(|t| TagSpecification::builder().resource_type(t.clone()).set_tags(Some(to_tags(map))).build())
        .collect()
}

/// EC2's `Name` for a machine: `<network>-<cluster>-<slot>`.
pub fn machine_name(network: &str, address: &Address) -> String {
    match address {
        Address::Machine { cluster, slot } => format!("{network}-{cluster}-{slot}"),
        other => format!("{network}-{}", other.slug()),
    }
}

/// Every tag a machine (and its root volume) is launched with.
pub fn machine_tags(spec: &MachineSpec) -> BTreeMap<String, String> {
    let mut map = BTreeMap::new();
    for tag in &spec.tags {
        map.insert(tag.clone(), DEPLOY_TAG_VALUE.to_string());
    }
    map.insert(NETWORK.to_string(), spec.network.clone());
    map.insert(ADDRESS.to_string(), spec.address.to_string());
    map.insert(GENERATION.to_string(), spec.generation.to_string());
    map.insert(BOOTSTRAP.to_string(), spec.bootstrap.to_string());
    if let Some(chain) = &spec.chain_id {
        map.insert(CHAIN_ID.to_string(), chain.as_str().to_string());
    }
    map.insert(NAME.to_string(), machine_name(&spec.network, &spec.address));
    map
}

/// The tags of a network object that is not a machine (security group, Elastic IP): network, address,
/// the `peer_cluster` deploy tag and a readable name.
pub fn object_tags(network: &str, address: &Address, name: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (NETWORK.to_string(), network.to_string()),
        (ADDRESS.to_string(), address.to_string()),
        (PEER_CLUSTER_TAG.to_string(), DEPLOY_TAG_VALUE.to_string()),
        (NAME.to_string(), name.to_string()),
    ])
}

/// What a machine's tags say about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MachineTags {
    /// Its address.
    pub address: Address,
    /// Deploy tags.
    pub deploy: BTreeSet<String>,
    /// Generation (0 when missing).
    pub generation: u32,
    /// Bootstrap version (0 when missing).
    pub bootstrap: u32,
    /// Chain ID, when present and well-formed.
    pub chain_id: Option<ChainId>,
}

/// Reads a machine's tags; `None` when the address tag is missing or malformed (not ours to manage).
pub fn read_machine(map: &BTreeMap<String, String>) -> Option<MachineTags> {
    let address = map.get(ADDRESS)?.parse::<Address>().ok()?;
    if !matches!(address, Address::Machine { .. }) {
        return None;
    }
    Some(MachineTags {
        address,
        deploy: deploy_tags(map),
        generation: map.get(GENERATION).and_then(|g| g.parse().ok()).unwrap_or(0),
        bootstrap: map.get(BOOTSTRAP).and_then(|b| b.parse().ok()).unwrap_or(0),
        chain_id: map.get(CHAIN_ID).and_then(|c| ChainId::parse(c)),
    })
}

/// Deploy tags: non-reserved keys with the deploy-tag value.
pub fn deploy_tags(map: &BTreeMap<String, String>) -> BTreeSet<String> {
    map.iter()
        .filter(|(k, v)| !is_reserved(k) && v.as_str() == DEPLOY_TAG_VALUE)
        .map(|(k, _)| k.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use peerfleet_core::ProviderKind;
    use peerfleet_core::network::Region;

    fn spec() -> MachineSpec {
        MachineSpec {
            address: Address::machine("virginia", 2),
            network: "testnet".into(),
            provider: ProviderKind::Aws,
            region: Region { slug: "us-east-1".into(), city: None },
            size: "t3.small".into(),
            image: None,
            tags: BTreeSet::from(["peer_cluster".to_string(), "relay".to_string()]),
            profile: None,
            bootstrap: 1,
            chain_id: Some(ChainId::of(b"genesis")),
            generation: 3,
            idempotency_key: "k".into(),
            firewall: None,
        }
    }

    #[test]
    fn machine_tags_read_back_to_the_spec() {
        let s = spec();
        let map = machine_tags(&s);
        assert_eq!(map[NAME], "testnet-virginia-2");
        let read = read_machine(&map);
        assert_eq!(
            read,
            Some(MachineTags {
                address: s.address.clone(),
                deploy: s.tags.clone(),
                generation: 3,
                bootstrap: 1,
                chain_id: s.chain_id.clone(),
            })
        );
    }

    #[test]
    fn hand_made_tags_with_values_are_not_deploy_tags() {
        let mut map = machine_tags(&spec());
        map.insert("Owner".into(), "alice".into());
        map.insert("aws:cloudformation:stack-name".into(), String::new());
        let deploy = deploy_tags(&map);
        assert_eq!(deploy, BTreeSet::from(["peer_cluster".to_string(), "relay".to_string()]));
    }

    #[test]
    fn objects_without_a_machine_address_are_not_machines() {
        let mut map = machine_tags(&spec());
        map.insert(ADDRESS.into(), "ip.virginia[2]".into());
        assert_eq!(read_machine(&map), None);
        map.insert(ADDRESS.into(), "garbage".into());
        assert_eq!(read_machine(&map), None);
        map.remove(ADDRESS);
        assert_eq!(read_machine(&map), None);
    }

    #[test]
    fn every_resource_type_gets_the_same_tags() {
        let map = machine_tags(&spec());
        let specs = specifications(&[ResourceType::Instance, ResourceType::Volume], &map);
        assert_eq!(specs.len(), 2);
        for s in &specs {
            assert_eq!(to_map(s.tags()), map);
        }
    }
}
