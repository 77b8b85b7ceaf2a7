//! Machines as EC2 instances: launch, list, retag, terminate.

use std::collections::BTreeMap;

use aws_sdk_ec2::types::{Filter, Instance, InstanceStateName, InstanceType, ResourceType, Tag};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use peerfleet_core::ProviderKind;
use peerfleet_core::bootstrap::{self, EC2_USER_DATA_LIMIT};
use peerfleet_core::provider::{CreateContext, ErrorKind, ProviderError};
use peerfleet_core::resource::{Machine, MachineSpec, MachineStatus};

use crate::client::{AwsProvider, Ec2, invalid};
use crate::error::classify;
use crate::tags::{self, MachineTags};

/// The most `ClientToken` may hold (EC2's limit).
pub const CLIENT_TOKEN_MAX: usize = 64;

/// Every state but `terminated`: a shutting-down instance is still reported, so a plan sees it going.
const LIVE_STATES: [&str; 5] = ["pending", "running", "stopping", "stopped", "shutting-down"];

fn live_filter() -> Filter {
    Filter::builder()
        .name("instance-state-name")
        .set_values(Some(LIVE_STATES.map(String::from).to_vec()))
        .build()
}

/// The machine an instance is, when it carries a machine address tag.
fn machine_from(instance: &Instance, region: &str) -> Option<Machine> {
    let read = tags::read_machine(&tags::to_map(instance.tags()))?;
    machine_with(instance, region, read)
}

fn machine_with(instance: &Instance, region: &str, read: MachineTags) -> Option<Machine> {
    let status = match instance.state().and_then(|s| s.name()) {
        Some(InstanceStateName::Pending) | None => MachineStatus::Pending,
        Some(InstanceStateName::Running) => MachineStatus::Running,
        Some(InstanceStateName::Stopping | InstanceStateName::Stopped) => MachineStatus::Stopped,
        Some(_) => MachineStatus::ShuttingDown,
    };
    Some(Machine {
        id: instance.instance_id()?.to_string(),
        address: read.address,
        provider: ProviderKind::Aws,
        region: region.to_string(),
        size: instance.instance_type().map(|t| t.as_str().to_string()).unwrap_or_default(),
        image: instance.image_id().unwrap_or_default().to_string(),
        tags: read.deploy,
        chain_id: read.chain_id,
        generation: read.generation,
        bootstrap: read.bootstrap,
        status,
        public_ip: instance.public_ip_address().map(str::to_string),
        private_ip: instance.private_ip_address().map(str::to_string),
    })
}

/// The network's live machines in one region: one paginated `DescribeInstances`.
pub(crate) async fn list(ec2: &Ec2, network: &str) -> Result<Vec<Machine>, ProviderError> {
    describe(ec2, vec![tags::tag_filter(tags::NETWORK, network), live_filter()]).await
}

async fn describe(ec2: &Ec2, filters: Vec<Filter>) -> Result<Vec<Machine>, ProviderError> {
    // 1000 is the largest page EC2 allows; a region's machines of one network fit in one page.
    let mut pages =
        ec2.client.describe_instances().set_filters(Some(filters)).max_results(1000).into_paginator().send();
    let mut machines = Vec::new();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| classify("DescribeInstances", &ec2.target, e))?;
        for instance in page.reservations().iter().flat_map(|r| r.instances()) {
            match machine_from(instance, &ec2.target.region) {
                Some(m) => machines.push(m),
                None => tracing::warn!(
                    instance = instance.instance_id().unwrap_or("?"),
                    "instance tagged for the network has no machine address tag; left alone"
                ),
            }
        }
    }
    Ok(machines)
}

/// One instance by ID; `None` while EC2 answers `InvalidInstanceID.NotFound`.
async fn describe_one(ec2: &Ec2, id: &str) -> Result<Option<Instance>, ProviderError> {
    match ec2.client.describe_instances().instance_ids(id).send().await {
        Ok(out) => Ok(out.reservations().iter().flat_map(|r| r.instances()).next().cloned()),
        Err(e) => {
            let e = classify("DescribeInstances", &ec2.target, e);
            if e.kind == ErrorKind::NotFound { Ok(None) } else { Err(e) }
        }
    }
}

