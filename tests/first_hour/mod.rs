//! A person's first hour with the installed tool: it installs in one step, its logs are readable in a
//! file, it describes itself (version, completions, manual), and the errors one meets first say what
//! to do next in one line.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use peerfleet::aws::testing::Moto;

use crate::local::{engine_available, engine_missing};
use crate::support::{bounded, local_spec, parts, root, without_cloud_env};

/// How long one CLI run may take here (an apply on moto, a plan on the local engine).
const RUN: Duration = Duration::from_secs(120);

/// The CLI with no terminal, no inherited log, colour or cloud settings, plus `env`.
fn cli(dir: &Path, env: &[(&str, String)], args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_peerfleet"));
    cmd.args(args).current_dir(dir).stdin(std::process::Stdio::null());
    without_cloud_env(&mut cmd).env_remove("NO_COLOR");
    cmd.envs(env.iter().map(|(k, v)| (*k, v.as_str())));
    bounded(&mut cmd, RUN)
}

/// A one-region AWS network (Virginia) in a fresh directory, with credentials files holding
/// `credentials` (empty: none at all).
fn aws_network(name: &str, credentials: &str) -> (tempfile::TempDir, Vec<(&'static str, String)>) {
    let dir = tempfile::tempdir().unwrap();
    let spec = format!(
        "name = \"{name}\"\n\n[chain]\ngenesis = \"genesis.json\"\n\n[access]\nadmin_cidrs = [\"203.0.113.0/24\"]\n\n\
         [[clusters]]\nname = \"virginia\"\nprovider = \"aws\"\nregion = \"Virginia\"\ntags = [\"peer_cluster\"]\n\n\
         [[services]]\nname = \"genesis\"\nrole = \"genesis\"\n\n[[services]]\nname = \"master\"\nrole = \"master\"\n"
    );
    std::fs::write(dir.path().join("network.toml"), spec).unwrap();
    std::fs::copy(root().join("examples/genesis.json"), dir.path().join("genesis.json")).unwrap();
    let (config, creds) = (dir.path().join("aws-config"), dir.path().join("aws-credentials"));
    std::fs::write(&config, "[default]\nregion = us-east-1\n").unwrap();
    std::fs::write(&creds, credentials).unwrap();
    let env = vec![
        ("AWS_CONFIG_FILE", config.display().to_string()),
        ("AWS_SHARED_CREDENTIALS_FILE", creds.display().to_string()),
    ];
    (dir, env)
}

const DUMMY_CREDENTIALS: &str = "[default]\naws_access_key_id = testing\naws_secret_access_key = testing\n";

fn moto(test: &str) -> Option<Moto> {
    Moto::for_test(test).unwrap_or_else(|e| panic!("{test}: moto did not start: {e}"))
}

fn is_log_line(line: &str, level: &str) -> bool {
    // `2026-01-01T00:00:00.000000Z DEBUG target: message`
    line.split_whitespace().nth(1) == Some(level)
}

#[test]
fn a_quiet_apply_logs_no_debug_lines_and_no_colour_and_v_shows_only_our_debug_lines() {
    let Some(moto) = moto("a_quiet_apply_logs_no_debug_lines_and_no_colour_and_v_shows_only_our_debug_lines")
    else {
        return;
    };
    let (dir, mut env) = aws_network("first-hour-logs", DUMMY_CREDENTIALS);
    env.push(("AWS_ENDPOINT_URL", moto.endpoint()));
    let apply = ["apply", "-f", "network.toml", "--only", "machines", "--auto-approve"];

    // stderr is a pipe here, and NO_COLOR is not set: the pipe alone must turn colour off.
    let (code, out, err) = parts(&cli(dir.path(), &env, &apply));
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(!err.contains('\u{1b}'), "ANSI escapes in piped stderr:\n{err}");
    for line in err.lines() {
        assert!(
            !is_log_line(line, "DEBUG") && !is_log_line(line, "TRACE"),
            "a debug line without -v: {line}"
        );
    }

    // -v: peerfleet's own debug lines (with their target), and still none from the SDK or HTTP crates.
    // A network of its own, so that nothing of the first run's state or machines is involved.
    let (dir, mut env) = aws_network("first-hour-logs-v", DUMMY_CREDENTIALS);
    env.push(("AWS_ENDPOINT_URL", moto.endpoint()));
    let (code, out, err) = parts(&cli(dir.path(), &env, &[&["-v"], &apply[..]].concat()));
    assert_eq!(code, 0, "{out}\n{err}");
    let debug: Vec<&str> = err.lines().filter(|l| is_log_line(l, "DEBUG")).collect();
    assert!(debug.iter().any(|l| l.contains(" peerfleet_aws")), "-v shows our debug lines:\n{err}");
    let foreign: Vec<&&str> = debug
        .iter()
        .filter(|l| !l.split_whitespace().nth(2).is_some_and(|t| t.starts_with("peerfleet")))
        .collect();
    assert!(foreign.is_empty(), "-v shows dependencies' debug lines: {foreign:#?}");
    assert!(!err.contains('\u{1b}'), "ANSI escapes in piped stderr:\n{err}");
}

/// The target directory this test binary was built in (`<target>/tmp` is Cargo's scratch space for
/// integration tests, beside the profile directories).
fn target_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("CARGO_TARGET_TMPDIR is <target>/tmp")
        .to_path_buf()
}

