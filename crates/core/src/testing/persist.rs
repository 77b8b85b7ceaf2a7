//! The test world kept on disk: what lets a test kill the process applying against the world and
//! still know, afterwards, what the providers did.
//!
//! Every call that changes the world appends one line to a log the instant it took effect (before its
//! caller hears back): the operation, the address, and everything at that address afterwards. One
//! short write, so a kill lands before it or after it; and cheap, so the log keeps pace with the
//! world, which is what lets a test judge a killed run's state by it (a state saved a moment too late
//! must not look on time). Replaying the log rebuilds the world.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::{Op, Owned, Running, TestWorld, World};
use crate::address::Address;
use crate::resource::{Container, Firewall, Machine, StableIp};

/// The open log of a kept world.
#[derive(Debug)]
pub(super) struct Kept {
    log: File,
}

/// One change: everything at `address` once `op` took effect.
#[derive(Serialize, Deserialize)]
struct Line {
    op: String,
    address: Address,
    next_id: u64,
    /// Machines with the idempotency keys that name them.
    machines: Vec<(Owned<Machine>, Vec<String>)>,
    firewalls: Vec<Owned<Firewall>>,
    stable_ips: Vec<Owned<StableIp>>,
    /// Containers with the machine whose engine runs them and their network.
    containers: Vec<(String, String, Container)>,
}

impl World {
    /// Logs what `op` left at `address`, when the world is kept.
    pub(super) fn persist(&mut self, op: Op, address: Option<&Address>) -> io::Result<()> {
        let (Some(address), true) = (address, self.persist.is_some()) else { return Ok(()) };
        let at = |a: &Address| a == address;
        let machines = self
            .machines
            .values()
            .filter(|m| at(&m.value.address))
            .map(|m| {
                let keys = self.keys.iter().filter(|(_, id)| **id == m.value.id).map(|(k, _)| k.clone());
                (m.clone(), keys.collect())
            })
            .collect();
        let containers = self
            .containers
            .iter()
            .flat_map(|(machine, on)| on.values().map(move |r| (machine, r)))
            .filter(|(_, r)| at(&r.container.address))
            .map(|(machine, r)| (machine.clone(), r.network.clone(), r.container.clone()))
            .collect();
        let line = Line {
            op: format!("{op:?}"),
            address: address.clone(),
            next_id: self.next_id,
            machines,
            firewalls: self.firewalls.values().filter(|f| at(&f.value.address)).cloned().collect(),
            stable_ips: self.stable_ips.values().filter(|s| at(&s.value.address)).cloned().collect(),
            containers,
        };
        let mut bytes = serde_json::to_vec(&line).map_err(io::Error::other)?;
        bytes.push(b'\n');
        let Some(kept) = &mut self.persist else { return Ok(()) };
        kept.log.write_all(&bytes)
    }

    /// Makes everything at `line.address` what the line says.
    fn replay(&mut self, line: Line) {
        let here = |a: &Address| *a == line.address;
        let gone: Vec<String> =
            self.machines.values().filter(|m| here(&m.value.address)).map(|m| m.value.id.clone()).collect();
        self.machines.retain(|_, m| !here(&m.value.address));
        self.keys.retain(|_, id| !gone.contains(id));
        self.firewalls.retain(|_, f| !here(&f.value.address));
        self.stable_ips.retain(|_, s| !here(&s.value.address));
        for on in self.containers.values_mut() {
            on.retain(|_, r| !here(&r.container.address));
        }
        for (machine, keys) in line.machines {
            for key in keys {
                self.keys.insert(key, machine.value.id.clone());
            }
            self.machines.insert(machine.value.id.clone(), machine);
        }
        for f in line.firewalls {
            self.firewalls.insert(f.value.id.clone(), f);
        }
        for s in line.stable_ips {
            self.stable_ips.insert(s.value.id.clone(), s);
        }
        let created = Instant::now();
        for (machine, network, container) in line.containers {
            let running = Running { network, container, created };
            self.containers.entry(machine).or_default().insert(running.container.id.clone(), running);
        }
        self.next_id = self.next_id.max(line.next_id);
    }
}

/// The lines of the log at `path`.
fn lines(path: &Path) -> io::Result<Vec<Line>> {
    let text = crate::input::read_regular_text(path, 1 << 30)?;
    // A line a kill cut short was never a change anyone heard of.
    let whole = text.rsplit_once('\n').map_or("", |(whole, _)| whole);
    whole.lines().map(|l| serde_json::from_str(l).map_err(io::Error::other)).collect()
}

impl TestWorld {
    /// From now on, logs every call that changes the world to the file at `path` (appended, created
    /// if needed), the instant it took effect.
    ///
    /// # Errors
    /// The log cannot be opened.
    pub fn persist_to(&self, path: impl Into<PathBuf>) -> io::Result<()> {
        let log = OpenOptions::new().create(true).append(true).open(path.into())?;
        self.lock().persist = Some(Kept { log });
        Ok(())
    }

    /// A world holding what the world logged at `path` held (its latencies and faults are not kept;
    /// its containers count as started now).
    ///
    /// # Errors
    /// The log cannot be read, or a line of it is not a change.
    pub fn restore(path: &Path) -> io::Result<TestWorld> {
        let world = TestWorld::new();
        {
            let mut w = world.lock();
            for line in lines(path)? {
                w.replay(line);
            }
            // What a deleted machine took with it: its engine's containers, its stable IPs' link.
            let machines: Vec<String> = w.machines.keys().cloned().collect();
            w.containers.retain(|id, _| machines.contains(id));
            for ip in w.stable_ips.values_mut() {
                if ip.value.machine_id.as_ref().is_some_and(|id| !machines.contains(id)) {
                    ip.value.machine_id = None;
                }
            }
        }
        Ok(world)
    }

    /// The calls that changed the world logged at `path`, in order: the operation's name and the
    /// address it was for.
    ///
    /// # Errors
    /// As [`TestWorld::restore`].
    pub fn changes_made(path: &Path) -> io::Result<Vec<(String, Address)>> {
        Ok(lines(path)?.into_iter().map(|l| (l.op, l.address)).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::network::ProviderKind;
    use crate::provider::MachineProvider;
    use crate::resource::FirewallSpec;

    #[tokio::test]
    async fn a_kept_world_is_restored_with_its_objects_and_logged_changes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("world.log");
        let world = TestWorld::new();
        world.persist_to(&path).unwrap();
        let address = Address::firewall(ProviderKind::Aws, "us-east-1");
        let spec = FirewallSpec {
            address: address.clone(),
            network: "net".into(),
            provider: ProviderKind::Aws,
            region: "us-east-1".into(),
            rules: vec![],
        };
        world.create_firewall(&spec).await.unwrap();
        let back = TestWorld::restore(&path).unwrap();
        assert_eq!(back.firewalls("net"), world.firewalls("net"));
        let changes = TestWorld::changes_made(&path).unwrap();
        assert_eq!(changes, [("CreateFirewall".to_string(), address)]);
    }
}