/// The error for a machine EC2 does not know (past the visibility wait).
fn gone(machine: &Machine) -> ProviderError {
    ProviderError::new(
        ErrorKind::NotFound,
        crate::error::PROVIDER,
        format!("{} ({}) does not exist in {}", machine.address, machine.id, machine.region),
    )
}

/// Checks the idempotency key fits EC2's `ClientToken`: 1..=64 printable ASCII characters.
pub(crate) fn check_client_token(key: &str) -> Result<(), ProviderError> {
    if key.is_empty() || key.len() > CLIENT_TOKEN_MAX || !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(invalid(format!(
            "idempotency key `{}` cannot be an EC2 ClientToken (1 to {CLIENT_TOKEN_MAX} printable ASCII characters)",
            key.escape_default()
        )));
    }
    Ok(())
}

impl AwsProvider {
    pub(crate) async fn create_instance(
        &self,
        spec: &MachineSpec,
        ctx: &CreateContext,
    ) -> Result<Machine, ProviderError> {
        if spec.provider != ProviderKind::Aws {
            return Err(invalid(format!("{} is a {} machine, not an AWS one", spec.address, spec.provider)));
        }
        check_client_token(&spec.idempotency_key)?;
        let launch_tags = tags::machine_tags(spec);
        let known = tags::read_machine(&launch_tags)
            .ok_or_else(|| invalid(format!("{} is not a machine address", spec.address)))?;
        let region = spec.region.slug.as_str();
        let profile = spec.profile.clone().or_else(|| self.settings.profile_for(region).map(str::to_string));
        let ec2 = self.ec2_as(region, profile).await;

        let group = match (&spec.firewall, &ctx.firewall) {
            (_, Some(firewall)) => Some(firewall.id.clone()),
            (Some(address), None) => {
                return Err(invalid(format!("{}: its firewall {address} must exist first", spec.address)));
            }
            (None, None) => None,
        };
        let pki = ctx.pki.as_ref().ok_or_else(|| {
            invalid(format!("{}: the network's PKI is needed to bootstrap the engine's TLS", spec.address))
        })?;
        let image = match &spec.image {
            Some(image) => image.clone(),
            None => self.default_image(&ec2).await?,
        };

        // The server certificate names the machine by its derived DNS name; its IP is not known yet.
        let tls = pki.issue_server(&spec.address, &[])?;
        let user_data = bootstrap::cloud_init(&tls, &self.settings.bootstrap);
        bootstrap::check_size(&user_data, EC2_USER_DATA_LIMIT)
            .map_err(|e| invalid(format!("{}: {e}", spec.address)))?;

        let request = ec2
            .client
            .run_instances()
            .image_id(&image)
            .instance_type(InstanceType::from(spec.size.as_str()))
            .min_count(1)
            .max_count(1)
            .client_token(&spec.idempotency_key)
            .user_data(BASE64.encode(user_data.as_bytes()))
            .set_security_group_ids(group.map(|g| vec![g]))
            .set_tag_specifications(Some(tags::specifications(
                &[ResourceType::Instance, ResourceType::Volume],
                &launch_tags,
            )));
        match request.send().await {
            Ok(out) => {
                let instance = out.instances().first().ok_or_else(|| {
                    ProviderError::new(
                        ErrorKind::Transient,
                        crate::error::PROVIDER,
                        "RunInstances returned no instance",
                    )
                })?;
                machine_with(instance, region, known).ok_or_else(|| {
                    ProviderError::new(
                        ErrorKind::Transient,
                        crate::error::PROVIDER,
                        "RunInstances returned no instance ID",
                    )
                })
            }
            Err(e) => {
                let code = e
                    .as_service_error()
                    .and_then(|s| aws_sdk_ec2::error::ProvideErrorMetadata::code(s))
                    .map(str::to_string);
                let err = classify("RunInstances", &ec2.target, e);
                match (code.as_deref(), &err.kind) {
                    // The token was used before with other parameters: after a crash the TLS material
                    // in the user data is fresh. The instance the first request launched is the answer.
                    (Some("IdempotentParameterMismatch"), _) => match self.find_launched(&ec2, spec).await? {
                        Some(machine) => Ok(machine),
                        None => Err(err),
                    },
                    // A missing image or group is a wrong spec here, not an absent object.
                    (_, ErrorKind::NotFound) => Err(ProviderError { kind: ErrorKind::Invalid, ..err }),
                    _ => Err(err),
                }
            }
        }
    }

