//! Ownership: how peerfleet marks the cloud objects it creates, and recognises them afterwards — one
//! scheme for every provider.
//!
//! Every object carries, from its creation, what refresh needs to find it again without any state:
//! the network, its address, and for machines the generation, the bootstrap version, the pinned chain
//! ID and its deploy tags. Tag systems differ, so the scheme has two spellings of the same record:
//!
//! | record | key=value tags (EC2) | bare tags (DigitalOcean: names only, at most 255 characters) |
//! |---|---|---|
//! | network | `peerfleet:network` = `<network>` | `peerfleet:network:<network>` |
//! | address | `peerfleet:address` = `machine.virginia[0]` | the object's name, see [`machine_name`] |
//! | generation | `peerfleet:generation` = `<n>` | `peerfleet:gen:<n>` |
//! | bootstrap | `peerfleet:bootstrap` = `<n>` | `peerfleet:boot:<n>` |
//! | chain ID | `peerfleet:chain-id` = `<sha256 hex>` | `peerfleet:chain:<sha256 hex>` |
//! | deploy tag `t` | `t` = `` (a label without a value) | `t`, and its marker `peerfleet:deploy:t` |
//!
//! (The short bare spellings keep long network names inside DigitalOcean's 255 characters; both
//! spellings are what objects already in the field carry, so they cannot change.)
//!
//! # The policy for foreign tags
//! **peerfleet never removes a tag it did not write.** A tag someone adds by hand (`Owner=alice` on
//! EC2, `owner-alice` on DigitalOcean) is not reported as a deploy tag, so it never shows up in a
//! diff, and [`deploy_tag_changes`] never removes it. On EC2 a deploy tag is told apart by its empty
//! value; on DigitalOcean, where tags have no values, by its marker tag written beside it. Droplets
//! made before markers existed carry none: for them every unreserved tag counts as a deploy tag, as it
//! did then, until an update writes the markers.

use std::collections::{BTreeMap, BTreeSet};

use crate::address::Address;
use crate::network::ChainId;
use crate::resource::MachineSpec;

/// The prefix of every tag (or tag key) peerfleet reserves for itself.
pub const PREFIX: &str = "peerfleet:";

/// The value deploy tags carry where tags have values: none, they are labels.
pub const DEPLOY_TAG_VALUE: &str = "";

/// One field of the ownership record, in both spellings (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Key {
    /// The network name.
    Network,
    /// The object's address.
    Address,
    /// The machine's generation (raised on every replace).
    Generation,
    /// The machine's bootstrap (user data) version.
    Bootstrap,
    /// The pinned chain ID, on the genesis host.
    ChainId,
    /// Which firewall applies to a machine, where firewalls attach by tag.
    Firewall,
    /// Marks a deploy tag as written by peerfleet, where tags have no values.
    Deploy,
}

impl Key {
    /// The key of a key=value tag: `peerfleet:network`, `peerfleet:chain-id`, ...
    pub const fn pair_key(self) -> &'static str {
        match self {
            Key::Network => "peerfleet:network",
            Key::Address => "peerfleet:address",
            Key::Generation => "peerfleet:generation",
            Key::Bootstrap => "peerfleet:bootstrap",
            Key::ChainId => "peerfleet:chain-id",
            Key::Firewall => "peerfleet:firewall",
            Key::Deploy => "peerfleet:deploy",
        }
    }

    /// The head of a bare tag, up to and including its last `:`: `peerfleet:network:`, `peerfleet:gen:`, ...
    pub const fn bare_prefix(self) -> &'static str {
        match self {
            Key::Network => "peerfleet:network:",
            Key::Address => "peerfleet:address:",
            Key::Generation => "peerfleet:gen:",
            Key::Bootstrap => "peerfleet:boot:",
            Key::ChainId => "peerfleet:chain:",
            Key::Firewall => "peerfleet:fw:",
            Key::Deploy => "peerfleet:deploy:",
        }
    }

    /// The bare tag recording `value`: `peerfleet:gen:3`.
    pub fn bare(self, value: &str) -> String {
        format!("{}{value}", self.bare_prefix())
    }

    /// The value of this key among bare `tags`, if one carries it.
    pub fn bare_value(self, tags: &[String]) -> Option<&str> {
        tags.iter().find_map(|t| t.strip_prefix(self.bare_prefix()))
    }
}

