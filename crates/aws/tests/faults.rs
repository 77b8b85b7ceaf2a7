//! What moto cannot show, shown through the fault proxy: client tokens, throttling and retries, error
//! classification, eventual consistency right after a launch.

use anyhow::{Context as _, ensure};
use aws_credential_types::provider::error::CredentialsError;
use aws_credential_types::provider::{ProvideCredentials, future};
use aws_sdk_ec2::config::SharedCredentialsProvider;
use aws_sdk_ec2::types::InstanceStateName;
use peerfleet_aws::AwsProvider;
use peerfleet_aws::testing::{self, Fault};
use peerfleet_core::plan::idempotency_key;
use peerfleet_core::provider::{ErrorKind, MachineProvider};

use crate::support::{Harness, bounded};

const REGION: &str = "us-west-2";

#[tokio::test]
async fn the_same_spec_sends_the_same_client_token_and_launches_once() -> anyhow::Result<()> {
    bounded(async {
        let Some(h) = Harness::start("the_same_spec_sends_the_same_client_token").await? else {
            return Ok(());
        };
        // EC2's semantics, which moto lacks: a token it has seen returns the first launch.
        h.proxy.honour_client_tokens(true);
        let fw = h.provider.create_firewall(&h.firewall(REGION)).await?;
        let spec = h.machine("oregon", 0, REGION);
        let first = h.provider.create_machine(&spec, &h.ctx(&fw)).await?;
        // A second run of the same plan step (a crash before the state was saved).
        let again = h.provider.create_machine(&spec.clone(), &h.ctx(&fw)).await?;

        let runs = h.proxy.requests_of("RunInstances");
        let tokens: Vec<_> = runs.iter().map(|r| r.client_token().map(str::to_string)).collect();
        ensure!(tokens.len() == 2 && tokens[0].is_some() && tokens[0] == tokens[1], "{tokens:?}");
        ensure!(tokens[0].as_deref() == Some(spec.idempotency_key.as_str()));
        ensure!(runs[1].answered_by_proxy, "the repeat was answered as EC2 would, not launched");
        ensure!(first.id == again.id, "{} vs {}", first.id, again.id);
        ensure!(h.provider.inventory(&h.network, REGION).await?.machines.len() == 1);

        // A replacement (next generation) gets a new token, so it is a new machine.
        let mut next = spec.clone();
        next.generation = 1;
        next.idempotency_key = idempotency_key(&h.network, &next.address, 1);
        let replacement = h.provider.create_machine(&next, &h.ctx(&fw)).await?;
        ensure!(replacement.id != first.id && replacement.generation == 1);
        let last = h.proxy.requests_of("RunInstances").pop().context("no request")?;
        ensure!(last.client_token() != tokens[0].as_deref());
        Ok(())
    })
    .await
}

#[tokio::test]
async fn throttled_launches_are_retried_with_the_same_token() -> anyhow::Result<()> {
    bounded(async {
        let Some(h) = Harness::start("throttled_launches_are_retried").await? else { return Ok(()) };
        let fw = h.provider.create_firewall(&h.firewall(REGION)).await?;
        h.proxy.fail("RunInstances", 2, Fault::Throttle);
        let m = h.provider.create_machine(&h.machine("oregon", 0, REGION), &h.ctx(&fw)).await?;

        let runs = h.proxy.requests_of("RunInstances");
        let statuses: Vec<u16> = runs.iter().map(|r| r.status).collect();
        ensure!(statuses == [503, 503, 200], "{statuses:?}");
        let token = runs[0].client_token();
        ensure!(
            token.is_some() && runs.iter().all(|r| r.client_token() == token),
            "one token for all attempts"
        );
        let inv = h.provider.inventory(&h.network, REGION).await?;
        ensure!(inv.machines.len() == 1 && inv.machines[0].id == m.id);
        Ok(())
    })
    .await
}

#[tokio::test]
async fn throttling_past_the_retry_budget_is_classified_throttled_with_the_request_id() -> anyhow::Result<()>
{
    bounded(async {
        let Some(h) = Harness::start("throttling_past_the_retry_budget").await? else { return Ok(()) };
        h.proxy.fail("DescribeInstances", 10, Fault::Throttle);
        let err = h.provider.inventory(&h.network, REGION).await.err().context("not throttled")?;
        ensure!(matches!(err.kind, ErrorKind::Throttled { .. }) && err.is_retryable(), "{err:?}");
        ensure!(err.message.contains("RequestLimitExceeded") && err.message.contains(REGION), "{err}");
        // Three attempts (the test settings' budget), then the error with the last request's ID.
        ensure!(h.proxy.count("DescribeInstances") == 3, "{}", h.proxy.count("DescribeInstances"));
        ensure!(err.request_id.as_deref().is_some_and(|id| id.starts_with("peerfleet-fault-")), "{err:?}");
        Ok(())
    })
    .await
}

