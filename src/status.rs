//! `status` as a library call: one look at the live network, judged against its spec and pinned chain.
//!
//! A look reads, and only through what `plan` already uses: the providers' tagged inventories, one
//! container list per engine, then one inspect per container for what its last health check printed
//! (the reference node's probe writes its peer facts there, see [`peerfleet_core::status`]). It takes
//! no lock (a monitor must not block an apply, nor wait for one), writes no state and opens no port.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use futures::{StreamExt, stream};
use peerfleet_core::actual::ActualState;
use peerfleet_core::address::Address;
use peerfleet_core::plan::Layer;
use peerfleet_core::provider::{HealthDetail, Providers};
use peerfleet_core::refresh::{self, Engines};
use peerfleet_core::resource::Actual;
use peerfleet_core::status::{self, StatusReport};

use crate::connect::ConnectOptions;
use crate::deploy::{DeployError, Deployment};

/// Inspects in flight at once: a look at a large network stays quick without flooding one engine.
const INSPECTS_AT_ONCE: usize = 16;

impl Deployment {
    /// Looks at the live network once and judges it ([`StatusReport::exit_code`]: 0 healthy on the
    /// pinned chain, 2 degraded).
    ///
    /// `only = Some(Layer::Machines)` judges the machines alone and contacts no container engine (the
    /// addresses a cloud stand-in hands out are not machines); anything else looks at everything.
    ///
    /// # Guarantees
    /// Read-only: no lock, no state written, nothing created. The reference node image is not needed.
    /// An engine that fails one container's inspect leaves that container judged by its listed state
    /// and health alone (logged), so one flaky call does not hide the rest of the network.
    ///
    /// # Errors
    /// The state cannot be read or belongs to another network, a provider or engine cannot be reached
    /// or listed, or the network was never deployed ([`DeployError::NotDeployed`]: no state and no
    /// machine carrying its tags — with a lost state file, what carries the tags is still reported).
    pub async fn status(&self, only: Option<Layer>) -> Result<StatusReport, DeployError> {
        let machines_only = only == Some(Layer::Machines);
        let state = self.load_state().await?;
        let options = ConnectOptions { reads_only: true, ..self.connect_options(only) };
        let connected = self.connect_with(&state, &options).await?;
        let remembered: Vec<Actual> = state.resources.values().cloned().collect();
        let engines = if machines_only { Engines::None } else { Engines::All };
        let actual =
            refresh::refresh_engines(self.network(), &connected.providers, &remembered, engines).await?;
        let any_machine = actual.objects.values().any(|o| matches!(o, Actual::Machine(_)));
        if state.lineage.is_none() && !any_machine {
            return Err(DeployError::NotDeployed {
                network: self.network().name.clone(),
                state: self.store().location(),
            });
        }
        let details =
            if machines_only { BTreeMap::new() } else { health_details(&connected.providers, &actual).await };
        // The pin wins over the spec: a spec edited to another genesis does not make the chain the
        // network actually serves wrong.
        let chain = state.chain.as_ref().map_or_else(|| self.network().chain.id.clone(), |p| p.id.clone());
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |t| t.as_secs());
        Ok(status::assess(self.network(), &actual, &details, &chain, now, machines_only))
    }
}

/// What each listed container's engine knows beyond state and health (start time, last check output).
async fn health_details(providers: &Providers, actual: &ActualState) -> BTreeMap<Address, HealthDetail> {
    let Some(engines) = providers.engines() else { return BTreeMap::new() };
    let looks = actual.objects.values().filter_map(|o| {
        let Actual::Container(c) = o else { return None };
        let machine = actual.machine(&c.spec.as_ref()?.node)?;
        let engines = engines.clone();
        Some(async move {
            let detail = match engines.engine_for(machine).await {
                Ok(engine) => engine.health_detail(c).await,
                Err(e) => Err(e),
            };
            (c, detail)
        })
    });
    let found: Vec<_> = stream::iter(looks).buffer_unordered(INSPECTS_AT_ONCE).collect().await;
    let mut details = BTreeMap::new();
    for (c, detail) in found {
        match detail {
            Ok(Some(d)) => {
                details.insert(c.address.clone(), d);
            }
            // Gone since the list: the next look sees it missing.
            Ok(None) => {}
            Err(e) => tracing::warn!(container = %c.address, error = %e, "no health detail"),
        }
    }
    details
}