/// Whether a tag (or tag key) is reserved for peerfleet's own records: never a deploy tag, never
/// accepted from a spec.
pub fn is_reserved(tag: &str) -> bool {
    tag.starts_with(PREFIX)
}

/// The name of a machine, the same on every provider: `<network>-<cluster>-<slot>` (other addresses:
/// `<network>-<slug>`). On DigitalOcean the name is what carries the address (see
/// [`address_of_name`]).
pub fn machine_name(network: &str, address: &Address) -> String {
    match address {
        Address::Machine { cluster, slot } => format!("{network}-{cluster}-{slot}"),
        other => format!("{network}-{}", other.slug()),
    }
}

/// The machine address a name made by [`machine_name`] stands for, given the network. Unambiguous
/// even with `-` in network and cluster names, because the network is known and the slot is the part
/// after the last `-`.
pub fn address_of_name(network: &str, name: &str) -> Option<Address> {
    let rest = name.strip_prefix(network)?.strip_prefix('-')?;
    let (cluster, slot) = rest.rsplit_once('-')?;
    if cluster.is_empty() || slot.is_empty() || !slot.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(Address::machine(cluster, slot.parse().ok()?))
}

/// What a machine's ownership tags say about it, whichever spelling they are read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MachineOwnership {
    /// Its address.
    pub address: Address,
    /// Deploy tags peerfleet wrote (never a tag someone added by hand).
    pub deploy: BTreeSet<String>,
    /// Generation (0 when missing).
    pub generation: u32,
    /// Bootstrap version (0 when missing).
    pub bootstrap: u32,
    /// Chain ID, when present and well-formed.
    pub chain_id: Option<ChainId>,
}

impl MachineOwnership {
    /// The record a machine made from `spec` carries.
    pub fn of(spec: &MachineSpec) -> Self {
        MachineOwnership {
            address: spec.address.clone(),
            deploy: spec.tags.clone(),
            generation: spec.generation,
            bootstrap: spec.bootstrap,
            chain_id: spec.chain_id.clone(),
        }
    }

    /// As key=value tags of `network`: the reserved keys, and each deploy tag as a key with an empty
    /// value.
    pub fn to_pairs(&self, network: &str) -> BTreeMap<String, String> {
        let mut map: BTreeMap<String, String> =
            self.deploy.iter().map(|t| (t.clone(), DEPLOY_TAG_VALUE.to_string())).collect();
        map.insert(Key::Network.pair_key().into(), network.into());
        map.insert(Key::Address.pair_key().into(), self.address.to_string());
        map.insert(Key::Generation.pair_key().into(), self.generation.to_string());
        map.insert(Key::Bootstrap.pair_key().into(), self.bootstrap.to_string());
        if let Some(chain) = &self.chain_id {
            map.insert(Key::ChainId.pair_key().into(), chain.as_str().into());
        }
        map
    }

    /// Reads key=value tags; `None` when the address is missing, malformed or not a machine's (not
    /// ours to manage as a machine). Keys `provider_key` accepts (a provider's own, such as EC2's
    /// `Name`) are never deploy tags.
    pub fn from_pairs(map: &BTreeMap<String, String>, provider_key: fn(&str) -> bool) -> Option<Self> {
        let address = map.get(Key::Address.pair_key())?.parse::<Address>().ok()?;
        if !matches!(address, Address::Machine { .. }) {
            return None;
        }
        let number = |key: Key| map.get(key.pair_key()).and_then(|v| v.parse().ok()).unwrap_or(0);
        Some(MachineOwnership {
            address,
            deploy: deploy_pairs(map, provider_key),
            generation: number(Key::Generation),
            bootstrap: number(Key::Bootstrap),
            chain_id: map.get(Key::ChainId.pair_key()).and_then(|c| ChainId::parse(c)),
        })
    }

