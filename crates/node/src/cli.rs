//! The `peerfleet-node` command: runs the role named by `NODE_ROLE` (`run`, the default) or checks
//! the local node's health (`probe`, for the container's health check). Built to be PID 1 of a
//! scratch image.
//!
//! It lives in the library so that any package can ship the binary with a two-line `main`: the
//! `peerfleet` package does, so that one `cargo install` gives both the CLI and the node it deploys.

use std::io::IsTerminal;
use std::process::ExitCode;

use crate::Config;

const USAGE: &str = "usage: peerfleet-node [run | probe]

  run    run the role from the environment (default)
  probe  check the local node's health; exit 0 if healthy, 1 if not

environment: NODE_ROLE (genesis|master|relay), CHAIN_ID, and per role
  genesis: GENESIS_B64, FETCH_PORT (8080)
  master:  GENESIS_URL, PEER_PORT (26656), STATUS_PORT (26657)
  relay:   GENESIS_URL, SEEDS (host:port,...), STATUS_PORT (26657)
  optional: NODE_ID, RUST_LOG";

/// Runs the command with the process's arguments and environment.
pub fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        [] | ["run"] => run(),
        ["probe"] => probe(),
        ["-h" | "--help" | "help"] => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        ["-V" | "--version"] => {
            println!("peerfleet-node {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        _ => {
            eprintln!("{USAGE}");
            ExitCode::from(2)
        }
    }
}

fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    // One thread is plenty for a node's handful of connections and keeps the container small.
    tokio::runtime::Builder::new_current_thread().enable_all().build()
}

fn run() -> ExitCode {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(e) => {
            tracing::error!("invalid configuration: {e}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match runtime() {
        Ok(runtime) => runtime,
        Err(e) => {
            tracing::error!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(async { crate::run(config, termination()).await }) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// Installs the SIGTERM (how container engines stop a container) and SIGINT handlers now, before the
/// node starts, and returns a future resolving on either. As PID 1 the process gets no default signal
/// handling from the kernel, so without handlers `docker stop` would wait for its timeout and kill.
/// Must be called within the runtime.
fn termination() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{SignalKind, signal};
    let received = |kind: SignalKind, name: &'static str| {
        let handler = signal(kind);
        async move {
            match handler {
                Ok(mut handler) => {
                    handler.recv().await;
                }
                Err(e) => {
                    tracing::warn!("cannot handle {name} ({e}); it will not stop the node cleanly");
                    std::future::pending::<()>().await;
                }
            }
        }
    };
    let (term, int) =
        (received(SignalKind::terminate(), "SIGTERM"), received(SignalKind::interrupt(), "SIGINT"));
    async move {
        tokio::select! {
            () = term => {}
            () = int => {}
        }
    }
}

fn probe() -> ExitCode {
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(e) => {
            println!("unhealthy: invalid configuration: {e}");
            return ExitCode::FAILURE;
        }
    };
    let report = match runtime() {
        Ok(runtime) => runtime.block_on(crate::probe_report(&config)),
        Err(e) => {
            crate::ProbeReport { verdict: Err(format!("cannot start the async runtime: {e}")), status: None }
        }
    };
    // One line a person can read, one the engine's health log keeps for `peerfleet status`.
    match &report.verdict {
        Ok(()) => println!("healthy: {} on chain {}", config.role(), config.chain_id),
        Err(why) => println!("unhealthy: {why}"),
    }
    println!("{}", report.line());
    match report.verdict {
        Ok(()) => ExitCode::SUCCESS,
        Err(_) => ExitCode::FAILURE,
    }
}