/// How long `cargo install` may take. Built in the suite's own target directory and profile, it
/// compiles only what the test build does not share: the local-only feature set of our crates and the
/// few dependencies whose features the tests' dev-dependencies change (Tokio's test utilities).
const INSTALL: Duration = Duration::from_secs(20 * 60);

#[test]
fn one_install_gives_a_cli_that_plans_the_local_example_from_anywhere() {
    if !engine_available() {
        return engine_missing("one_install_gives_a_cli_that_plans_the_local_example_from_anywhere");
    }
    let install = tempfile::tempdir().unwrap();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    // `--debug`, with the suite's target directory as Cargo's build directory: the dev profile's
    // artifacts are reused, never a release build. The finished binaries go to a target directory of
    // their own: uplifted into the suite's, they would replace the `peerfleet` other tests are running.
    // Without the cloud features, which the local network does not need: the AWS SDK is not compiled
    // again (the test build's dev-dependencies give its dependencies other features), and the
    // provider-less build, which no `--all-features` build compiles, is compiled here.
    let artifacts = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let out = bounded(
        Command::new(cargo)
            .args(["install", "--path"])
            .arg(root())
            .arg("--root")
            .arg(install.path())
            .args(["--debug", "--locked", "--offline", "--quiet", "--no-default-features"])
            .env("CARGO_BUILD_BUILD_DIR", target_dir())
            .env("CARGO_TARGET_DIR", artifacts.path())
            .stdin(std::process::Stdio::null()),
        INSTALL,
    );
    assert!(out.status.success(), "cargo install failed:\n{}", String::from_utf8_lossy(&out.stderr));
    let bin = install.path().join("bin");
    assert!(bin.join("peerfleet-node").is_file(), "the node binary is installed with the CLI");

    // Elsewhere, outside any Cargo workspace and without PEERFLEET_NODE_BIN: as a person runs it.
    let elsewhere = tempfile::tempdir().unwrap();
    let installed = |spec: &Path, state: &Path| {
        let mut cmd = Command::new(bin.join("peerfleet"));
        cmd.args(["plan", "-f"])
            .arg(spec)
            .arg("--state")
            .arg(state)
            .current_dir(elsewhere.path())
            .env_remove("CARGO")
            .env_remove("PEERFLEET_NODE_BIN")
            .env_remove("RUST_LOG")
            .env("NO_COLOR", "1")
            .stdin(std::process::Stdio::null());
        bounded(&mut cmd, RUN)
    };
    let (spec_dir, spec) = local_spec("first-hour-install", 3);
    let (code, stdout, stderr) = parts(&installed(&spec, &spec_dir.path().join("state.json")));
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    let node = peerfleet::docker::reference_image(&bin.join("peerfleet-node")).unwrap();
    assert!(
        stdout.contains(&node.tag),
        "the plan deploys the installed node's image {}:\n{stdout}",
        node.tag
    );

    // A spec on a cloud this build left out: refused before anything connects, saying why.
    let (code, stdout, stderr) = parts(&installed(
        &root().join("examples/aws_eight_regions.toml"),
        &spec_dir.path().join("aws.state.json"),
    ));
    assert_eq!(code, 1, "{stdout}\n{stderr}");
    assert!(stderr.contains("built without the aws provider"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}

#[test]
fn version_names_the_node_image_it_would_deploy() {
    let (code, out, err) = parts(&cli(&root(), &[], &["--version"]));
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with(&format!("peerfleet {}\n", env!("CARGO_PKG_VERSION"))), "{out}");
    // The binary beside the CLI is the one `plan` would build the image from.
    let node = PathBuf::from(env!("CARGO_BIN_EXE_peerfleet-node"));
    let image = peerfleet::docker::reference_image(&node).unwrap();
    assert!(out.contains(&format!("node image: {} (built from ", image.tag)), "{out}");
}

#[test]
fn completion_scripts_and_the_manual_page_are_well_formed() {
    let (code, bash, err) = parts(&cli(&root(), &[], &["completions", "bash"]));
    assert_eq!(code, 0, "{err}");
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("peerfleet.bash");
    std::fs::write(&script, &bash).unwrap();
    let checked = bounded(Command::new("bash").arg("-n").arg(&script), RUN);
    assert!(checked.status.success(), "bash -n: {}", String::from_utf8_lossy(&checked.stderr));
    for sub in ["apply", "plan", "destroy", "completions"] {
        assert!(bash.contains(sub), "the bash script completes `{sub}`");
    }
    let (_, zsh, _) = parts(&cli(&root(), &[], &["completions", "zsh"]));
    assert!(zsh.starts_with("#compdef peerfleet"), "{zsh}");
    let (_, fish, _) = parts(&cli(&root(), &[], &["completions", "fish"]));
    assert!(fish.contains("complete -c peerfleet"), "{fish}");

    let (code, man, err) = parts(&cli(&root(), &[], &["man"]));
    assert_eq!(code, 0, "{err}");
    assert!(man.contains(".TH peerfleet 1"), "{man}");
    for section in [".SH NAME", ".SH SYNOPSIS", ".SH SUBCOMMANDS"] {
        assert!(man.contains(section), "the manual page has {section}");
    }
    // Where groff is installed, it reads the page without a warning (-ww: all warnings, -z: no output).
    let page = dir.path().join("peerfleet.1");
    std::fs::write(&page, &man).unwrap();
    if Command::new("groff").arg("--version").output().is_ok() {
        let c = bounded(Command::new("groff").args(["-man", "-ww", "-z"]).arg(&page), RUN);
        assert!(c.status.success() && c.stderr.is_empty(), "groff: {}", String::from_utf8_lossy(&c.stderr));
    } else {
        eprintln!("groff not installed: the manual page's roff structure alone was checked");
    }
}

/// The error of a failed run: exit 1, and one `Error:` line on stderr saying what to do next.
fn one_line_error(out: &Output, next_step: &str) -> String {
    let (code, stdout, stderr) = parts(out);
    assert_eq!(code, 1, "{stdout}\n{stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line:\n{stderr}");
    assert!(lines[0].starts_with("Error: "), "{stderr}");
    assert!(lines[0].contains(next_step), "the next step `{next_step}` is named:\n{stderr}");
    for noise in ["backtrace", "panicked", "stack"] {
        assert!(!stderr.to_lowercase().contains(noise), "{stderr}");
    }
    lines[0].to_string()
}

#[test]
fn no_docker_engine_says_to_start_one_or_set_docker_host() {
    // A loopback port nobody listens on: bound, then closed.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let (dir, _) = local_spec("first-hour-no-engine", 3);
    let out = cli(
        dir.path(),
        &[("DOCKER_HOST", format!("tcp://127.0.0.1:{port}"))],
        &["plan", "-f", "network.toml"],
    );
    one_line_error(&out, "DOCKER_HOST");
}

#[test]
fn no_aws_credentials_says_where_they_come_from() {
    let Some(moto) = moto("no_aws_credentials_says_where_they_come_from") else {
        return;
    };
    let (dir, mut env) = aws_network("first-hour-no-credentials", "");
    env.push(("AWS_ENDPOINT_URL", moto.endpoint()));
    let out = cli(dir.path(), &env, &["plan", "-f", "network.toml", "--only", "machines"]);
    one_line_error(&out, "aws configure");
}

#[test]
fn an_image_missing_in_the_region_says_to_set_or_remove_the_clusters_image() {
    let test = "an_image_missing_in_the_region_says_to_set_or_remove_the_clusters_image";
    let options = peerfleet::aws::testing::MotoOptions { validate_images: true };
    let Some(moto) = Moto::for_test_with(test, options).unwrap_or_else(|e| panic!("{test}: {e}")) else {
        return;
    };
    let (dir, mut env) = aws_network("first-hour-image", DUMMY_CREDENTIALS);
    env.push(("AWS_ENDPOINT_URL", moto.endpoint()));
    // An AMI ID as copied from another region's spec: EC2 knows it nowhere here.
    let spec = dir.path().join("network.toml");
    let text = std::fs::read_to_string(&spec)
        .unwrap()
        .replace("region = \"Virginia\"", "region = \"Virginia\"\nimage = \"ami-0123456789abcdef0\"");
    std::fs::write(&spec, text).unwrap();
    let out = cli(dir.path(), &env, &["apply", "-f", "network.toml", "--only", "machines", "--auto-approve"]);
    let (code, stdout, stderr) = parts(&out);
    assert_eq!(code, 1, "{stdout}\n{stderr}");
    let failed: Vec<&str> = stderr.lines().filter(|l| l.contains("✗ machine.virginia[0]")).collect();
    assert_eq!(failed.len(), 1, "{stderr}");
    assert!(failed[0].contains("InvalidAMIID"), "{stderr}");
    assert!(failed[0].contains("not an image available in us-east-1"), "{stderr}");
    assert!(failed[0].contains("remove it for the region's default image"), "{stderr}");
}

#[test]
fn a_city_the_provider_does_not_serve_names_the_providers_that_do() {
    let (dir, _) = aws_network("first-hour-region", DUMMY_CREDENTIALS);
    let spec = dir.path().join("network.toml");
    let text =
        std::fs::read_to_string(&spec).unwrap().replace("region = \"Virginia\"", "region = \"Amsterdam\"");
    std::fs::write(&spec, text).unwrap();
    let line = one_line_error(&cli(dir.path(), &[], &["validate", "-f", "network.toml"]), "digitalocean");
    assert!(line.contains("network.toml:"), "the file and line are named: {line}");
}

#[test]
fn a_held_lock_says_to_wait_or_force_unlock() {
    use peerfleet::core::state::{LocalStateFile, LockOptions, StateBackend};
    let (dir, _) = local_spec("first-hour-lock", 3);
    let state = dir.path().join(".peerfleet/first-hour-lock.state.json");
    // This test process holds the lock, as a running apply would.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let held = rt.block_on(LocalStateFile::new(&state).lock("apply", &LockOptions::default())).unwrap();
    let out = cli(dir.path(), &[], &["apply", "-f", "network.toml", "--auto-approve"]);
    let line = one_line_error(&out, "--lock-timeout");
    assert!(line.contains("peerfleet force-unlock -f network.toml"), "{line}");
    rt.block_on(held.release()).unwrap();
}

#[test]
fn an_embedding_program_chooses_the_node_binary() {
    // A path that is not a file: the error names it, so the choice was used (not a search).
    let chosen = tempfile::tempdir().unwrap().path().join("my-peerfleet-node");
    let (dir, spec) = local_spec("first-hour-embed", 3);
    let network = peerfleet::core::spec::load(&spec).unwrap();
    let deployment =
        peerfleet::Deployment::new(network, dir.path().join("state.json")).with_node_binary(&chosen);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let request = peerfleet::PlanRequest::default();
    let planned = rt.block_on(async {
        tokio::time::timeout(RUN, deployment.plan(&request)).await.expect("plan within the bound")
    });
    let error = planned.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(error.contains("my-peerfleet-node"), "{error}");
}
