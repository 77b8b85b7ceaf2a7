//! What exists: the refreshed view of a network, keyed by address.

use std::collections::BTreeMap;

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
    pub fn insert(&mut self, object: Actual) {
        let address = object.address().clone();
        match self.objects.get(&address) {
            None => {
                self.objects.insert(address, object);
            }
            Some(existing) => {
                // IDs sort in creation order on every provider we have (EC2, DigitalOcean numeric
                // IDs compared as numbers, Docker has no duplicates by name): keep the oldest.
                if id_key(object.id()) < id_key(existing.id()) {
                    let older = self.objects.insert(address, object).expect("checked present above");
                    self.duplicates.push(older);
                } else {
                    self.duplicates.push(object);
                }
            }
        }
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
        for object in self.objects.values().chain(self.duplicates.iter()) {
            field(&object.address().to_string());
            field(object.id());
            match object {
                Actual::Machine(m) => {
                    field(&m.region);
                    field(&m.size);
                    field(&m.image);
                    m.tags.iter().for_each(|t| field(t));
                    field(m.chain_id.as_ref().map(|c| c.as_str()).unwrap_or("-"));
                    field(&m.generation.to_string());
                    field(&m.bootstrap.to_string());
                    field(m.public_ip.as_deref().unwrap_or("-"));
                }
                Actual::Container(c) => field(&format!("{:?}", c.state)),
                Actual::Firewall(f) => {
                    for r in &f.rules {
                        field(&format!("{:?}/{}/{}", r.protocol, r.port, r.sources.join(",")));
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
