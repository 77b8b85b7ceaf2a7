//! Log output on stderr: peerfleet's own crates at the level `-v` asks for, every dependency held at
//! `info` or quieter, and no colour escapes where nobody sees colour.
//!
//! Two filters, both applied to every line. The first is what the person chose: `-v`/`-vv`
//! ([`log_filter`]) or `RUST_LOG`. The second is a cap ([`within_cap`]): an `EnvFilter` directive such
//! as `aws_smithy_runtime=debug` *enables* that target, it does not cap it, so the cap is a filter of
//! its own. Dependencies never log below `info`, whatever was asked for: the SDK, HTTP and Docker
//! clients log whole requests at debug and trace — container environments, and `RunInstances` user
//! data carrying a machine's TLS key.

use std::io::IsTerminal;

use tracing::Level;
use tracing_subscriber::filter::{EnvFilter, FilterExt, FilterFn};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Layer, fmt};

/// peerfleet's own crates: the only ones `-v`/`-vv` make more talkative, and the only ones not capped.
const OUR_CRATES: [&str; 6] = [
    "peerfleet",
    "peerfleet_core",
    "peerfleet_docker",
    "peerfleet_aws",
    "peerfleet_digitalocean",
    "peerfleet_node",
];

/// Whether `target` (a module path such as `peerfleet_aws::machines`) is in one of [`OUR_CRATES`].
fn ours(target: &str) -> bool {
    let krate = target.split("::").next().unwrap_or(target);
    OUR_CRATES.contains(&krate)
}

/// The filter for `-v` count `verbose` when `RUST_LOG` is not set: dependencies at `warn` (`info` from
/// `-v` on), our crates at `warn`, `debug` (`-v`) or `trace` (`-vv`).
fn log_filter(verbose: u8) -> String {
    let (ours, deps) = match verbose {
        0 => ("warn", "warn"),
        1 => ("debug", "info"),
        _ => ("trace", "info"),
    };
    let mut directives = vec![deps.to_string()];
    directives.extend(OUR_CRATES.iter().map(|c| format!("{c}={ours}")));
    directives.join(",")
}

/// Whether a line at `level` from `target` may be written at all, whatever `-v` or `RUST_LOG` asked
/// for: ours at any level, dependencies at `info` or above.
fn within_cap(target: &str, level: &Level) -> bool {
    // More verbose levels compare greater: TRACE > DEBUG > INFO.
    ours(target) || *level <= Level::INFO
}

/// Whether stderr gets ANSI colours: only on a terminal, and never with `NO_COLOR` set to something
/// (no-color.org: an empty value does not count).
fn colour(stderr_is_terminal: bool, no_color: Option<std::ffi::OsString>) -> bool {
    stderr_is_terminal && no_color.is_none_or(|v| v.is_empty())
}

/// Installs the subscriber. Targets are shown from `-v` on (and with `RUST_LOG`), so a line says which
/// crate wrote it.
pub fn init(verbose: u8) {
    let rust_log = std::env::var_os("RUST_LOG").is_some();
    let chosen = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(log_filter(verbose)));
    let cap = FilterFn::new(|meta| within_cap(meta.target(), meta.level()));
    let layer = fmt::layer()
        .with_writer(std::io::stderr)
        .with_target(verbose > 0 || rust_log)
        .with_ansi(colour(std::io::stderr().is_terminal(), std::env::var_os("NO_COLOR")))
        .with_filter(chosen.and(cap));
    let _ = tracing_subscriber::registry().with(layer).try_init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dependencies_never_log_below_info_however_verbose() {
        for verbose in 0..=3 {
            let filter = log_filter(verbose);
            let mut directives = filter.split(',');
            let deps = directives.next().unwrap_or_default();
            assert!(deps == "warn" || deps == "info", "{filter}");
            assert!(
                directives.all(|d| OUR_CRATES.iter().any(|c| d.starts_with(&format!("{c}=")))),
                "only our crates get more: {filter}"
            );
        }
        assert_eq!(
            log_filter(0),
            "warn,peerfleet=warn,peerfleet_core=warn,peerfleet_docker=warn,peerfleet_aws=warn,peerfleet_digitalocean=warn,peerfleet_node=warn"
        );
        assert!(log_filter(1).contains("peerfleet_aws=debug"));
        assert!(log_filter(2).contains("peerfleet_docker=trace"));
    }

    #[test]
    fn rust_log_cannot_lift_dependencies_past_the_cap() {
        // `RUST_LOG=trace` enables everything; the cap still drops the wire loggers' debug and trace.
        for target in ["aws_smithy_runtime::client::orchestrator", "hyper_util::client", "bollard::docker"] {
            assert!(!within_cap(target, &Level::TRACE), "{target}");
            assert!(!within_cap(target, &Level::DEBUG), "{target}");
            assert!(within_cap(target, &Level::INFO), "{target}");
        }
        assert!(within_cap("peerfleet_aws::machines", &Level::TRACE));
        assert!(within_cap("peerfleet", &Level::TRACE));
        // A crate whose name merely starts like ours is not ours.
        assert!(!within_cap("peerfleetish::x", &Level::DEBUG));
    }

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(colour(true, None));
        assert!(!colour(false, None));
        assert!(!colour(true, Some("1".into())));
        assert!(colour(true, Some("".into())), "an empty NO_COLOR does not count (no-color.org)");
    }
}
