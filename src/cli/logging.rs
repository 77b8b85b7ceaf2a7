//! Log output on stderr: peerfleet's own crates at the level `-v` asks for, every dependency held
//! down, and no colour escapes where nobody sees colour.
//!
//! An `EnvFilter` directive such as `aws_smithy_runtime=debug` *enables* that target at debug; it does
//! not cap it. So the level of dependencies is bounded by a second filter, applied after the one the
//! person chose (`-v` or `RUST_LOG`): dependencies never log above `debug`, because the SDK and HTTP
//! crates log whole requests at `trace` — a `RunInstances` body carries a machine's TLS key.

use std::io::IsTerminal;

use tracing::Level;
use tracing_subscriber::filter::{EnvFilter, FilterExt, FilterFn};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Layer, fmt};

/// Whether `target` (a module path) belongs to one of peerfleet's own crates.
fn ours(target: &str) -> bool {
    let krate = target.split("::").next().unwrap_or(target);
    krate == "peerfleet" || krate.starts_with("peerfleet_")
}

/// The filter used when `RUST_LOG` is not set: only peerfleet's crates get more verbose with `-v`.
pub fn default_directives(verbose: u8) -> &'static str {
    match verbose {
        0 => "warn",
        1 => "warn,peerfleet=debug",
        // `peerfleet` is a prefix of every crate of ours (`peerfleet_core`, `peerfleet_aws`, ...).
        _ => "debug,peerfleet=trace",
    }
}

/// Whether an event or span at `level` from `target` may be logged at all, whatever was asked for.
pub fn within_cap(target: &str, level: &Level) -> bool {
    // More verbose levels compare greater: TRACE > DEBUG > INFO.
    ours(target) || *level <= Level::DEBUG
}

/// Whether stderr gets ANSI colours: only on a terminal, and never with `NO_COLOR` set (no-color.org).
pub fn colour(stderr_is_terminal: bool, no_color: Option<std::ffi::OsString>) -> bool {
    stderr_is_terminal && no_color.is_none_or(|v| v.is_empty())
}

/// Installs the subscriber: `RUST_LOG` when set, otherwise [`default_directives`]; the dependency cap
/// always applies. Targets are shown from `-v` on, so a line says which crate wrote it.
pub fn init(verbose: u8) {
    let chosen =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_directives(verbose)));
    let cap = FilterFn::new(|meta| within_cap(meta.target(), meta.level()));
    let layer = fmt::layer()
        .with_writer(std::io::stderr)
        .with_target(verbose > 0 || std::env::var_os("RUST_LOG").is_some())
        .with_ansi(colour(std::io::stderr().is_terminal(), std::env::var_os("NO_COLOR")))
        .with_filter(chosen.and(cap));
    let _ = tracing_subscriber::registry().with(layer).try_init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dependencies_are_capped_at_debug_and_our_crates_are_not() {
        assert!(!within_cap("aws_smithy_runtime::client::orchestrator", &Level::TRACE));
        assert!(!within_cap("hyper_util::client", &Level::TRACE));
        assert!(within_cap("aws_smithy_runtime::client::orchestrator", &Level::DEBUG));
        assert!(within_cap("peerfleet_aws::machines", &Level::TRACE));
        assert!(within_cap("peerfleet", &Level::TRACE));
        // A crate whose name merely starts like ours is not ours.
        assert!(!within_cap("peerfleetish::x", &Level::TRACE));
    }

    #[test]
    fn without_verbose_only_warnings_show_and_v_raises_only_our_crates() {
        let quiet = default_directives(0);
        assert_eq!(quiet, "warn");
        assert!(default_directives(1).starts_with("warn,"), "-v leaves dependencies at warn");
        assert!(default_directives(1).contains("peerfleet=debug"));
    }

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(colour(true, None));
        assert!(!colour(false, None));
        assert!(!colour(true, Some("1".into())));
        assert!(colour(true, Some("".into())), "an empty NO_COLOR does not count (no-color.org)");
    }
}
