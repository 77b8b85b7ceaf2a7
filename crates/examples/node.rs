//! `peerfleet-node`, the reference node, as a source-tree run builds it: `peerfleet_docker::
//! locate_node_binary` runs `cargo build --example peerfleet-node` in the workspace when a program runs
//! under Cargo. Here, in the examples' own package, that build selects the same package with the same
//! features as `cargo run --example nine_regions`, so Cargo reuses every compiled dependency and only
//! links this file. (From the node crate, its dev-dependencies and different feature unification
//! recompiled some thirty crates.) Installs get the same program from the `peerfleet` package's
//! `peerfleet-node` binary.

fn main() -> std::process::ExitCode {
    peerfleet::node::cli::main()
}
