//! The one validation both the TOML parser and the builder go through: raw spec → [`Network`].
//!
//! Checks run to the end and collect every problem, so a person fixes a spec in one round instead of
//! one error per run. A value that fails its own check is left out of the checks that depend on it
//! (a cluster with an unknown provider has no region to resolve), so one mistake gives one message.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::{Range, RangeInclusive};

use crate::network::{Chain, Cluster, Network, RestartPolicy, Service, Strategy};

use super::error::{MAX_REPORTED_ERRORS, Origin, SpecError, SpecErrorKind, SpecErrors, quoted};
use super::raw::{Located, LocatedList, RawSpec};

mod cluster;
mod rules;
mod service;
mod totals;
mod update;

use rules::{is_name, is_tag};
pub use totals::{MAX_CLUSTERS, MAX_NETWORK_CONTAINERS, MAX_NETWORK_NODES, MAX_SERVICES, MAX_TAGS};

/// Most machines one cluster may declare.
pub const MAX_NODES: u32 = 1000;
/// Most containers one service may declare.
pub const MAX_CONTAINERS: u32 = 100_000;
/// Environment variables the node roles get from peerfleet; a spec may not set them.
pub const RESERVED_ENV: [&str; 5] = ["NODE_ROLE", "CHAIN_ID", "GENESIS_B64", "GENESIS_URL", "SEEDS"];
/// The image name that means the reference node ([`Image::Reference`]).
pub const REFERENCE_IMAGE: &str = "peerfleet-node";

const STRATEGIES: [Strategy; 4] =
    [Strategy::EmptiestNode, Strategy::HighAvailability, Strategy::EveryNode, Strategy::RegionSpread];
const RESTART_POLICIES: [RestartPolicy; 3] =
    [RestartPolicy::Off, RestartPolicy::OnFailure, RestartPolicy::Always];
const NAME_RULE: &str = "a name matching ^[a-z][a-z0-9-]{0,31}$";
const TAG_RULE: &str = "a tag matching ^[A-Za-z0-9_:-]{1,64}$";
/// Ownership tags every object carries start with this; a deploy tag may not.
const ENV_RULE: &str = "a variable name matching ^[A-Z_][A-Z0-9_]*$";
// Health timings: at least 1 ms (Docker's minimum), at most an hour (anything longer is a mistake).
const HEALTH_MS: RangeInclusive<i64> = 1..=3_600_000;
const HEALTH_DEFAULT_INTERVAL_MS: u64 = 1000;
const HEALTH_DEFAULT_TIMEOUT_MS: u64 = 3000;
const HEALTH_DEFAULT_RETRIES: u32 = 3;

/// Validates a raw spec whose chain has already been resolved (reading the genesis file is I/O and
/// belongs to the caller; its failure arrives as `chain`'s error and is reported with the rest).
pub(crate) fn validate(
    raw: &RawSpec,
    chain: Result<Chain, SpecError>,
    origin: Origin<'_>,
) -> Result<Network, SpecErrors> {
    let mut v = Checker { origin, errors: Vec::new(), omitted: 0 };
    // Counted first: the checks below compare services with clusters, which is only cheap when
    // both lists are bounded.
    v.entry_counts(raw)?;
    let chain = chain.map_err(|e| v.errors.push(e)).ok().filter(|c| v.genesis_size(raw, c));
    let name = match &raw.name {
        Some(n) => v.name(n, "name"),
        None => v.missing(None, "name"),
    };
    let clusters = v.clusters(raw);
    let access = v.access(raw.access.as_ref(), &raw.clusters);
    let services = v.services(raw, &clusters);
    v.role_counts(raw);
    v.totals(raw, &clusters, &services);
    v.alias_clashes(raw, &services);
    let state = super::state::validate(raw.state.as_ref(), v.origin, &mut v.errors);

    let clusters: Option<Vec<Cluster>> = clusters.into_iter().collect();
    let services: Option<Vec<Service>> = services.into_iter().collect();
    if let Some(errors) = SpecErrors::with_omitted(v.errors, v.omitted) {
        return Err(errors);
    }
    match (name, chain, clusters, services, access, state) {
        (Some(name), Some(chain), Some(clusters), Some(services), Some(access), Some(state)) => {
            Ok(Network { name, chain, clusters, services, access, state })
        }
        // Invariant: every `None` above was reported, so `errors` was not empty.
        _ => unreachable!("a spec part failed validation without an error being reported"),
    }
}

/// Names already declared, with the path and span of their first declaration.
type Seen = BTreeMap<String, (String, Option<Range<usize>>)>;

struct Checker<'a> {
    origin: Origin<'a>,
    errors: Vec<SpecError>,
    /// Problems found past [`MAX_REPORTED_ERRORS`]: counted, not located.
    omitted: usize,
}

