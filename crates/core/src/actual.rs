//! What exists: the refreshed view of a network, keyed by address.

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::address::Address;
use crate::network::ChainId;
use crate::resource::{Actual, Container, Machine};

/// Everything refresh found, by address.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActualState {
    /// One object per address (the oldest, by provider ID, when there were several).
    pub objects: BTreeMap<Address, Actual>,
    /// Further objects carrying an address already taken: left by a crash on a provider without
    /// idempotency tokens. Reported, never silently adopted twice.
    pub duplicates: Vec<Actual>,
    /// Whether containers were listed (false with `--only machines`, or before any engine exists).
    pub containers_listed: bool,
}

impl ActualState {
    /// Adds an object, keeping the one with the smaller provider ID when the address is taken.
    ///
    /// Which object is kept does not depend on the order of insertion; the order of
    /// [`ActualState::duplicates`] does, until [`ActualState::sort_duplicates`].
    pub fn insert(&mut self, object: Actual) {
        match self.objects.entry(object.address().clone()) {
            Entry::Vacant(slot) => {
                slot.insert(object);
            }
            Entry::Occupied(mut slot) => {
                // IDs sort in creation order on every provider we have (EC2, DigitalOcean numeric
                // IDs compared as numbers, Docker has no duplicates by name): keep the oldest.
                if id_key(object.id()) < id_key(slot.get().id()) {
                    let older = slot.insert(object);
                    self.duplicates.push(older);
                } else {
                    self.duplicates.push(object);
                }
            }
        }
    }

    /// Puts [`ActualState::duplicates`] in (address, ID) order, so that nothing downstream (the
    /// warning, the digest) depends on the order providers answered in.
    pub fn sort_duplicates(&mut self) {
        self.duplicates.sort_by(|a, b| (a.address(), a.id()).cmp(&(b.address(), b.id())));
    }

    /// The machine at `address`.
    pub fn machine(&self, address: &Address) -> Option<&Machine> {
        match self.objects.get(address) {
            Some(Actual::Machine(m)) => Some(m),
            _ => None,
        }
    }

    /// The container at `address`.
    pub fn container(&self, address: &Address) -> Option<&Container> {
        match self.objects.get(address) {
            Some(Actual::Container(c)) => Some(c),
            _ => None,
        }
    }

    /// The chain ID the existing genesis server carries (container label, else its machine's tag).
    pub fn pinned_chain(&self) -> Option<ChainId> {
        let from_container = self.objects.values().find_map(|o| match o {
            Actual::Container(c) => c.chain_id.clone(),
            _ => None,
        });
        from_container.or_else(|| {
            self.objects.values().find_map(|o| match o {
                Actual::Machine(m) => m.chain_id.clone(),
                _ => None,
            })
        })
    }

    /// A digest of what exists, for refusing stale plans.
    ///
    /// It covers each object's identity and what can change without its ID changing (a machine's
    /// tags or size, a container's run state, a firewall's rules, where a stable IP points). A
    /// container's configuration is not hashed: containers are never changed in place, so a new
    /// configuration means a new ID. Left out: what changes on its own between plan and apply (a
    /// machine finishing its boot, a health check passing), so only real drift counts.
    pub fn digest(&self) -> String {
        let mut h = Sha256::new();
        let mut field = |s: &str| {
            h.update(s.as_bytes());
            h.update([0u8]);
        };
        // One buffer for every formatted field (10,000 containers would otherwise be 20,000 strings);
        // the bytes hashed are the same as formatting each into a string of its own.
        let mut buf = String::new();
        macro_rules! text {
            ($($arg:tt)*) => {{
                buf.clear();
                let _ = write!(buf, $($arg)*); // writing to a String cannot fail
                buf.as_str()
            }};
        }
        for object in self.objects.values().chain(self.duplicates.iter()) {
            field(text!("{}", object.address()));
            field(object.id());
            match object {
                Actual::Machine(m) => {
                    field(&m.region);
                    field(&m.size);
                    field(&m.image);
                    m.tags.iter().for_each(|t| field(t));
                    field(m.chain_id.as_ref().map(|c| c.as_str()).unwrap_or("-"));
                    field(text!("{}", m.generation));
                    field(text!("{}", m.bootstrap));
                    field(m.public_ip.as_deref().unwrap_or("-"));
                }
                Actual::Container(c) => field(text!("{:?}", c.state)),
                Actual::Firewall(f) => {
                    for r in &f.rules {
                        field(text!("{:?}/{}/{}", r.protocol, r.port, r.sources.join(",")));
                    }
                }
                Actual::StableIp(ip) => {
                    field(&ip.ip);
                    field(ip.machine_id.as_deref().unwrap_or("-"));
                }
            }
            field("\n");
        }
        hex::encode(h.finalize())
    }
}

fn id_key(id: &str) -> (usize, &str) {
    // Numeric IDs of different lengths compare by length first, so "9" < "10".
    (id.len(), id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::network::ProviderKind;
    use crate::resource::{
        ContainerState, Firewall, FirewallRule, Health, MachineStatus, Protocol, StableIp,
    };

    fn state() -> ActualState {
        let mut state = ActualState::default();
        state.insert(Actual::Machine(Machine {
            id: "i-1".into(),
            address: Address::machine("virginia", 0),
            provider: ProviderKind::Aws,
            region: "us-east-1".into(),
            size: "t3.small".into(),
            image: "ami-1".into(),
            tags: ["peer_cluster".to_string()].into(),
            chain_id: None,
            generation: 3,
            bootstrap: 2,
            status: MachineStatus::Running,
            public_ip: Some("192.0.2.1".into()),
            private_ip: None,
        }));
        state.insert(Actual::Container(Container {
            id: "c1".into(),
            address: Address::container("relay", 0),
            spec: None,
            state: ContainerState::Running,
            health: Health::Healthy,
            chain_id: None,
        }));
        state.insert(Actual::Firewall(Firewall {
            id: "sg-1".into(),
            address: Address::firewall(ProviderKind::Aws, "us-east-1"),
            rules: vec![FirewallRule {
                protocol: Protocol::Tcp,
                port: 26656,
                sources: vec!["0.0.0.0/0".into()],
            }],
        }));
        state.insert(Actual::StableIp(StableIp {
            id: "eip-1".into(),
            address: Address::stable_ip("virginia", 0),
            ip: "198.51.100.7".into(),
            machine_id: Some("i-1".into()),
            provider: Some(ProviderKind::Aws),
        }));
        state
    }

    #[test]
    fn the_digest_of_what_exists_is_stable_across_versions() {
        // Plan files record this digest and apply compares it: a change of its bytes would refuse
        // every plan made by the previous version. Pinned from the version that formatted each field
        // into a string of its own.
        assert_eq!(state().digest(), "1d17c8c7771f585cf642a398820872108ec347ad2c81a640055bab9761711dfe");
    }

    #[test]
    fn duplicates_keep_the_oldest_whatever_the_order_they_come_in() {
        let object = |id: &str| {
            Actual::Container(Container {
                id: id.into(),
                address: Address::container("relay", 0),
                spec: None,
                state: ContainerState::Running,
                health: Health::Healthy,
                chain_id: None,
            })
        };
        let mut forward = ActualState::default();
        let mut backward = ActualState::default();
        for id in ["9", "10", "11"] {
            forward.insert(object(id));
        }
        for id in ["11", "10", "9"] {
            backward.insert(object(id));
        }
        forward.sort_duplicates();
        backward.sort_duplicates();
        assert_eq!(forward, backward);
        assert_eq!(forward.objects[&Address::container("relay", 0)].id(), "9");
    }
}
