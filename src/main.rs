//! The `peerfleet` command-line tool. See `docs/cli.md`.

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