impl Checker<'_> {
    fn report(&mut self, span: Option<Range<usize>>, path: &str, kind: SpecErrorKind) {
        if self.errors.len() < MAX_REPORTED_ERRORS {
            self.errors.push(self.origin.error(span, path, kind));
        } else {
            self.omitted += 1;
        }
    }

    fn invalid<T>(
        &mut self,
        span: Option<Range<usize>>,
        path: &str,
        expected: &str,
        found: String,
    ) -> Option<T> {
        self.report(span, path, SpecErrorKind::Invalid { expected: expected.to_string(), found });
        None
    }

    /// Reports a missing required key; `table` is the span of the table that lacks it.
    fn missing<T>(&mut self, table: Option<Range<usize>>, path: &str) -> Option<T> {
        self.report(table, path, SpecErrorKind::Missing);
        None
    }

    /// A required key of the table at `table`.
    fn required<'v, T>(
        &mut self,
        value: &'v Option<Located<T>>,
        table: &Option<Range<usize>>,
        path: &str,
    ) -> Option<&'v Located<T>> {
        match value {
            Some(v) => Some(v),
            None => self.missing(table.clone(), path),
        }
    }

    fn name(&mut self, n: &Located<String>, path: &str) -> Option<String> {
        if is_name(&n.value) {
            Some(n.value.clone())
        } else {
            self.invalid(n.span.clone(), path, NAME_RULE, quoted(&n.value))
        }
    }

    /// One of `all`, by its spec name (exact, as TOML keys and enum values are case-sensitive).
    fn choice<T: Copy>(
        &mut self,
        v: &Located<String>,
        path: &str,
        all: &[T],
        name: fn(T) -> &'static str,
    ) -> Option<T> {
        if let Some(&t) = all.iter().find(|&&t| name(t) == v.value) {
            return Some(t);
        }
        let names: Vec<&str> = all.iter().map(|&t| name(t)).collect();
        self.invalid(v.span.clone(), path, &format!("one of {}", names.join(", ")), quoted(&v.value))
    }

    fn count(&mut self, v: &Located<i64>, path: &str, range: RangeInclusive<i64>) -> Option<u32> {
        match u32::try_from(v.value) {
            Ok(n) if range.contains(&v.value) => Some(n),
            _ => self.invalid(
                v.span.clone(),
                path,
                &format!("{}..={}", range.start(), range.end()),
                v.value.to_string(),
            ),
        }
    }

    fn non_empty(&mut self, v: &Located<String>, path: &str, what: &str) -> Option<String> {
        let s = v.value.trim();
        if s.is_empty() || s.chars().any(char::is_whitespace) {
            return self.invalid(v.span.clone(), path, &format!("{what} without spaces"), quoted(&v.value));
        }
        Some(s.to_string())
    }

    fn tags(&mut self, list: &LocatedList<String>, path: &str) -> Option<BTreeSet<String>> {
        if list.value.len() > MAX_TAGS {
            let expected = format!("at most {MAX_TAGS} tags");
            return self.invalid(list.span.clone(), path, &expected, format!("{} tags", list.value.len()));
        }
        let mut ok = true;
        for (i, t) in list.value.iter().enumerate() {
            if !is_tag(&t.value) {
                self.invalid::<()>(t.span.clone(), &format!("{path}[{i}]"), TAG_RULE, quoted(&t.value));
                ok = false;
            } else if crate::ownership::is_reserved(&t.value) {
                // It could be mistaken for an ownership tag; DigitalOcean would refuse it only at apply.
                self.invalid::<()>(
                    t.span.clone(),
                    &format!("{path}[{i}]"),
                    "a tag not starting with `peerfleet:` (reserved for the tags that mark what peerfleet owns)",
                    quoted(&t.value),
                );
                ok = false;
            }
        }
        ok.then(|| list.value.iter().map(|t| t.value.clone()).collect())
    }

    /// The required, unique name of a cluster or service; `seen` maps names to where they were first.
    fn entry_name(
        &mut self,
        what: &'static str,
        name: &Option<Located<String>>,
        table: &Option<Range<usize>>,
        path: &str,
        seen: &mut Seen,
    ) -> Option<String> {
        let name = self.required(name, table, path)?;
        if let Some((first_path, first_span)) = seen.get(&name.value) {
            // Described only now: locating a span scans the text, too slow to do for every name.
            let first = self.origin.describe(first_span.clone(), first_path);
            let kind = SpecErrorKind::Duplicate { what, name: name.value.clone(), first };
            self.report(name.span.clone(), path, kind);
        } else {
            seen.insert(name.value.clone(), (path.to_string(), name.span.clone()));
        }
        self.name(name, path)
    }
}
