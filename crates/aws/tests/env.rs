//! `AwsProvider::from_env` as the CLI uses it: endpoint and credentials from the environment only.
//!
//! The environment is process-wide, so the check runs in a child process (this test binary again,
//! running only [`child_creates_a_group_through_aws_endpoint_url`]) with its own environment; the
//! other tests never see those variables.

use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context as _, bail, ensure};
use aws_sdk_ec2::types::Filter;
use peerfleet_aws::testing;
use peerfleet_aws::{AwsProvider, group_name};
use peerfleet_core::provider::MachineProvider;

use crate::support::{Harness, bounded};

const CHILD_FLAG: &str = "PEERFLEET_AWS_ENV_CHILD";
const CHILD_TEST: &str = "env::child_creates_a_group_through_aws_endpoint_url";
const NETWORK: &str = "envnet";
const REGION: &str = "ap-southeast-2";

#[tokio::test]
async fn from_env_follows_aws_endpoint_url_and_the_credentials_chain() -> anyhow::Result<()> {
    bounded(async {
        let Some(h) = Harness::start("from_env_follows_aws_endpoint_url").await? else { return Ok(()) };
        let scratch = tempfile::tempdir()?;
        let empty = scratch.path().join("empty");
        std::fs::write(&empty, "")?;
        let mut child = tokio::process::Command::new(std::env::current_exe()?);
        child
            .args([CHILD_TEST, "--exact", "--ignored", "--nocapture"])
            .env(CHILD_FLAG, "1")
            .env("AWS_ENDPOINT_URL", h.moto.endpoint())
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            // Only the environment counts: no profile files, no instance metadata.
            .env("AWS_CONFIG_FILE", &empty)
            .env("AWS_SHARED_CREDENTIALS_FILE", &empty)
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env_remove("AWS_PROFILE")
            .env_remove("AWS_SESSION_TOKEN")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let out =
            tokio::time::timeout(Duration::from_secs(90), child.output()).await.context("child hung")??;
        let text =
            format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        ensure!(out.status.success() && text.contains("1 passed"), "child failed:\n{text}");

        // The group the child made is in moto, found by its name.
        let groups = h
            .inspect(REGION)
            .describe_security_groups()
            .filters(Filter::builder().name("group-name").values(group_name(NETWORK)).build())
            .send()
            .await?;
        ensure!(groups.security_groups().len() == 1, "{groups:?}");
        Ok(())
    })
    .await
}

#[tokio::test]
#[ignore = "run by from_env_follows_aws_endpoint_url_and_the_credentials_chain in a child process"]
async fn child_creates_a_group_through_aws_endpoint_url() -> anyhow::Result<()> {
    // Guard: never talk to anything but a loopback stand-in, whoever runs this.
    let endpoint = std::env::var("AWS_ENDPOINT_URL").unwrap_or_default();
    if std::env::var_os(CHILD_FLAG).is_none() || !endpoint.starts_with("http://127.0.0.1:") {
        bail!("only run by its parent test, against a loopback AWS_ENDPOINT_URL");
    }
    let provider = AwsProvider::from_env(None);
    let firewall = testing::firewall_spec(NETWORK, REGION, &["198.51.100.0/24"]);
    provider.create_firewall(&firewall).await?;
    let inv = provider.inventory(NETWORK, REGION).await?;
    ensure!(inv.firewalls.len() == 1);
    Ok(())
}