#[tokio::test]
async fn auth_failures_name_the_partition_and_profile() -> anyhow::Result<()> {
    bounded(async {
        let Some(h) = Harness::start("auth_failures_name_the_partition").await? else { return Ok(()) };
        h.proxy.fail("DescribeInstances", 1, Fault::Error { status: 401, code: "AuthFailure".into() });
        let err = h.provider.inventory(&h.network, "cn-north-1").await.err().context("authorized")?;
        ensure!(err.kind == ErrorKind::Unauthorized && !err.is_retryable(), "{err:?}");
        ensure!(err.message.contains("aws-cn") && err.message.contains("name a profile"), "{err}");
        ensure!(h.proxy.count("DescribeInstances") == 1, "auth failures are not retried");
        Ok(())
    })
    .await
}

/// A credentials chain that finds nothing, as the default chain does without the named profile.
#[derive(Debug)]
struct NoCredentials;

impl ProvideCredentials for NoCredentials {
    fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        future::ProvideCredentials::ready(Err(CredentialsError::not_loaded("profile `china` not found")))
    }
}

#[tokio::test]
async fn missing_credentials_name_the_profile_and_partition_without_sending() -> anyhow::Result<()> {
    bounded(async {
        let Some(h) = Harness::start("missing_credentials_name_the_profile").await? else { return Ok(()) };
        let mut settings = testing::settings(&h.proxy.endpoint());
        settings.credentials = Some(SharedCredentialsProvider::new(NoCredentials));
        settings.region_profiles.insert("cn-north-1".into(), "china".into());
        let provider = AwsProvider::new(settings);
        let err =
            provider.inventory(&h.network, "cn-north-1").await.err().context("no credentials, yet ok")?;
        ensure!(err.kind == ErrorKind::Unauthorized, "{err:?}");
        ensure!(err.message.contains("profile `china`") && err.message.contains("aws-cn"), "{err}");
        ensure!(h.proxy.requests().is_empty(), "nothing is sent unsigned: {:?}", h.proxy.requests());
        Ok(())
    })
    .await
}

#[tokio::test]
async fn a_reused_token_with_new_user_data_finds_the_first_launch() -> anyhow::Result<()> {
    bounded(async {
        let Some(h) = Harness::start("a_reused_token_with_new_user_data").await? else { return Ok(()) };
        let fw = h.provider.create_firewall(&h.firewall(REGION)).await?;
        let spec = h.machine("oregon", 0, REGION);
        let first = h.provider.create_machine(&spec, &h.ctx(&fw)).await?;
        // After a crash the retry carries fresh TLS material; EC2 refuses the token with other
        // parameters. The provider answers with the instance the token launched.
        h.proxy.fail(
            "RunInstances",
            1,
            Fault::Error { status: 400, code: "IdempotentParameterMismatch".into() },
        );
        let again = h.provider.create_machine(&spec, &h.ctx(&fw)).await?;
        ensure!(again.id == first.id, "{} vs {}", again.id, first.id);
        ensure!(h.provider.inventory(&h.network, REGION).await?.machines.len() == 1);
        Ok(())
    })
    .await
}

#[tokio::test]
async fn an_instance_not_visible_yet_is_waited_for_not_taken_as_gone() -> anyhow::Result<()> {
    bounded(async {
        let Some(h) = Harness::start("an_instance_not_visible_yet").await? else { return Ok(()) };
        let fw = h.provider.create_firewall(&h.firewall(REGION)).await?;
        let m = h.provider.create_machine(&h.machine("oregon", 0, REGION), &h.ctx(&fw)).await?;
        let not_yet = Fault::Error { status: 400, code: "InvalidInstanceID.NotFound".into() };

        // Right after the launch EC2 may not know the ID yet.
        h.proxy.fail("CreateTags", 2, not_yet.clone());
        let mut retagged = h.machine("oregon", 0, REGION);
        retagged.tags.insert("relay".into());
        h.provider.update_machine(&m, &retagged).await?;
        ensure!(h.proxy.count("CreateTags") == 3);

        // Never visible within the bound: the machine is gone, and the update says so.
        h.proxy.fail("CreateTags", 1000, not_yet.clone());
        let mut more = retagged.clone();
        more.tags.insert("extra".into());
        let err = h.provider.update_machine(&m, &more).await.err().context("updated a missing machine")?;
        ensure!(err.kind == ErrorKind::NotFound, "{err:?}");
        h.proxy.clear_faults();

        h.proxy.fail("TerminateInstances", 2, not_yet);
        h.provider.delete_machine(&m).await?;
        ensure!(h.proxy.count("TerminateInstances") == 3, "{}", h.proxy.count("TerminateInstances"));
        let out = h.inspect(REGION).describe_instances().instance_ids(&m.id).send().await?;
        let state = out
            .reservations()
            .iter()
            .flat_map(|r| r.instances())
            .next()
            .and_then(|i| i.state())
            .and_then(|s| s.name())
            .cloned();
        ensure!(state == Some(InstanceStateName::Terminated), "{state:?}");
        Ok(())
    })
    .await
}