    /// As bare tags of `network`, sorted: each deploy tag with its marker, then the reserved tags. The
    /// address is not among them: it is the object's [`machine_name`].
    pub fn to_bare(&self, network: &str) -> Vec<String> {
        let mut tags: BTreeSet<String> = BTreeSet::new();
        for t in &self.deploy {
            tags.insert(t.clone());
            tags.insert(Key::Deploy.bare(t));
        }
        tags.insert(Key::Network.bare(network));
        tags.insert(Key::Generation.bare(&self.generation.to_string()));
        tags.insert(Key::Bootstrap.bare(&self.bootstrap.to_string()));
        if let Some(chain) = &self.chain_id {
            tags.insert(Key::ChainId.bare(chain.as_str()));
        }
        tags.into_iter().collect()
    }

    /// Reads the bare tags and the name of an object of `network`; `None` when it lacks the network
    /// tag or its name is not a machine address of the network.
    pub fn from_bare(network: &str, name: &str, tags: &[String]) -> Option<Self> {
        if !tags.contains(&Key::Network.bare(network)) {
            return None;
        }
        let number = |key: Key| key.bare_value(tags).and_then(|v| v.parse().ok()).unwrap_or(0);
        Some(MachineOwnership {
            address: address_of_name(network, name)?,
            deploy: deploy_bare(tags),
            generation: number(Key::Generation),
            bootstrap: number(Key::Bootstrap),
            chain_id: Key::ChainId.bare_value(tags).and_then(ChainId::parse),
        })
    }
}

/// Deploy tags among key=value tags: unreserved keys with the empty value. A key with a value is
/// someone else's (`Owner=alice`).
pub fn deploy_pairs(map: &BTreeMap<String, String>, provider_key: fn(&str) -> bool) -> BTreeSet<String> {
    map.iter()
        .filter(|(k, v)| !is_reserved(k) && !provider_key(k) && v.as_str() == DEPLOY_TAG_VALUE)
        .map(|(k, _)| k.clone())
        .collect()
}

/// Deploy tags among bare tags: those with a marker. On an object with no marker at all (made before
/// markers existed) every unreserved tag, as then.
pub fn deploy_bare(tags: &[String]) -> BTreeSet<String> {
    let marked: BTreeSet<String> =
        tags.iter().filter_map(|t| t.strip_prefix(Key::Deploy.bare_prefix())).map(str::to_string).collect();
    let unreserved = tags.iter().filter(|t| !is_reserved(t));
    if marked.is_empty() {
        unreserved.cloned().collect()
    } else {
        unreserved.filter(|t| marked.contains(*t)).cloned().collect()
    }
}

/// The bare tags peerfleet manages on an existing object and may add or remove in place: its deploy
/// tags with their markers, the chain ID and the firewall tag — never the network, generation or
/// bootstrap tags (only a replace changes those), and never a tag it did not write.
pub fn managed_bare(tags: &[String]) -> BTreeSet<String> {
    let mut managed: BTreeSet<String> = BTreeSet::new();
    for t in deploy_bare(tags) {
        managed.insert(Key::Deploy.bare(&t));
        managed.insert(t);
    }
    for t in tags {
        if t.starts_with(Key::ChainId.bare_prefix()) || t.starts_with(Key::Firewall.bare_prefix()) {
            managed.insert(t.clone());
        }
    }
    managed
}

/// What an in-place update does to an object's tags.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TagChanges {
    /// Tags to add.
    pub add: BTreeSet<String>,
    /// Tags to remove: only ever tags peerfleet wrote.
    pub remove: BTreeSet<String>,
}

