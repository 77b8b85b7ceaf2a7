//! The last line of a failed run: what went wrong and what to do next, on one line, never a
//! backtrace. The errors themselves come from the library; the next step depends on how the tool
//! was invoked (`-f FILE`, the commands it has), so it is added here, by matching the error's kind —
//! never its text.

use std::path::Path;

use peerfleet::core::provider::{ErrorKind, ProviderError};
use peerfleet::core::refresh::RefreshError;
use peerfleet::core::state::StateError;
use peerfleet::{ConnectError, DeployError};

/// What a person should do about `error`, when the tool knows better than the message says.
pub fn next_step(error: &anyhow::Error, spec: Option<&Path>) -> Option<String> {
    let file = spec.map(|p| p.display().to_string()).unwrap_or_else(|| "FILE".into());
    for cause in error.chain() {
        if let Some(e) = cause.downcast_ref::<DeployError>() {
            match e {
                DeployError::Connect(ConnectError::NoDocker(_)) => {
                    return Some(
                        "start the Docker engine, or point DOCKER_HOST at a running one (e.g. \
                         unix:///var/run/docker.sock)"
                            .into(),
                    );
                }
                DeployError::Connect(ConnectError::Provider(p)) => return provider_step(p),
                DeployError::Refresh(RefreshError::Provider { source, .. }) => return provider_step(source),
                // `transparent`: the state error is not a cause of its own in the chain.
                DeployError::State(e) => return lock_step(e, &file),
                _ => {}
            }
        }
        if let Some(e) = cause.downcast_ref::<StateError>() {
            return lock_step(e, &file);
        }
    }
    None
}

fn lock_step(e: &StateError, file: &str) -> Option<String> {
    e.lock_holder().map(|_| {
        format!(
            "wait for that run to finish, or re-run with --lock-timeout SECONDS to wait for it \
             (`peerfleet force-unlock -f {file}` removes a lock only when its holder is gone)"
        )
    })
}

fn provider_step(e: &ProviderError) -> Option<String> {
    match (&e.kind, e.provider.as_str()) {
        (ErrorKind::Unauthorized, "aws") => Some(
            "give AWS credentials: `aws configure` (or `aws sso login`), or set AWS_PROFILE, or \
             AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
                .into(),
        ),
        (ErrorKind::Unauthorized, "digitalocean") => {
            Some("set DIGITALOCEAN_TOKEN to a DigitalOcean API token with read and write scope".into())
        }
        _ => None,
    }
}

/// The error and its causes, and the next step, on one line: messages from remote APIs may carry
/// line breaks, which would split the line a script or a person greps for.
pub fn one_line(error: &anyhow::Error, next: Option<String>) -> String {
    let text = format!("{error:#}");
    let mut line: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if let Some(next) = next {
        line.push_str(" — ");
        line.push_str(&next);
    }
    line
}

/// What the CLI prints after `Error:`. A spec with several problems keeps one line per problem (each
/// names its file, line and field); everything else is [`one_line`] with its next step. Either way
/// made safe for a terminal: errors quote what they were given (file contents, names).
pub fn message(error: &anyhow::Error, spec: Option<&Path>) -> String {
    let text = match error.downcast_ref::<SpecProblems>() {
        Some(problems) => problems.0.clone(),
        None => one_line(error, next_step(error, spec)),
    };
    peerfleet::core::spec::terminal_safe(&text)
}

/// A spec's problems as the spec loader reports them, one per line.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SpecProblems(pub String);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_with_line_breaks_and_its_next_step_make_one_line() {
        let e = anyhow::anyhow!("first\nsecond  part").context("outer");
        assert_eq!(one_line(&e, Some("do this".into())), "outer: first second part — do this");
    }

    #[test]
    fn a_refused_aws_call_names_where_credentials_come_from() {
        let e = anyhow::Error::new(DeployError::Refresh(RefreshError::Provider {
            provider: peerfleet::core::network::ProviderKind::Aws,
            region: "us-east-1".into(),
            source: ProviderError::new(ErrorKind::Unauthorized, "aws", "refused"),
        }));
        assert!(next_step(&e, None).is_some_and(|s| s.contains("aws configure")));
    }
}
