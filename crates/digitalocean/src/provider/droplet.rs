//! Droplets: create (through the batch), update (tags, resize) and the cloud-init they boot with.

use std::sync::Arc;

use peerfleet_core::bootstrap::{self, DIGITALOCEAN_USER_DATA_LIMIT};
use peerfleet_core::provider::{CreateContext, ProviderError};
use peerfleet_core::resource::{Machine, MachineSpec};
use reqwest::Method;
use serde_json::{Value, json};

use super::batch::CreateRequest;
use super::{Inner, check_provider, parse_id, transient};
use crate::client::Retry;
use crate::error::invalid;
use crate::model;
use crate::ownership::{self, machine_of};
use crate::settings::Settings;

impl Inner {
    /// Looks up the network's droplets for one of this name and generation right before creating
    /// (adopting it if a crashed run made it), then creates, sharing the look-up and, when bodies are
    /// equal, the request with concurrent creates; returns once the droplet is `active`.
    pub(super) async fn create_machine(
        self: &Arc<Self>,
        spec: &MachineSpec,
        ctx: &CreateContext,
    ) -> Result<Machine, ProviderError> {
        check_provider(spec.provider, &spec.address)?;
        let name = ownership::droplet_name(&spec.network, &spec.address)?;
        let tags = ownership::machine_tags(spec)?;
        let image = spec.image.clone().unwrap_or_else(|| self.settings.default_image.clone());
        // An image given by numeric ID is sent as a number, as DigitalOcean expects.
        let image = match image.parse::<u64>() {
            Ok(id) => Value::from(id),
            Err(_) => Value::String(image),
        };
        let user_data = user_data(spec, ctx, &self.settings)?;
        let body = json!({
            "region": spec.region.slug,
            "size": spec.size,
            "image": image,
            "tags": tags,
            "user_data": user_data,
        });
        let request = CreateRequest {
            name,
            region: spec.region.slug.clone(),
            generation_tag: ownership::generation_tag(spec.generation),
            body,
        };
        let droplet = self.create_droplet(&spec.network, request).await?;
        // Only a booting droplet is waited for; an adopted one that was powered off is reported as
        // it is (`Stopped`), for the plan to show.
        let droplet = if droplet.status == "new" {
            self.wait_active(&spec.network, droplet.id).await?
        } else {
            droplet
        };
        machine_of(&spec.network, &droplet).ok_or_else(|| {
            transient(format!("droplet {} does not carry {}'s ownership", droplet.id, spec.address))
        })
    }

    /// Adds and removes deploy, chain and firewall tags; resizes (off, resize CPU/memory, on).
    pub(super) async fn update_machine(
        self: &Arc<Self>,
        current: &Machine,
        spec: &MachineSpec,
    ) -> Result<Machine, ProviderError> {
        check_provider(spec.provider, &spec.address)?;
        let id = parse_id("machine", &current.id)?;
        let inner = self;
        let droplet = inner.get_droplet(id).await?;
        // Only tags peerfleet wrote are ever removed: one added by hand is in neither set.
        let want = ownership::managed_tags(&ownership::machine_tags(spec)?);
        let have = ownership::managed_tags(&droplet.tags);
        let changes = async {
            for tag in want.difference(&have) {
                inner.ensure_tag(tag).await?;
                inner.tag_droplet(tag, id, true).await?;
            }
            for tag in have.difference(&want) {
                inner.tag_droplet(tag, id, false).await?;
            }
            if droplet.size_slug != spec.size {
                inner.resize(id, &spec.size).await?;
            }
            Ok::<(), ProviderError>(())
        };
        let result = changes.await;
        // Whatever part of it happened, listings from before are stale now.
        inner.touch();
        result?;
        let droplet = inner.get_droplet(id).await?;
        machine_of(&spec.network, &droplet)
            .ok_or_else(|| transient(format!("droplet {id} lost {}'s ownership", spec.address)))
    }

    /// Starts a droplet action and waits for it.
    async fn droplet_action(&self, id: u64, body: Value) -> Result<(), ProviderError> {
        let answer = self
            .call(Method::POST, &format!("/v2/droplets/{id}/actions"), Some(&body), Retry::Unsafe)
            .await?;
        let action: model::Action =
            serde_json::from_value(answer.body.get("action").cloned().unwrap_or(Value::Null))
                .map_err(|e| transient(format!("droplet {id}: unexpected action: {e}")))?;
        self.wait_action(action.id).await
    }

    /// Brings droplet `id` to `size` (off, resize, on), from whatever state a crash left it in.
    async fn resize(self: &Arc<Self>, id: u64, size: &str) -> Result<(), ProviderError> {
        // Each step moves the droplet one state further; 8 is more than the longest path. A locked
        // or moving droplet is polled again, within the time an action may take.
        let mut polls = self.settings.poll.polls(self.settings.poll.action_timeout);
        for _ in 0..8 {
            let d = self.get_droplet(id).await?;
            if d.locked {
                if !polls.wait().await {
                    break;
                }
                continue;
            }
            match (d.size_slug == size, d.status.as_str()) {
                (true, "off") => self.droplet_action(id, json!({ "type": "power_on" })).await?,
                (true, _) => return Ok(()),
                (false, "active") => self.droplet_action(id, json!({ "type": "power_off" })).await?,
                // `disk: false` resizes CPU and memory only, which keeps the change reversible.
                (false, "off") => {
                    self.droplet_action(id, json!({ "type": "resize", "size": size, "disk": false })).await?;
                }
                (false, _) => {
                    if !polls.wait().await {
                        break;
                    }
                }
            }
        }
        Err(transient(format!("droplet {id}: resize to {size} did not settle")))
    }
}

/// The machine's cloud-init user data: the shared bootstrap (Docker with its API behind mutual TLS),
/// with a server certificate issued for this machine.
///
/// Each machine gets its own server key, so machines' user data differ and each is created by its
/// own request; see the crate documentation for why that is preferred over a shared key.
fn user_data(spec: &MachineSpec, ctx: &CreateContext, settings: &Settings) -> Result<String, ProviderError> {
    let pki = ctx.pki.as_ref().ok_or_else(|| {
        invalid(format!("{}: the network's PKI is needed to bootstrap the engine's TLS", spec.address))
    })?;
    // The IP is not known before the create; the certificate names the machine by its address.
    let tls = pki.issue_server(&spec.address, &[])?;
    let user_data = bootstrap::cloud_init(&tls, &settings.bootstrap);
    bootstrap::check_size(&user_data, DIGITALOCEAN_USER_DATA_LIMIT)
        .map_err(|e| invalid(format!("{}: {e}", spec.address)))?;
    Ok(user_data)
}
