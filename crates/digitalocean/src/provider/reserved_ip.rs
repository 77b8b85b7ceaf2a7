//! Reserved IPs: the stable addresses of the genesis and master hosts. They carry no tags on
//! DigitalOcean; they are owned through the droplet they are assigned to. When that droplet is
//! deleted (a replace) they are assigned to nothing until the new droplet takes them: a crash in that
//! window is recovered by [`Inner::find_stable_ip`], which refresh calls with what state remembers.

use std::sync::Arc;

use futures::FutureExt as _;
use peerfleet_core::network::ProviderKind;
use peerfleet_core::provider::ProviderError;
use peerfleet_core::resource::{Machine, MachineStatus, StableIp, StableIpSpec};
use reqwest::Method;
use serde_json::{Value, json};

use super::{Inner, check_provider, parse_id, transient};
use crate::client::Retry;
use crate::model::ReservedIp;

impl Inner {
    /// Adopts the reserved IP already assigned to the machine, else reserves one assigned to it
    /// (once the droplet is `active`, which DigitalOcean requires).
    pub(super) async fn create_stable_ip(
        self: &Arc<Self>,
        spec: &StableIpSpec,
        machine: &Machine,
    ) -> Result<StableIp, ProviderError> {
        check_provider(spec.provider, &spec.address)?;
        let inner = self;
        let id = parse_id("machine", &machine.id)?;
        if machine.status != MachineStatus::Running {
            inner.wait_active(&spec.network, id).await?;
        }
        let stable = &|ip: &str| StableIp {
            id: ip.to_string(),
            address: spec.address.clone(),
            ip: ip.to_string(),
            machine_id: Some(machine.id.clone()),
            provider: Some(ProviderKind::DigitalOcean),
        };
        inner
            .find_or_create(
                "reserved IP",
                move |not_before| {
                    async move {
                        let existing = inner.reserved_ips(not_before).await?;
                        Ok(existing.iter().find(|r| r.droplet_id() == Some(id)).map(|r| stable(&r.ip)))
                    }
                    .boxed()
                },
                move || {
                    async move {
                        let answer = inner
                            .call(
                                Method::POST,
                                "/v2/reserved_ips",
                                Some(&json!({ "droplet_id": id })),
                                Retry::Caller,
                            )
                            .await?;
                        let ip = answer
                            .body
                            .pointer("/reserved_ip/ip")
                            .and_then(Value::as_str)
                            .unwrap_or_default();
                        if ip.is_empty() {
                            return Err(transient("POST /v2/reserved_ips: the answer has no IP"));
                        }
                        if let Some(action) =
                            answer.body.pointer("/links/actions/0/id").and_then(Value::as_u64)
                        {
                            inner.wait_action(action).await?;
                        }
                        Ok(stable(ip))
                    }
                    .boxed()
                },
            )
            .await
    }

    pub(super) async fn attach_stable_ip(
        self: &Arc<Self>,
        current: &StableIp,
        machine: &Machine,
    ) -> Result<StableIp, ProviderError> {
        let inner = self;
        let id = parse_id("machine", &machine.id)?;
        let attached = StableIp { machine_id: Some(machine.id.clone()), ..current.clone() };
        let path = format!("/v2/reserved_ips/{}", current.ip);
        let answer = inner.call(Method::GET, &path, None, Retry::Safe).await?;
        let reserved: ReservedIp =
            serde_json::from_value(answer.body.get("reserved_ip").cloned().unwrap_or(Value::Null))
                .map_err(|e| transient(format!("GET {path}: unexpected reserved IP: {e}")))?;
        if reserved.droplet_id() == Some(id) {
            return Ok(attached);
        }
        if machine.status != MachineStatus::Running {
            inner.wait_droplet_active(id).await?;
        }
        let result = inner
            .call(
                Method::POST,
                &format!("{path}/actions"),
                Some(&json!({ "type": "assign", "droplet_id": id })),
                Retry::Unsafe,
            )
            .await;
        inner.touch();
        let answer = result?;
        if let Some(action) = answer.body.pointer("/action/id").and_then(Value::as_u64) {
            inner.wait_action(action).await?;
        }
        Ok(attached)
    }

    /// The reserved IP state remembers, while it exists and is assigned to nothing (a crash between
    /// deleting its droplet and assigning it to the replacement): see
    /// [`peerfleet_core::provider::MachineProvider::find_stable_ip`].
    pub(super) async fn find_stable_ip(
        self: &Arc<Self>,
        remembered: &StableIp,
    ) -> Result<Option<StableIp>, ProviderError> {
        let path = format!("/v2/reserved_ips/{}", remembered.ip);
        let answer = match self.call(Method::GET, &path, None, Retry::Safe).await {
            Ok(a) => a,
            Err(e) if e.is_not_found() => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let reserved: ReservedIp =
            serde_json::from_value(answer.body.get("reserved_ip").cloned().unwrap_or(Value::Null))
                .map_err(|e| transient(format!("GET {path}: unexpected reserved IP: {e}")))?;
        if reserved.droplet_id().is_some() {
            // Assigned to a droplet the inventory did not show as the network's: someone else's now.
            return Ok(None);
        }
        Ok(Some(StableIp {
            id: reserved.ip.clone(),
            address: remembered.address.clone(),
            ip: reserved.ip,
            machine_id: None,
            provider: Some(ProviderKind::DigitalOcean),
        }))
    }

    pub(super) async fn delete_stable_ip(self: &Arc<Self>, current: &StableIp) -> Result<(), ProviderError> {
        let inner = self;
        let path = format!("/v2/reserved_ips/{}", current.ip);
        let answer = match inner.call(Method::GET, &path, None, Retry::Safe).await {
            Ok(a) => a,
            Err(e) if e.is_not_found() => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        let assigned = answer.body.pointer("/reserved_ip/droplet/id").is_some_and(|v| !v.is_null());
        if assigned {
            let result = inner
                .call(
                    Method::POST,
                    &format!("{path}/actions"),
                    Some(&json!({ "type": "unassign" })),
                    Retry::Unsafe,
                )
                .await;
            inner.touch();
            if let Some(action) = result?.body.pointer("/action/id").and_then(Value::as_u64) {
                inner.wait_action(action).await?;
            }
        }
        inner.delete(&path).await
    }
}