/// The changes from the tags peerfleet wrote on an object (`written`, as refresh reports them) to
/// the tags it wants there. A tag outside `written` is never removed: that is the foreign-tag policy.
pub fn deploy_tag_changes(written: &BTreeSet<String>, wanted: &BTreeSet<String>) -> TagChanges {
    TagChanges {
        add: wanted.difference(written).cloned().collect(),
        remove: written.difference(wanted).cloned().collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn set(v: &[&str]) -> BTreeSet<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn record() -> MachineOwnership {
        MachineOwnership {
            address: Address::machine("sao-paulo", 2),
            deploy: set(&["peer_cluster", "relay"]),
            generation: 3,
            bootstrap: 1,
            chain_id: Some(ChainId::of(b"genesis")),
        }
    }

    #[test]
    fn a_machine_name_gives_back_its_address_and_nothing_else_does() {
        let a = Address::machine("us-east", 7);
        assert_eq!(machine_name("main-net", &a), "main-net-us-east-7");
        assert_eq!(address_of_name("main-net", "main-net-us-east-7"), Some(a));
        assert_eq!(address_of_name("main-net", "main-net-us-east-"), None);
        assert_eq!(address_of_name("main-net", "main-netus-east-7"), None);
        assert_eq!(
            machine_name("n", &Address::container("relay", 1)),
            format!("n-{}", Address::container("relay", 1).slug())
        );
    }

    #[test]
    fn both_spellings_read_back_as_the_same_record() {
        let r = record();
        assert_eq!(MachineOwnership::from_pairs(&r.to_pairs("prod-eu"), |_| false), Some(r.clone()));
        let name = machine_name("prod-eu", &r.address);
        assert_eq!(MachineOwnership::from_bare("prod-eu", &name, &r.to_bare("prod-eu")), Some(r.clone()));
        assert_eq!(MachineOwnership::from_bare("other", &name, &r.to_bare("prod-eu")), None);
    }

    #[test]
    fn hand_added_tags_are_not_deploy_tags_in_either_spelling() {
        let r = record();
        let mut pairs = r.to_pairs("n");
        pairs.insert("Owner".into(), "alice".into());
        pairs.insert("Name".into(), String::new());
        assert_eq!(
            MachineOwnership::from_pairs(&pairs, |k| k == "Name").map(|o| o.deploy),
            Some(r.deploy.clone())
        );
        let mut bare = r.to_bare("n");
        bare.push("owner-alice".into());
        assert_eq!(deploy_bare(&bare), r.deploy);
        assert!(!managed_bare(&bare).contains("owner-alice"));
    }

    #[test]
    fn unmarked_objects_read_every_unreserved_tag_as_a_deploy_tag() {
        let legacy = strings(&["peer_cluster", "relay", "peerfleet:network:n", "peerfleet:gen:0"]);
        assert_eq!(deploy_bare(&legacy), set(&["peer_cluster", "relay"]));
    }

    #[test]
    fn an_update_removes_only_tags_peerfleet_wrote() {
        let changes = deploy_tag_changes(&set(&["peer_cluster", "relay"]), &set(&["peer_cluster", "seed"]));
        assert_eq!(changes, TagChanges { add: set(&["seed"]), remove: set(&["relay"]) });
        let mut bare = record().to_bare("n");
        bare.push("owner-alice".into());
        let mut wanted = record();
        wanted.deploy = set(&["peer_cluster"]);
        let want: BTreeSet<String> = managed_bare(&wanted.to_bare("n"));
        let changes = deploy_tag_changes(&managed_bare(&bare), &want);
        assert_eq!(changes.remove, set(&["relay", "peerfleet:deploy:relay"]));
        assert!(changes.add.is_empty());
    }

    #[test]
    fn reserved_tags_are_recognised_by_their_prefix() {
        assert!(is_reserved(Key::Network.pair_key()));
        assert!(is_reserved(&Key::Generation.bare("1")));
        assert!(!is_reserved("peer_cluster"));
    }
}
