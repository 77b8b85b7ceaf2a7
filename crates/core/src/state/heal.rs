//! Healing: writing back into the state what a refresh found (invariant 9).
//!
//! The executor records what its steps did, and nothing else. After a crash, a re-apply finds the
//! objects the killed run created just before it died by their ownership tags, and plans nothing for
//! them: no step runs, so without this nothing would ever record them, their intents would stay, and a
//! plan made from the state alone (`plan --refresh=false`) would want to create them again. Healing
//! closes that gap after an apply: for every address the refresh covered and the apply did not touch,
//! the state takes exactly what exists, the intent goes (its generation stays remembered, so an
//! idempotency key is never reused), and a lost chain pin is restored from the genesis server's labels.

use std::collections::BTreeSet;

use base64::Engine as _;

use super::{ChainPin, State};
use crate::actual::ActualState;
use crate::address::Address;
use crate::network::ChainId;
use crate::plan::{Layer, layer_of};
use crate::resource::Actual;

/// What a refresh saw, for [`State::heal`].
#[derive(Debug, Clone, Copy)]
pub struct Refreshed<'a> {
    /// What the refresh found.
    pub actual: &'a ActualState,
    /// Whether it listed every container of the network (not with `--only machines`, nor when a
    /// destroy skipped cloud machines' engines). Machines, firewalls and stable IPs are always listed.
    pub containers: bool,
    /// The spec's genesis bytes: restore a lost pin from them when they hash to the chain the genesis
    /// server carries and its labels do not hold the bytes.
    pub spec_genesis: Option<&'a [u8]>,
}

impl Refreshed<'_> {
    fn covers(&self, address: &Address) -> bool {
        layer_of(address) == Layer::Machines || self.containers
    }
}

impl State {
    /// Makes the state record exactly what `refreshed` found, for every address it covers except
    /// those in `recorded` (what the apply's own steps wrote, which is newer than the refresh).
    ///
    /// For each such address: the resource becomes the refreshed object (or goes, when nothing
    /// exists), the intent is cleared, and the generations of the intent, of the machine recorded
    /// before and of the machine found stay remembered in [`State::generations`]. A missing chain pin is restored from the chain the
    /// genesis server carries, with the bytes its container's labels hold (or the spec's, when they
    /// hash to it). Returns whether anything changed (then the caller saves).
    pub fn heal(&mut self, refreshed: &Refreshed<'_>, recorded: &BTreeSet<Address>) -> bool {
        let before = self.clone();
        let actual = refreshed.actual;
        let addresses: BTreeSet<Address> = self
            .resources
            .keys()
            .chain(self.intents.keys())
            .chain(actual.objects.keys())
            .filter(|a| refreshed.covers(a) && !recorded.contains(a))
            .cloned()
            .collect();
        for address in addresses {
            let mut generation = self.last_generation(&address);
            if let Some(Actual::Machine(m)) = self.resources.get(&address) {
                generation = generation.max(Some(m.generation));
            }
            match actual.objects.get(&address) {
                Some(object) => {
                    if let Actual::Machine(m) = object {
                        generation = generation.max(Some(m.generation));
                    }
                    self.resources.insert(address.clone(), object.clone());
                }
                None => {
                    self.resources.remove(&address);
                }
            }
            if let Some(g) = generation {
                self.generations.insert(address.clone(), g);
            }
            self.intents.remove(&address);
        }
        if self.chain.is_none()
            && let Some(pin) = pin_from(actual, refreshed.spec_genesis)
        {
            self.outputs.insert("chain_id".into(), pin.id.to_string());
            self.chain = Some(pin);
        }
        *self != before
    }
}

