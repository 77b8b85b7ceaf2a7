//! A person's first hour with the installed tool: it installs in one step, its logs are readable in a
//! file, it describes itself (version, completions, manual), and the errors one meets first say what
//! to do next in one line.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use peerfleet::aws::testing::Moto;

use crate::local::{engine_available, engine_missing};
use crate::support::{local_spec, parts, root};

/// The CLI with no terminal, no inherited log, colour or cloud settings, plus `env`.
fn cli(dir: &Path, env: &[(&str, String)], args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_peerfleet"));
    cmd.args(args).current_dir(dir).stdin(std::process::Stdio::null());
    for key in [
        "RUST_LOG",
        "NO_COLOR",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_PROFILE",
        "AWS_ENDPOINT_URL",
        "DIGITALOCEAN_TOKEN",
        "DIGITALOCEAN_ACCESS_TOKEN",
        "DIGITALOCEAN_API_URL",
    ] {
        cmd.env_remove(key);
    }
    // Never reach for instance metadata (a link-local address) from a test.
    cmd.env("AWS_EC2_METADATA_DISABLED", "true");
    cmd.envs(env.iter().map(|(k, v)| (*k, v.as_str())));
    cmd.output().expect("the peerfleet binary runs")
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
    moto.reset().unwrap();
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

/// The directory Cargo builds into for this test binary (`<target>/<profile>/deps/tests-…`).
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.ancestors().nth(3).expect("the test binary sits in <target>/<profile>/deps").to_path_buf()
}

#[test]
fn one_install_gives_a_cli_that_plans_the_local_example_from_anywhere() {
    if !engine_available() {
        return engine_missing("one_install_gives_a_cli_that_plans_the_local_example_from_anywhere");
    }
    let install = tempfile::tempdir().unwrap();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    // `--debug` and the suite's own target directory: only what changed is rebuilt.
    let out = Command::new(cargo)
        .args(["install", "--path"])
        .arg(root())
        .arg("--root")
        .arg(install.path())
        .args(["--debug", "--locked", "--offline", "--quiet"])
        .env("CARGO_TARGET_DIR", target_dir())
        .output()
        .unwrap();
    assert!(out.status.success(), "cargo install failed:\n{}", String::from_utf8_lossy(&out.stderr));
    let bin = install.path().join("bin");
    assert!(bin.join("peerfleet-node").is_file(), "the node binary is installed with the CLI");

    // Elsewhere, outside any Cargo workspace and without PEERFLEET_NODE_BIN: as a person runs it.
    let (spec_dir, _) = local_spec("first-hour-install", 3);
    let out = Command::new(bin.join("peerfleet"))
        .args(["plan", "-f"])
        .arg(spec_dir.path().join("network.toml"))
        .current_dir(install.path())
        .env_remove("CARGO")
        .env_remove("PEERFLEET_NODE_BIN")
        .env("NO_COLOR", "1")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let (code, stdout, stderr) = parts(&out);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(stdout.contains("peerfleet-node:"), "the plan deploys the installed node's image:\n{stdout}");
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
    let checked = Command::new("bash").arg("-n").arg(&script).output().unwrap();
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
    match Command::new("groff").args(["-man", "-ww", "-z"]).arg(&page).output() {
        Ok(c) => assert!(
            c.status.success() && c.stderr.is_empty(),
            "groff: {}",
            String::from_utf8_lossy(&c.stderr)
        ),
        Err(e) => eprintln!("groff not runnable ({e}): the manual page's roff structure alone was checked"),
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
    let (dir, _) = local_spec("first-hour-lock", 3);
    let state = dir.path().join(".peerfleet/first-hour-lock.state.json");
    std::fs::create_dir_all(state.parent().unwrap()).unwrap();
    let lock =
        peerfleet::core::state::LockInfo::for_this_process("apply", std::time::Duration::from_secs(600));
    std::fs::write(format!("{}.lock", state.display()), serde_json::to_vec(&lock).unwrap()).unwrap();
    let out = cli(dir.path(), &[], &["apply", "-f", "network.toml", "--auto-approve"]);
    one_line_error(&out, "peerfleet force-unlock -f network.toml");
}
