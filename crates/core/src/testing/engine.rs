//! The test world as an [`EngineConnector`] and its per-machine [`ContainerEngine`]s.

use std::sync::Arc;

use async_trait::async_trait;
use tokio::time::Instant;

use super::{Op, Running, TestWorld, error};
use crate::network::Role;
use crate::provider::{
    ContainerContext, ContainerEngine, EngineConnector, ErrorKind, HealthDetail, ProviderError,
};
use crate::resource::{Container, ContainerSpec, ContainerState, Health, Machine};
use crate::status::ProbeLine;

/// The engine of one machine of the test world.
#[derive(Debug, Clone)]
pub struct TestEngine {
    world: TestWorld,
    machine_id: String,
}

#[async_trait]
impl EngineConnector for TestWorld {
    fn engine_key(&self, machine: &Machine) -> String {
        machine.id.clone()
    }

    async fn engine_for(&self, machine: &Machine) -> Result<Arc<dyn ContainerEngine>, ProviderError> {
        let _call = self.enter(Op::EngineFor, Some(&machine.address)).await?;
        if !self.lock().machines.contains_key(&machine.id) {
            return Err(error(ErrorKind::Transient, format!("cannot reach the engine of {}", machine.id)));
        }
        let engine: Arc<dyn ContainerEngine> =
            Arc::new(TestEngine { world: self.clone(), machine_id: machine.id.clone() });
        self.leave(Op::EngineFor, Some(&machine.address), engine).await
    }
}

#[async_trait]
impl ContainerEngine for TestEngine {
    async fn list_containers(&self, network: &str) -> Result<Vec<Container>, ProviderError> {
        let _call = self.world.enter(Op::ListContainers, None).await?;
        let list = {
            let w = self.world.lock();
            let healthy_after = w.healthy_after;
            w.containers
                .get(&self.machine_id)
                .into_iter()
                .flat_map(|on| on.values())
                .filter(|r| r.network == network)
                .map(|r| Container { health: w.health_of(r, healthy_after), ..r.container.clone() })
                .collect()
        };
        self.world.leave(Op::ListContainers, None, list).await
    }

    async fn create_container(
        &self,
        spec: &ContainerSpec,
        ctx: &ContainerContext,
    ) -> Result<Container, ProviderError> {
        let _call = self.world.enter(Op::CreateContainer, Some(&spec.address)).await?;
        let container = {
            let mut w = self.world.lock();
            w.hosts_given.insert(spec.address.clone(), ctx.hosts.clone());
            if !w.machines.contains_key(&self.machine_id) {
                return Err(error(
                    ErrorKind::Transient,
                    format!("cannot reach the engine of {}", self.machine_id),
                ));
            }
            let id = w.id("c");
            let healthy_after = w.healthy_after;
            let mut container = Container {
                id: id.clone(),
                address: spec.address.clone(),
                // What a Docker label keeps: sensitive values sealed.
                spec: Some(spec.sealed()),
                state: ContainerState::Running,
                health: Health::Starting,
                chain_id: spec.chain_id.clone(),
            };
            let running = Running {
                network: spec.network.clone(),
                container: container.clone(),
                created: Instant::now(),
            };
            container.health = w.health_of(&running, healthy_after);
            let on_machine = w.containers.entry(self.machine_id.clone()).or_default();
            // Names are unique per engine: a container of the same name left by a crash is replaced.
            // A start-first replace keeps the old container running beside the new one.
            let beside = ctx.beside.as_ref().map(|c| c.id.as_str());
            on_machine.retain(|id, r| {
                Some(id.as_str()) == beside
                    || !(r.network == spec.network
                        && r.container.spec.as_ref().map(|s| &s.name) == Some(&spec.name))
            });
            on_machine.insert(id, running);
            container
        };
        self.world.leave(Op::CreateContainer, Some(&spec.address), container).await
    }

    async fn remove_container(&self, current: &Container) -> Result<(), ProviderError> {
        let _call = self.world.enter(Op::RemoveContainer, Some(&current.address)).await?;
        if let Some(on) = self.world.lock().containers.get_mut(&self.machine_id) {
            on.remove(&current.id);
        }
        self.world.leave(Op::RemoveContainer, Some(&current.address), ()).await
    }

    /// A master's probe line, as the reference node prints it, when the world models re-peering.
    async fn health_detail(&self, current: &Container) -> Result<Option<HealthDetail>, ProviderError> {
        let Some(found) = self.inspect_container(current).await? else { return Ok(None) };
        let w = self.world.lock();
        let Some(delay) =
            w.relays_repeer_after.filter(|_| found.spec.as_ref().is_some_and(|s| s.role == Role::Master))
        else {
            return Ok(Some(HealthDetail::default()));
        };
        let master = w.containers.values().find_map(|on| on.get(&found.id));
        let network = master.map(|r| r.network.clone()).unwrap_or_default();
        let peered = master.is_some_and(|r| r.created.elapsed() >= w.healthy_after + delay);
        let relays = if peered {
            w.containers
                .values()
                .flat_map(|on| on.values())
                .filter(|r| r.network == network)
                .filter(|r| r.container.spec.as_ref().is_some_and(|s| s.role == Role::Relay))
                .count() as u32
        } else {
            0
        };
        let line = ProbeLine { healthy: true, relays: Some(relays), ..ProbeLine::default() };
        let output = serde_json::to_string(&line).map_err(|e| error(ErrorKind::Invalid, e.to_string()))?;
        Ok(Some(HealthDetail { started_unix_s: None, last_check_output: Some(output) }))
    }

    async fn inspect_container(&self, current: &Container) -> Result<Option<Container>, ProviderError> {
        let _call = self.world.enter(Op::InspectContainer, Some(&current.address)).await?;
        let found = {
            let w = self.world.lock();
            let healthy_after = w.healthy_after;
            w.containers
                .get(&self.machine_id)
                .and_then(|on| on.get(&current.id))
                .map(|r| Container { health: w.health_of(r, healthy_after), ..r.container.clone() })
        };
        self.world.leave(Op::InspectContainer, Some(&current.address), found).await
    }
}