/// The pin of the chain the running genesis server carries, when its bytes are at hand.
fn pin_from(actual: &ActualState, spec_genesis: Option<&[u8]>) -> Option<ChainPin> {
    let id = actual.pinned_chain()?;
    let labelled = actual.objects.values().find_map(|o| match o {
        Actual::Container(c) if c.chain_id.as_ref() == Some(&id) => {
            let b64 = c.spec.as_ref()?.env.get("GENESIS_B64")?;
            base64::engine::general_purpose::STANDARD.decode(b64).ok()
        }
        _ => None,
    });
    labelled
        .into_iter()
        .chain(spec_genesis.map(<[u8]>::to_vec))
        .find(|bytes| ChainId::of(bytes) == id)
        .map(|bytes| ChainPin::new(&bytes))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::plan::Action;
    use crate::resource::{Container, ContainerState, Health, Machine, MachineStatus};
    use crate::state::{Intent, Timestamp};

    fn machine(slot: u32, generation: u32) -> Machine {
        Machine {
            id: format!("i-{slot}"),
            address: Address::machine("a", slot),
            provider: crate::network::ProviderKind::Aws,
            region: "us-east-1".into(),
            size: "t3.small".into(),
            image: "ami-1".into(),
            tags: BTreeSet::new(),
            chain_id: None,
            generation,
            bootstrap: 1,
            status: MachineStatus::Running,
            public_ip: None,
            private_ip: None,
        }
    }

    /// The genesis container a plan of a one-node network with `genesis` would create; without its
    /// spec (labels) when `with_bytes` is false.
    fn genesis_container(genesis: &[u8], with_bytes: bool) -> Container {
        let network = crate::spec::NetworkBuilder::new("heal")
            .genesis(genesis.to_vec())
            .cluster(crate::spec::ClusterBuilder::new("a", crate::network::ProviderKind::Local, "Oregon"))
            .service(crate::spec::ServiceBuilder::new("genesis", crate::network::Role::Genesis))
            .service(crate::spec::ServiceBuilder::new("master", crate::network::Role::Master))
            .build()
            .unwrap();
        let options = crate::plan::PlanOptions::default();
        let planned = crate::plan::plan(&network, &ActualState::default(), &Default::default(), &options);
        let spec = planned.unwrap().plan.changes.into_iter().find_map(|c| match c.after {
            Some(crate::resource::Desired::Container(s)) if s.role == crate::network::Role::Genesis => {
                Some(s)
            }
            _ => None,
        });
        let spec = spec.unwrap();
        Container {
            id: "c-genesis".into(),
            address: spec.address.clone(),
            spec: with_bytes.then_some(spec),
            state: ContainerState::Running,
            health: Health::Healthy,
            chain_id: Some(ChainId::of(genesis)),
        }
    }

    fn intent(generation: Option<u32>) -> Intent {
        Intent { action: Action::Create, idempotency_key: None, generation, started_at: Timestamp::now() }
    }

    fn actual(objects: Vec<Actual>) -> ActualState {
        let mut a = ActualState { containers_listed: true, ..ActualState::default() };
        objects.into_iter().for_each(|o| a.insert(o));
        a
    }

    #[test]
    fn adopted_objects_are_written_back_and_their_intents_cleared() {
        // The killed run created machine 0 and the genesis container; it saved only their intents.
        let mut state = State::new();
        state.intents.insert(Address::machine("a", 0), intent(Some(0)));
        let genesis = genesis_container(b"chain", true);
        state.intents.insert(genesis.address.clone(), intent(None));
        let found = actual(vec![Actual::Machine(machine(0, 0)), Actual::Container(genesis.clone())]);
        let refreshed = Refreshed { actual: &found, containers: true, spec_genesis: None };

        assert!(state.heal(&refreshed, &BTreeSet::new()));
        assert_eq!(state.resources, found.objects, "the state records exactly what exists");
        assert!(state.intents.is_empty());
        assert_eq!(state.generations.get(&Address::machine("a", 0)), Some(&0));
        assert_eq!(state.chain.as_ref().map(|p| p.id.clone()), Some(ChainId::of(b"chain")));
        assert_eq!(state.chain.as_ref().and_then(ChainPin::genesis), Some(b"chain".to_vec()));
        assert!(!state.heal(&refreshed, &BTreeSet::new()), "healing a healed state changes nothing");
    }

    #[test]
    fn what_no_longer_exists_leaves_the_state_but_its_generation_stays() {
        let mut state = State::new();
        state.resources.insert(Address::machine("a", 1), Actual::Machine(machine(1, 3)));
        state.intents.insert(Address::machine("a", 2), intent(Some(5)));
        let found = actual(vec![]);
        state.heal(&Refreshed { actual: &found, containers: true, spec_genesis: None }, &BTreeSet::new());
        assert!(state.resources.is_empty() && state.intents.is_empty());
        // A later create at these addresses must use new idempotency keys.
        assert_eq!(state.generations.get(&Address::machine("a", 1)), Some(&3));
        assert_eq!(state.generations.get(&Address::machine("a", 2)), Some(&5));
    }

    #[test]
    fn what_the_apply_recorded_and_what_refresh_did_not_list_are_left_alone() {
        let mut state = State::new();
        let relay = Address::Container { service: "relay".into(), slot: 0 };
        state.intents.insert(relay.clone(), intent(None));
        let recorded_machine = Actual::Machine(machine(0, 1));
        state.resources.insert(Address::machine("a", 0), recorded_machine.clone());
        // The refresh ran before the apply replaced machine 0: its view of it is older.
        let found = actual(vec![Actual::Machine(machine(0, 0))]);
        let recorded = BTreeSet::from([Address::machine("a", 0)]);
        state.heal(&Refreshed { actual: &found, containers: false, spec_genesis: None }, &recorded);
        assert_eq!(state.resources.get(&Address::machine("a", 0)), Some(&recorded_machine));
        assert!(state.intents.contains_key(&relay), "containers were not listed: their intent stays");
    }

    #[test]
    fn a_lost_pin_comes_back_from_the_spec_when_the_labels_lack_the_bytes() {
        let found = actual(vec![Actual::Container(genesis_container(b"chain", false))]);
        let mut state = State::new();
        let other = Refreshed { actual: &found, containers: true, spec_genesis: Some(b"other") };
        state.heal(&other, &BTreeSet::new());
        assert!(state.chain.is_none(), "bytes that do not hash to the carried chain are never pinned");
        let spec = Refreshed { actual: &found, containers: true, spec_genesis: Some(b"chain") };
        state.heal(&spec, &BTreeSet::new());
        assert_eq!(state.chain.and_then(|p| p.genesis()), Some(b"chain".to_vec()));
    }
}