    /// The live instance launched for exactly this spec (network, address, generation), if any.
    async fn find_launched(&self, ec2: &Ec2, spec: &MachineSpec) -> Result<Option<Machine>, ProviderError> {
        // Matched here rather than by filter: filter values are patterns, and addresses contain `[`.
        let live = list(ec2, &spec.network).await?;
        Ok(live.into_iter().find(|m| m.address == spec.address && m.generation == spec.generation))
    }

    pub(crate) async fn update_instance(
        &self,
        current: &Machine,
        spec: &MachineSpec,
    ) -> Result<Machine, ProviderError> {
        let replace_only = [
            ("size", current.size != spec.size),
            ("image", spec.image.as_ref().is_some_and(|i| *i != current.image)),
            ("generation", current.generation != spec.generation),
            ("bootstrap", current.bootstrap != spec.bootstrap),
            ("chain ID", current.chain_id != spec.chain_id),
            ("region", current.region != spec.region.slug),
        ];
        if let Some((field, _)) = replace_only.iter().find(|(_, changed)| *changed) {
            return Err(invalid(format!(
                "{}: a change of {field} replaces an EC2 machine, it cannot be updated in place",
                current.address
            )));
        }
        let ec2 = self.ec2(&current.region).await;
        let deploy = |keys: Vec<&String>| -> Vec<Tag> {
            let map: BTreeMap<String, String> =
                keys.into_iter().map(|k| (k.clone(), tags::DEPLOY_TAG_VALUE.to_string())).collect();
            tags::to_tags(&map)
        };
        let add = deploy(spec.tags.difference(&current.tags).collect());
        let remove = deploy(current.tags.difference(&spec.tags).collect());
        if !add.is_empty() {
            self.while_invisible(
                &current.id,
                || ec2.client.create_tags().resources(&current.id).set_tags(Some(add.clone())).send(),
                &ec2,
                "CreateTags",
            )
            .await?
            .ok_or_else(|| gone(current))?;
        }
        if !remove.is_empty() {
            // With the (empty) value given, EC2 deletes the tag only if its value is still empty: a
            // same-named tag someone set a value on by hand is not a deploy tag and stays.
            self.while_invisible(
                &current.id,
                || ec2.client.delete_tags().resources(&current.id).set_tags(Some(remove.clone())).send(),
                &ec2,
                "DeleteTags",
            )
            .await?
            .ok_or_else(|| gone(current))?;
        }
        Ok(Machine { tags: spec.tags.clone(), ..current.clone() })
    }

