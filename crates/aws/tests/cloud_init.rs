//! The generated user data against cloud-init's own schema validator (Debian's `cloud-init` package,
//! unpacked by `scripts/setup-cloud-init.sh`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context as _, bail, ensure};
use peerfleet_core::Address;
use peerfleet_core::bootstrap::{self, BootstrapOptions, EC2_USER_DATA_LIMIT};
use peerfleet_core::provider::NodePki;

use crate::support::RecordingPki;

/// The validator: `PEERFLEET_CLOUD_INIT_SCHEMA`, else where the setup script puts it. Called as
/// `<validator> --config-file FILE`.
fn validator() -> PathBuf {
    match std::env::var_os("PEERFLEET_CLOUD_INIT_SCHEMA") {
        Some(p) => PathBuf::from(p),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.ci-cache/cloud-init/cloud-init-schema"),
    }
}

/// `Some(validator)`, or `None` after printing SKIPPED (an error under `CI=true`).
fn validator_or_skip(test: &str) -> anyhow::Result<Option<PathBuf>> {
    let path = validator();
    if path.exists() {
        return Ok(Some(path));
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        bail!("cloud-init's validator not found at {} (run scripts/setup-cloud-init.sh)", path.display());
    }
    eprintln!(
        "\n*** SKIPPED {test}: cloud-init's validator not found at {} (run scripts/setup-cloud-init.sh or set \
         PEERFLEET_CLOUD_INIT_SCHEMA) ***\n",
        path.display()
    );
    Ok(None)
}

/// Runs the validator on `text`; (success, output).
async fn validate(validator: &Path, text: &str) -> anyhow::Result<(bool, String)> {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("user-data.yaml");
    std::fs::write(&file, text)?;
    let mut command = tokio::process::Command::from(Command::new(validator));
    command.arg("--config-file").arg(&file).kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(60), command.output())
        .await
        .context("validator timed out")??;
    let mut output = String::from_utf8_lossy(&out.stdout).to_string();
    output.push_str(&String::from_utf8_lossy(&out.stderr));
    Ok((out.status.success(), output))
}

#[tokio::test]
async fn generated_user_data_passes_cloud_inits_schema_validator() -> anyhow::Result<()> {
    let Some(validator) = validator_or_skip("generated_user_data_passes_cloud_inits_schema_validator")?
    else {
        return Ok(());
    };
    let pki = RecordingPki::new("schemanet")?;
    let tls = pki.issue_server(&Address::machine("virginia", 0), &[])?;
    let user_data = bootstrap::cloud_init(&tls, &BootstrapOptions::default());
    let (ok, output) = validate(&validator, &user_data).await?;
    ensure!(ok && output.contains("Valid cloud-config"), "cloud-init rejected the user data:\n{output}");
    ensure!(!output.to_lowercase().contains("deprecat"), "deprecated keys used:\n{output}");

    // The validator really validates: a document with a wrong type and a missing path fails.
    let broken = "#cloud-config\npackages: docker.io\nwrite_files:\n  - content: x\n";
    let (ok, output) = validate(&validator, broken).await?;
    ensure!(!ok && output.contains("write_files"), "a broken document passed:\n{output}");
    Ok(())
}

#[test]
fn user_data_with_real_tls_material_fits_ec2s_limit() -> anyhow::Result<()> {
    let pki = RecordingPki::new("sizenet")?;
    let tls =
        pki.issue_server(&Address::machine("a-rather-long-cluster-name", 99), &["203.0.113.10".into()])?;
    let user_data = bootstrap::cloud_init(&tls, &BootstrapOptions::default());
    bootstrap::check_size(&user_data, EC2_USER_DATA_LIMIT)?;
    ensure!(user_data.len() < EC2_USER_DATA_LIMIT / 2, "{} bytes leaves little headroom", user_data.len());
    Ok(())
}
