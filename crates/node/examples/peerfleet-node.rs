//! The `peerfleet-node` binary as built from the source tree by a CLI or example running under Cargo
//! (`cargo build -p peerfleet-node --example peerfleet-node`, see `peerfleet_docker::locate_node_binary`):
//! it needs only this crate's dependencies, so it builds in seconds. Installs get the same program from
//! the `peerfleet` package's `peerfleet-node` binary; an example target here keeps the two from sharing
//! an output file.

fn main() -> std::process::ExitCode {
    peerfleet_node::cli::main()
}