    /// Runs `call` on an instance, treating `InvalidInstanceID.NotFound` as "not visible yet" until
    /// the visibility bound; returns `None` when it was still not found then.
    async fn while_invisible<T, E, F, Fut>(
        &self,
        id: &str,
        mut call: F,
        ec2: &Ec2,
        op: &str,
    ) -> Result<Option<T>, ProviderError>
    where
        F: FnMut() -> Fut,
        Fut: Future<
            Output = Result<T, aws_sdk_ec2::error::SdkError<E, aws_sdk_ec2::config::http::HttpResponse>>,
        >,
        E: aws_sdk_ec2::error::ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let mut backoff = self.settings.waits.poll(self.settings.waits.visibility);
        loop {
            match call().await {
                Ok(out) => return Ok(Some(out)),
                Err(e) => {
                    let e = classify(op, &ec2.target, e);
                    if e.kind != ErrorKind::NotFound {
                        return Err(e);
                    }
                    if !backoff.wait().await {
                        tracing::debug!(
                            instance = id,
                            op,
                            "instance still not found at the visibility bound"
                        );
                        return Ok(None);
                    }
                }
            }
        }
    }

    pub(crate) async fn terminate_instance(&self, current: &Machine) -> Result<(), ProviderError> {
        let ec2 = self.ec2(&current.region).await;
        let terminated = self
            .while_invisible(
                &current.id,
                || ec2.client.terminate_instances().instance_ids(&current.id).send(),
                &ec2,
                "TerminateInstances",
            )
            .await?;
        if terminated.is_none() {
            // Never visible within the bound: it is long gone (terminated instances stay listed for
            // about an hour, so "not found" after the bound means older than that).
            return Ok(());
        }
        let mut backoff = self.settings.waits.poll(self.settings.waits.terminated);
        loop {
            match describe_one(&ec2, &current.id).await? {
                None => return Ok(()),
                Some(i) if i.state().and_then(|s| s.name()) == Some(&InstanceStateName::Terminated) => {
                    return Ok(());
                }
                Some(_) => {}
            }
            if !backoff.wait().await {
                return Err(ProviderError::new(
                    ErrorKind::Transient,
                    crate::error::PROVIDER,
                    format!(
                        "{} ({}) in {} was still not terminated after {:?}",
                        current.address, current.id, current.region, self.settings.waits.terminated
                    ),
                ));
            }
        }
    }

    /// Waits until the instance is `running` (Elastic IPs can only be associated then).
    pub(crate) async fn wait_running(&self, ec2: &Ec2, machine: &Machine) -> Result<(), ProviderError> {
        if machine.status == MachineStatus::Running {
            return Ok(());
        }
        let waits = &self.settings.waits;
        let mut backoff = waits.poll(waits.running);
        loop {
            if let Some(instance) = describe_one(ec2, &machine.id).await? {
                match instance.state().and_then(|s| s.name()) {
                    Some(InstanceStateName::Running) => return Ok(()),
                    Some(InstanceStateName::Pending) | None => {}
                    Some(other) => {
                        return Err(ProviderError::new(
                            ErrorKind::Conflict,
                            crate::error::PROVIDER,
                            format!(
                                "{} ({}) is {} instead of starting",
                                machine.address,
                                machine.id,
                                other.as_str()
                            ),
                        ));
                    }
                }
            }
            if !backoff.wait().await {
                return Err(ProviderError::new(
                    ErrorKind::Transient,
                    crate::error::PROVIDER,
                    format!("{} ({}) was not running after {:?}", machine.address, machine.id, waits.running),
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use peerfleet_core::Address;

    #[test]
    fn client_tokens_are_one_to_64_printable_ascii() {
        assert!(check_client_token(&"a".repeat(64)).is_ok());
        assert!(check_client_token("net-machine.virginia[0]-g1-3fa1").is_ok());
        for bad in [String::new(), "a".repeat(65), "with space".into(), "ümlaut".into()] {
            let err = check_client_token(&bad).err().map(|e| e.kind);
            assert_eq!(err, Some(ErrorKind::Invalid), "{bad:?}");
        }
    }

    #[test]
    fn instance_states_map_to_machine_status() {
        let spec = tags::machine_tags(&peerfleet_core_spec());
        for (state, status) in [
            (InstanceStateName::Pending, MachineStatus::Pending),
            (InstanceStateName::Running, MachineStatus::Running),
            (InstanceStateName::Stopped, MachineStatus::Stopped),
            (InstanceStateName::ShuttingDown, MachineStatus::ShuttingDown),
        ] {
            let instance = Instance::builder()
                .instance_id("i-1")
                .instance_type(InstanceType::T3Small)
                .image_id("ami-1")
                .state(aws_sdk_ec2::types::InstanceState::builder().name(state).build())
                .set_tags(Some(tags::to_tags(&spec)))
                .public_ip_address("54.0.0.1")
                .build();
            let m = machine_from(&instance, "us-east-1").map(|m| (m.status, m.size, m.image, m.generation));
            assert_eq!(m, Some((status, "t3.small".to_string(), "ami-1".to_string(), 2)));
        }
    }

    fn peerfleet_core_spec() -> MachineSpec {
        MachineSpec {
            address: Address::machine("oregon", 1),
            network: "n".into(),
            provider: ProviderKind::Aws,
            region: peerfleet_core::network::Region { slug: "us-west-2".into(), city: None },
            size: "t3.small".into(),
            image: None,
            tags: ["peer_cluster".to_string()].into(),
            profile: None,
            bootstrap: 1,
            chain_id: None,
            generation: 2,
            idempotency_key: "k".into(),
            firewall: None,
        }
    }
}
