//! The `peerfleet-node` binary this package ships, as a container runs it: configured only by the
//! environment given (everything else cleared: no HOME, no PATH), logging to stderr, stopping on
//! SIGTERM.

use std::net::Ipv4Addr;
use std::process::Stdio;
use std::time::Duration;

use base64::Engine as _;
use peerfleet_node::{ChainId, Config, Node, Ports, new_genesis};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::time::timeout;

const WAIT: Duration = Duration::from_secs(10);

fn node_binary(args: &[&str], env: &[(&str, String)]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_peerfleet-node"));
    command.args(args).env_clear().envs(env.iter().map(|(k, v)| (*k, v.as_str())));
    command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true);
    command
}

fn genesis_env(chain_id: &ChainId, bytes: &[u8], port: u16) -> Vec<(&'static str, String)> {
    vec![
        ("NODE_ROLE", "genesis".into()),
        ("CHAIN_ID", chain_id.to_string()),
        ("GENESIS_B64", base64::engine::general_purpose::STANDARD.encode(bytes)),
        ("FETCH_PORT", port.to_string()),
    ]
}

async fn finish(child: Child) -> (Option<i32>, String, String) {
    let output =
        timeout(WAIT, child.wait_with_output()).await.expect("exits within the bound").expect("waits");
    let text = |bytes: Vec<u8>| String::from_utf8_lossy(&bytes).into_owned();
    (output.status.code(), text(output.stdout), text(output.stderr))
}

#[tokio::test]
async fn genesis_whose_hash_is_not_chain_id_exits_non_zero_saying_why() {
    let bytes = new_genesis("pinned");
    let env = genesis_env(&ChainId::of(b"some other genesis"), &bytes, 0);
    let (code, _, stderr) = finish(node_binary(&[], &env).spawn().expect("spawn")).await;
    assert_eq!(code, Some(1), "stderr: {stderr}");
    assert!(stderr.contains("refusing to serve"), "stderr: {stderr}");
}

#[tokio::test]
async fn missing_role_exits_non_zero_naming_the_variable() {
    let (code, _, stderr) = finish(node_binary(&["run"], &[]).spawn().expect("spawn")).await;
    assert_eq!(code, Some(1));
    assert!(stderr.contains("NODE_ROLE is required"), "stderr: {stderr}");
}

#[tokio::test]
async fn sigterm_stops_a_running_node_cleanly() {
    let bytes = new_genesis("signals");
    let env = genesis_env(&ChainId::of(&bytes), &bytes, 0);
    let mut child = node_binary(&[], &env).spawn().expect("spawn");
    let mut stderr = BufReader::new(child.stderr.take().expect("piped stderr")).lines();
    let started = timeout(WAIT, async {
        while let Some(line) = stderr.next_line().await.expect("read stderr") {
            if line.contains("node started") {
                return true;
            }
        }
        false
    })
    .await
    .expect("the node logs its start within the bound");
    assert!(started, "the node exited before starting");

    let pid = child.id().expect("still running").to_string();
    let kill = Command::new("kill").args(["-TERM", &pid]).status().await.expect("run kill");
    assert!(kill.success());
    let status = timeout(WAIT, child.wait()).await.expect("stops within the bound").expect("waits");
    assert!(status.success(), "exit status after SIGTERM: {status}");
}

#[tokio::test]
async fn probe_exits_zero_for_a_healthy_genesis_and_one_otherwise_with_one_line_and_its_facts_as_json() {
    let bytes = new_genesis("probed");
    let chain_id = ChainId::of(&bytes);
    let mut config = Config::genesis(chain_id.clone(), bytes.clone());
    config.listen_ip = Ipv4Addr::LOCALHOST.into();
    config.ports = Ports::EPHEMERAL;
    let node = Node::start(config).await.expect("genesis starts");
    let port = node.fetch_addr().expect("fetch port").port();

    let healthy = node_binary(&["probe"], &genesis_env(&chain_id, &bytes, port)).spawn().expect("spawn");
    let (code, stdout, stderr) = finish(healthy).await;
    assert_eq!(code, Some(0), "stdout: {stdout} stderr: {stderr}");
    // One line for a person, then one JSON line of facts that `peerfleet status` reads from the
    // engine's health log.
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(lines.len() == 2 && lines[0].starts_with("healthy:"), "stdout: {stdout}");
    assert!(lines[1].starts_with('{') && lines[1].contains("\"healthy\":true"), "stdout: {stdout}");

    let other = new_genesis("other");
    let wrong =
        node_binary(&["probe"], &genesis_env(&ChainId::of(&other), &other, port)).spawn().expect("spawn");
    let (code, stdout, _) = finish(wrong).await;
    assert_eq!(code, Some(1));
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(lines.len() == 2 && lines[0].starts_with("unhealthy:"), "stdout: {stdout}");
    assert!(lines[1].contains("\"healthy\":false"), "stdout: {stdout}");

    node.shutdown().await.expect("clean shutdown");
    let gone = node_binary(&["probe"], &genesis_env(&chain_id, &bytes, port)).spawn().expect("spawn");
    let (code, stdout, _) = finish(gone).await;
    assert_eq!(code, Some(1));
    assert!(stdout.starts_with("unhealthy: GET http://127.0.0.1:"), "stdout: {stdout}");
}

#[tokio::test]
async fn unknown_arguments_print_usage_and_exit_two() {
    let (code, _, stderr) = finish(node_binary(&["frobnicate"], &[]).spawn().expect("spawn")).await;
    assert_eq!(code, Some(2));
    assert!(stderr.starts_with("usage: peerfleet-node"), "stderr: {stderr}");
}
