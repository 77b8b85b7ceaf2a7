//! `peerfleet-node`, the reference node the local and cloud networks run (see `peerfleet_node::cli`).
//! Shipped by this package so that one `cargo install` gives the CLI and the node it deploys: the CLI
//! finds it beside itself.

fn main() -> std::process::ExitCode {
    peerfleet::node::cli::main()
}
