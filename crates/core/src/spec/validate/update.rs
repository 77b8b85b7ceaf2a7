//! `[services.update]` and `[clusters.update]`: how replaces roll out.

use crate::spec::raw::{Located, RawCount, RawUpdate};
use crate::update::{FailureAction, MaxUnavailable, UpdateOrder, UpdatePolicy};

use super::Checker;

/// Longest a rollout gate may be given: an hour, like the health timings.
const GATE_TIMEOUT_MS: std::ops::RangeInclusive<i64> = 1..=3_600_000;

/// What the table belongs to: a machine replace can only roll forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Subject {
    Service,
    Cluster,
}

impl Checker<'_> {
    /// The update table at `at`, or the defaults when it is absent.
    pub(super) fn update_table(
        &mut self,
        raw: &Option<Located<RawUpdate>>,
        at: &str,
        subject: Subject,
    ) -> Option<UpdatePolicy> {
        let Some(raw) = raw else { return Some(UpdatePolicy::default()) };
        let u = &raw.value;
        let path = |key: &str| format!("{at}.{key}");
        let max_unavailable = match &u.max_unavailable {
            None => Some(MaxUnavailable::default()),
            Some(m) => self.max_unavailable(m, &path("max_unavailable")),
        };
        let order = match &u.order {
            None => Some(UpdateOrder::default()),
            Some(o) => self.choice(o, &path("order"), &UpdateOrder::ALL, UpdateOrder::as_str),
        };
        let failure_action = match &u.failure_action {
            None => Some(FailureAction::default()),
            // The machine a replace removed is gone with its disk: there is nothing to go back to.
            Some(f) if subject == Subject::Cluster && f.value == FailureAction::Rollback.as_str() => self
                .invalid(
                    f.span.clone(),
                    &path("failure_action"),
                    "pause (a replaced machine cannot be put back: the old one is deleted)",
                    format!("{:?}", f.value),
                ),
            Some(f) => self.choice(f, &path("failure_action"), &FailureAction::ALL, FailureAction::as_str),
        };
        let gate_timeout_ms = match &u.gate_timeout_ms {
            None => Some(None),
            Some(t) if GATE_TIMEOUT_MS.contains(&t.value) => Some(u64::try_from(t.value).ok()),
            Some(t) => self.invalid(
                t.span.clone(),
                &path("gate_timeout_ms"),
                "1..=3600000 milliseconds",
                t.value.to_string(),
            ),
        };
        Some(UpdatePolicy {
            max_unavailable: max_unavailable?,
            order: order?,
            failure_action: failure_action?,
            gate_timeout_ms: gate_timeout_ms?,
        })
    }

    fn max_unavailable(&mut self, m: &Located<RawCount>, path: &str) -> Option<MaxUnavailable> {
        const EXPECTED: &str = "a count of at least 1 (2) or a percentage in 1%..=100% (\"50%\")";
        match &m.value {
            RawCount::Number(n) if *n >= 1 => u32::try_from(*n).ok().map(MaxUnavailable::Count),
            RawCount::Number(n) => self.invalid(m.span.clone(), path, EXPECTED, n.to_string()),
            RawCount::Text(t) => {
                let percent = t.trim().strip_suffix('%').and_then(|p| p.trim().parse::<u8>().ok());
                match percent {
                    Some(p) if (1..=100).contains(&p) => Some(MaxUnavailable::Percent(p)),
                    _ => self.invalid(m.span.clone(), path, EXPECTED, format!("{t:?}")),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::spec::tests::{BASE, errors, parse_text, with};
    use crate::update::{FailureAction, MaxUnavailable, UpdateOrder, UpdatePolicy};

    #[test]
    fn update_tables_are_read_with_defaults() {
        let extra = "[services.update]\nmax_unavailable = \"50%\"\norder = \"start-first\"\n\
                     failure_action = \"rollback\"\ngate_timeout_ms = 30000\n";
        let n = parse_text(&with(extra)).unwrap();
        assert_eq!(
            n.services[1].update,
            UpdatePolicy {
                max_unavailable: MaxUnavailable::Percent(50),
                order: UpdateOrder::StartFirst,
                failure_action: FailureAction::Rollback,
                gate_timeout_ms: Some(30_000),
            }
        );
        assert_eq!(n.services[0].update, UpdatePolicy::default());
        assert_eq!(n.clusters[0].update, UpdatePolicy::default());
        let n = parse_text(&with("[services.update]\nmax_unavailable = 3\n")).unwrap();
        assert_eq!(n.services[1].update.max_unavailable, MaxUnavailable::Count(3));
    }

    #[test]
    fn bad_update_values_are_located_errors() {
        assert_eq!(
            errors(&with(
                "[services.update]\nmax_unavailable = 0\norder = \"blue-green\"\nfailure_action = \"retry\"\n"
            )),
            [
                "net.toml:15:19: services[1].update.max_unavailable: expected a count of at least 1 (2) or a \
                 percentage in 1%..=100% (\"50%\"), found 0",
                "net.toml:16:9: services[1].update.order: expected one of stop-first, start-first, found \"blue-green\"",
                "net.toml:17:18: services[1].update.failure_action: expected one of pause, rollback, found \"retry\"",
            ]
        );
        assert_eq!(
            errors(&with("[services.update]\nmax_unavailable = \"150%\"\ngate_timeout_ms = 0\n")),
            [
                "net.toml:15:19: services[1].update.max_unavailable: expected a count of at least 1 (2) or a \
                 percentage in 1%..=100% (\"50%\"), found \"150%\"",
                "net.toml:16:19: services[1].update.gate_timeout_ms: expected 1..=3600000 milliseconds, found 0",
            ]
        );
        assert_eq!(errors(&with("[services.update]\nspeed = 1\n")).len(), 1, "unknown keys are refused");
    }

    #[test]
    fn a_cluster_rollout_cannot_roll_back() {
        let text = BASE.replace(
            "region = \"Frankfurt\"\n",
            "region = \"Frankfurt\"\n[clusters.update]\nfailure_action = \"rollback\"\n",
        );
        let messages = errors(&text);
        assert!(
            messages
                .iter()
                .any(|m| m.starts_with("net.toml:9:18: clusters[0].update.failure_action: expected pause")),
            "{messages:#?}"
        );
    }
}
