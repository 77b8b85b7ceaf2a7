//! The test world as a [`MachineProvider`]: machines with EC2-like idempotency keys, and firewalls
//! and stable IPs looked up by ownership before a create, as on DigitalOcean.

use async_trait::async_trait;

use super::{Op, Owned, TestWorld, not_found};
use crate::network::ProviderKind;
use crate::provider::{CreateContext, Inventory, MachineProvider, ProviderError};
use crate::resource::{Firewall, FirewallSpec, Machine, MachineSpec, StableIp, StableIpSpec};

#[async_trait]
impl MachineProvider for TestWorld {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Local
    }

    async fn inventory(&self, network: &str, region: &str) -> Result<Inventory, ProviderError> {
        let _call = self.enter(Op::Inventory, None).await?;
        let inventory = {
            let w = self.lock();
            let mine = |n: &str, r: &str| n == network && r == region;
            Inventory {
                machines: w
                    .machines
                    .values()
                    .filter(|m| mine(&m.network, &m.region))
                    .map(|m| m.value.clone())
                    .collect(),
                firewalls: w
                    .firewalls
                    .values()
                    .filter(|f| mine(&f.network, &f.region))
                    .map(|f| f.value.clone())
                    .collect(),
                stable_ips: w
                    .stable_ips
                    .values()
                    .filter(|s| mine(&s.network, &s.region))
                    .map(|s| s.value.clone())
                    .collect(),
            }
        };
        self.leave(Op::Inventory, None, inventory).await
    }

    async fn create_machine(
        &self,
        spec: &MachineSpec,
        ctx: &CreateContext,
    ) -> Result<Machine, ProviderError> {
        let _call = self.enter(Op::CreateMachine, Some(&spec.address)).await?;
        let machine = {
            let mut w = self.lock();
            w.firewall_given.insert(spec.address.clone(), ctx.firewall.as_ref().map(|f| f.id.clone()));
            let existing =
                w.keys.get(&spec.idempotency_key).and_then(|id| w.machines.get(id)).map(|m| m.value.clone());
            match existing {
                Some(m) => m,
                None => {
                    let id = w.id("i");
                    let machine = Self::machine_from_spec(id.clone(), w.next_id, spec);
                    let owned = Owned {
                        network: spec.network.clone(),
                        region: machine.region.clone(),
                        value: machine.clone(),
                    };
                    w.machines.insert(id.clone(), owned);
                    w.keys.insert(spec.idempotency_key.clone(), id);
                    machine
                }
            }
        };
        self.leave(Op::CreateMachine, Some(&spec.address), machine).await
    }

    async fn update_machine(&self, current: &Machine, spec: &MachineSpec) -> Result<Machine, ProviderError> {
        let _call = self.enter(Op::UpdateMachine, Some(&spec.address)).await?;
        let updated = {
            let mut w = self.lock();
            let m = w.machines.get_mut(&current.id).ok_or_else(|| not_found(&current.id))?;
            m.value.tags = spec.tags.clone();
            m.value.size = spec.size.clone();
            m.value.clone()
        };
        self.leave(Op::UpdateMachine, Some(&spec.address), updated).await
    }

    async fn delete_machine(&self, current: &Machine) -> Result<(), ProviderError> {
        let _call = self.enter(Op::DeleteMachine, Some(&current.address)).await?;
        {
            let mut w = self.lock();
            w.machines.remove(&current.id);
            // Its containers die with it; a stable IP attached to it comes loose.
            w.containers.remove(&current.id);
            for ip in w.stable_ips.values_mut() {
                if ip.value.machine_id.as_deref() == Some(current.id.as_str()) {
                    ip.value.machine_id = None;
                }
            }
        }
        self.leave(Op::DeleteMachine, Some(&current.address), ()).await
    }

    async fn create_firewall(&self, spec: &FirewallSpec) -> Result<Firewall, ProviderError> {
        let _call = self.enter(Op::CreateFirewall, Some(&spec.address)).await?;
        let firewall = {
            let mut w = self.lock();
            let existing =
                w.firewalls.values().find(|f| f.network == spec.network && f.value.address == spec.address);
            match existing {
                Some(f) => f.value.clone(),
                None => {
                    let id = w.id("sg");
                    let f =
                        Firewall { id: id.clone(), address: spec.address.clone(), rules: spec.rules.clone() };
                    let owned = Owned {
                        network: spec.network.clone(),
                        region: spec.region.clone(),
                        value: f.clone(),
                    };
                    w.firewalls.insert(id, owned);
                    f
                }
            }
        };
        self.leave(Op::CreateFirewall, Some(&spec.address), firewall).await
    }

    async fn update_firewall(
        &self,
        current: &Firewall,
        spec: &FirewallSpec,
    ) -> Result<Firewall, ProviderError> {
        let _call = self.enter(Op::UpdateFirewall, Some(&spec.address)).await?;
        let updated = {
            let mut w = self.lock();
            let f = w.firewalls.get_mut(&current.id).ok_or_else(|| not_found(&current.id))?;
            f.value.rules = spec.rules.clone();
            f.value.clone()
        };
        self.leave(Op::UpdateFirewall, Some(&spec.address), updated).await
    }

    async fn delete_firewall(&self, current: &Firewall) -> Result<(), ProviderError> {
        let _call = self.enter(Op::DeleteFirewall, Some(&current.address)).await?;
        self.lock().firewalls.remove(&current.id);
        self.leave(Op::DeleteFirewall, Some(&current.address), ()).await
    }

    async fn create_stable_ip(
        &self,
        spec: &StableIpSpec,
        machine: &Machine,
    ) -> Result<StableIp, ProviderError> {
        let _call = self.enter(Op::CreateStableIp, Some(&spec.address)).await?;
        let ip = {
            let mut w = self.lock();
            if !w.machines.contains_key(&machine.id) {
                return Err(not_found(&machine.id));
            }
            let existing = w
                .stable_ips
                .values_mut()
                .find(|s| s.network == spec.network && s.value.address == spec.address);
            match existing {
                Some(s) => {
                    s.value.machine_id = Some(machine.id.clone());
                    s.value.clone()
                }
                None => {
                    let id = w.id("eip");
                    let ip = StableIp {
                        ip: format!("198.51.100.{}", w.next_id % 250 + 1),
                        id: id.clone(),
                        address: spec.address.clone(),
                        machine_id: Some(machine.id.clone()),
                        provider: Some(spec.provider),
                    };
                    let owned = Owned {
                        network: spec.network.clone(),
                        region: spec.region.clone(),
                        value: ip.clone(),
                    };
                    w.stable_ips.insert(id, owned);
                    ip
                }
            }
        };
        self.leave(Op::CreateStableIp, Some(&spec.address), ip).await
    }

    async fn attach_stable_ip(
        &self,
        current: &StableIp,
        machine: &Machine,
    ) -> Result<StableIp, ProviderError> {
        let _call = self.enter(Op::AttachStableIp, Some(&current.address)).await?;
        let ip = {
            let mut w = self.lock();
            if !w.machines.contains_key(&machine.id) {
                return Err(not_found(&machine.id));
            }
            let s = w.stable_ips.get_mut(&current.id).ok_or_else(|| not_found(&current.id))?;
            s.value.machine_id = Some(machine.id.clone());
            s.value.clone()
        };
        self.leave(Op::AttachStableIp, Some(&current.address), ip).await
    }

    async fn delete_stable_ip(&self, current: &StableIp) -> Result<(), ProviderError> {
        let _call = self.enter(Op::DeleteStableIp, Some(&current.address)).await?;
        self.lock().stable_ips.remove(&current.id);
        self.leave(Op::DeleteStableIp, Some(&current.address), ()).await
    }
}
