//! What the tool says about itself: `--version` (with the node image it would deploy), shell
//! completions and the manual page, all generated from the one argument definition in `args`.

use std::io::Write;

use anyhow::Result;
use clap::CommandFactory;
use clap_complete::Shell;

use super::args::Cli;

/// The long version: the CLI's version and the reference node image it would deploy. The image tag
/// is the content hash of the image built from the `peerfleet-node` binary found now (as `plan` would
/// find it), so it is named together with that binary; without one, the tag scheme is said instead.
pub fn long_version() -> String {
    let version = env!("CARGO_PKG_VERSION");
    let node = peerfleet::docker::locate_node_binary(None)
        .and_then(|binary| peerfleet::docker::reference_image(&binary).map(|image| (binary, image)));
    match node {
        Ok((binary, image)) => {
            format!("{version}\nnode image: {} (built from {})", image.tag, binary.display())
        }
        Err(e) => format!(
            "{version}\nnode image: none ({e}); it would be {}:<first 16 hex digits of the sha256 of the \
             image built from that binary>",
            peerfleet::docker::image::REPOSITORY
        ),
    }
}

/// Writes the completion script for `shell`.
pub fn completions(shell: Shell, out: &mut impl Write) -> Result<()> {
    clap_complete::generate(shell, &mut Cli::command(), "peerfleet", out);
    Ok(())
}

/// Writes the manual page, peerfleet(1), in roff.
pub fn man(out: &mut impl Write) -> Result<()> {
    clap_mangen::Man::new(Cli::command()).render(out)?;
    Ok(())
}
