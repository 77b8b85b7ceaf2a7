//! The one validation both the TOML parser and the builder go through: raw spec → [`Network`].
//!
//! Checks run to the end and collect every problem, so a person fixes a spec in one round instead of
//! one error per run. A value that fails its own check is left out of the checks that depend on it
//! (a cluster with an unknown provider has no region to resolve), so one mistake gives one message.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::ops::{Range, RangeInclusive};

use crate::network::{
    Access, Chain, Cluster, HealthCheck, Image, Network, PEER_CLUSTER_TAG, ProviderKind, RestartPolicy, Role,
    Service, Strategy,
};

use super::catalog;
use super::error::{Origin, SpecError, SpecErrorKind, SpecErrors};
use super::raw::{Located, LocatedList, RawAccess, RawCluster, RawHealth, RawService, RawSpec};

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
const RESERVED_TAG_PREFIX: &str = "peerfleet:";
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
    let mut v = Checker { origin, errors: Vec::new() };
    let chain = chain.map_err(|e| v.errors.push(e)).ok();
    let name = match &raw.name {
        Some(n) => v.name(n, "name"),
        None => v.missing(None, "name"),
    };
    let clusters = v.clusters(raw);
    let access = v.access(raw.access.as_ref(), &raw.clusters);
    let services = v.services(raw, &clusters);
    v.role_counts(raw);
    let state = super::state::validate(raw.state.as_ref(), v.origin, &mut v.errors);

    let clusters: Option<Vec<Cluster>> = clusters.into_iter().collect();
    let services: Option<Vec<Service>> = services.into_iter().collect();
    if let Some(errors) = SpecErrors::from_vec(v.errors) {
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
}

impl Checker<'_> {
    fn report(&mut self, span: Option<Range<usize>>, path: &str, kind: SpecErrorKind) {
        self.errors.push(self.origin.error(span, path, kind));
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
            self.invalid(n.span.clone(), path, NAME_RULE, format!("{:?}", n.value))
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
        self.invalid(v.span.clone(), path, &format!("one of {}", names.join(", ")), format!("{:?}", v.value))
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
            return self.invalid(
                v.span.clone(),
                path,
                &format!("{what} without spaces"),
                format!("{:?}", v.value),
            );
        }
        Some(s.to_string())
    }

    fn tags(&mut self, list: &LocatedList<String>, path: &str) -> Option<BTreeSet<String>> {
        let mut ok = true;
        for (i, t) in list.value.iter().enumerate() {
            if !is_tag(&t.value) {
                self.invalid::<()>(
                    t.span.clone(),
                    &format!("{path}[{i}]"),
                    TAG_RULE,
                    format!("{:?}", t.value),
                );
                ok = false;
            } else if t.value.starts_with(RESERVED_TAG_PREFIX) {
                // It could be mistaken for an ownership tag; DigitalOcean would refuse it only at apply.
                self.invalid::<()>(
                    t.span.clone(),
                    &format!("{path}[{i}]"),
                    "a tag not starting with `peerfleet:` (reserved for the tags that mark what peerfleet owns)",
                    format!("{:?}", t.value),
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

    fn clusters(&mut self, raw: &RawSpec) -> Vec<Option<Cluster>> {
        let mut seen = BTreeMap::new();
        raw.clusters
            .iter()
            .enumerate()
            .map(|(i, c)| self.cluster(&c.value, &c.span, &format!("clusters[{i}]"), &mut seen))
            .collect()
    }

    fn cluster(
        &mut self,
        c: &RawCluster,
        table: &Option<Range<usize>>,
        at: &str,
        seen: &mut Seen,
    ) -> Option<Cluster> {
        let path = |key: &str| format!("{at}.{key}");
        let name = self.entry_name("cluster", &c.name, table, &path("name"), seen);
        let provider = self
            .required(&c.provider, table, &path("provider"))
            .and_then(|p| self.choice(p, &path("provider"), &ProviderKind::ALL, ProviderKind::as_str));
        let region = self.required(&c.region, table, &path("region")).and_then(|r| {
            // Without a valid provider there is nothing to resolve against; that error is reported.
            match catalog::resolve(provider?, &r.value) {
                Ok(region) => Some(region),
                Err(e) => {
                    self.report(r.span.clone(), &path("region"), e.into());
                    None
                }
            }
        });
        let size = match &c.size {
            Some(s) => self.non_empty(s, &path("size"), "a machine size"),
            None => provider.map(|p| catalog::default_size(p).to_string()),
        };
        let image = match &c.image {
            Some(i) => self.non_empty(i, &path("image"), "a machine image").map(Some),
            None => Some(None),
        };
        let nodes = match &c.nodes {
            Some(n) => self.count(n, &path("nodes"), 0..=i64::from(MAX_NODES)),
            None => Some(1),
        };
        let tags = match &c.tags {
            Some(t) => self.tags(t, &path("tags")),
            None => Some(BTreeSet::from([PEER_CLUSTER_TAG.to_string()])),
        };
        let profile = match (&c.profile, provider) {
            (None, _) => Some(None),
            (Some(p), Some(ProviderKind::Aws)) => {
                self.non_empty(p, &path("profile"), "a profile name").map(Some)
            }
            (Some(p), Some(other)) => {
                self.report(
                    p.span.clone(),
                    &path("profile"),
                    SpecErrorKind::ProfileNotAws { provider: other },
                );
                None
            }
            (Some(_), None) => None,
        };
        Some(Cluster {
            name: name?,
            provider: provider?,
            region: region?,
            size: size?,
            image: image?,
            nodes: nodes?,
            tags: tags?,
            profile: profile?,
        })
    }

    fn access(
        &mut self,
        raw: Option<&Located<RawAccess>>,
        clusters: &[Located<RawCluster>],
    ) -> Option<Access> {
        let default = RawAccess::default();
        let (a, span) = raw.map_or((&default, None), |l| (&l.value, l.span.clone()));
        let force = a.force_open_admin.unwrap_or(false);
        let mut cidrs = Some(Vec::new());
        for (i, c) in a.admin_cidrs.iter().flat_map(|l| l.value.iter()).enumerate() {
            let path = format!("access.admin_cidrs[{i}]");
            let cidr = match parse_cidr(&c.value) {
                Ok(cidr) => cidr,
                Err(expected) => {
                    cidrs = self.invalid(c.span.clone(), &path, &expected, format!("{:?}", c.value));
                    continue;
                }
            };
            if cidr.ends_with("/0") && !force {
                self.report(c.span.clone(), &path, SpecErrorKind::OpenAdmin { cidr });
                cidrs = None;
                continue;
            }
            if let Some(list) = cidrs.as_mut() {
                list.push(cidr);
            }
        }
        // From the raw providers: a cloud cluster with some other mistake still needs admin CIDRs.
        let cloud = clusters.iter().filter_map(|c| c.value.provider.as_ref()).find_map(|p| {
            ProviderKind::ALL.into_iter().find(|k| k.as_str() == p.value && *k != ProviderKind::Local)
        });
        let given = a.admin_cidrs.as_ref().is_some_and(|l| !l.value.is_empty());
        if let (Some(provider), false) = (cloud, given) {
            let at = a.admin_cidrs.as_ref().map_or(span, |l| l.span.clone());
            self.report(at, "access.admin_cidrs", SpecErrorKind::AdminCidrsRequired { provider });
            return None;
        }
        Some(Access { admin_cidrs: cidrs?, ssh: a.ssh.unwrap_or(false) })
    }

    fn services(&mut self, raw: &RawSpec, clusters: &[Option<Cluster>]) -> Vec<Option<Service>> {
        // Node counts by tag set only mean something when every cluster is valid; otherwise the
        // cluster errors are the ones to fix first and tag-matching errors would be noise.
        let nodes: Option<Vec<&Cluster>> = clusters.iter().map(Option::as_ref).collect();
        let mut seen = BTreeMap::new();
        raw.services
            .iter()
            .enumerate()
            .map(|(i, s)| {
                self.service(&s.value, &s.span, &format!("services[{i}]"), &mut seen, nodes.as_deref())
            })
            .collect()
    }

    fn service(
        &mut self,
        s: &RawService,
        table: &Option<Range<usize>>,
        at: &str,
        seen: &mut Seen,
        clusters: Option<&[&Cluster]>,
    ) -> Option<Service> {
        let path = |key: &str| format!("{at}.{key}");
        let name = self.entry_name("service", &s.name, table, &path("name"), seen);
        let role = self
            .required(&s.role, table, &path("role"))
            .and_then(|r| self.choice(r, &path("role"), &Role::ORDER, Role::as_str));
        let image = match &s.image {
            None => Some(Image::Reference),
            Some(i) => self
                .non_empty(i, &path("image"), "an image reference")
                .map(|i| if i == REFERENCE_IMAGE { Image::Reference } else { Image::Named(i) }),
        };
        let strategy = match &s.strategy {
            Some(st) => self.choice(st, &path("strategy"), &STRATEGIES, Strategy::as_str),
            None => Some(Strategy::default()),
        };
        let single = matches!(role, Some(Role::Genesis | Role::Master));
        if let (true, Some(Strategy::EveryNode), Some(st)) = (single, strategy, &s.strategy) {
            let expected = format!(
                "emptiest_node, high_availability or region_spread (a {} service runs exactly one container)",
                role.map_or("", Role::as_str)
            );
            self.invalid::<()>(st.span.clone(), &path("strategy"), &expected, format!("{:?}", st.value));
        }
        let deploy_tags = match &s.deploy_tags {
            Some(t) => self.tags(t, &path("deploy_tags")),
            None => Some(BTreeSet::new()),
        };
        let matching_nodes = |tags: &BTreeSet<String>| {
            clusters.map(|cs| {
                let matching: Vec<_> = cs.iter().filter(|c| tags.is_subset(&c.tags)).collect();
                (!matching.is_empty(), matching.iter().map(|c| c.nodes).sum::<u32>())
            })
        };
        let containers = match (strategy, &s.containers) {
            (Some(Strategy::EveryNode), Some(c)) if !single => {
                self.report(c.span.clone(), &path("containers"), SpecErrorKind::EveryNodeScaled);
                None
            }
            // Set by the nodes it matches; unknown (and unused) when the clusters are invalid.
            (Some(Strategy::EveryNode), None) if !single => {
                deploy_tags.as_ref().and_then(&matching_nodes).map(|(_, nodes)| nodes)
            }
            (_, Some(c)) if single && c.value != 1 => {
                let expected =
                    format!("1 (a {} service runs exactly one container)", role.map_or("", Role::as_str));
                self.invalid(c.span.clone(), &path("containers"), &expected, c.value.to_string())
            }
            (_, Some(c)) => self.count(c, &path("containers"), 0..=i64::from(MAX_CONTAINERS)),
            (_, None) => Some(1),
        };
        // A service with containers needs a node to run them on (every_node's count is the nodes).
        let unplaceable = match (containers, &deploy_tags) {
            (Some(n), Some(tags)) if n > 0 && strategy != Some(Strategy::EveryNode) => matching_nodes(tags)
                .filter(|&(_, nodes)| nodes == 0)
                .map(|(clusters_match, _)| (tags, clusters_match)),
            _ => None,
        };
        if let Some((tags, clusters_match)) = unplaceable {
            let span = s.deploy_tags.as_ref().map_or(table.clone(), |t| t.span.clone());
            let tags = tags.iter().cloned().collect();
            self.report(span, &path("deploy_tags"), SpecErrorKind::NoMatchingNode { tags, clusters_match });
        }
        let env = match &s.env {
            Some(e) => self.env(&e.value, &path("env")),
            None => Some(BTreeMap::new()),
        };
        let ports = match &s.ports {
            Some(p) => self.ports(p, &path("ports")),
            None => Some(Vec::new()),
        };
        let restart = match &s.restart {
            Some(r) => self.choice(r, &path("restart"), &RESTART_POLICIES, RestartPolicy::as_str),
            None => Some(RestartPolicy::default()),
        };
        let health = match &s.health {
            Some(h) => self.health(&h.value, &h.span, &path("health")).map(Some),
            None => Some(None),
        };
        Some(Service {
            name: name?,
            role: role?,
            image: image?,
            containers: containers?,
            strategy: strategy?,
            deploy_tags: deploy_tags?,
            env: env?,
            ports: ports?,
            restart: restart?,
            health: health?,
        })
    }

    fn env(
        &mut self,
        env: &BTreeMap<Located<String>, Located<String>>,
        at: &str,
    ) -> Option<BTreeMap<String, String>> {
        let mut ok = true;
        for key in env.keys() {
            let path = format!("{at}.{}", key.value);
            if !is_env_key(&key.value) {
                self.invalid::<()>(key.span.clone(), &path, ENV_RULE, format!("{:?}", key.value));
                ok = false;
            } else if RESERVED_ENV.contains(&key.value.as_str()) {
                self.report(key.span.clone(), &path, SpecErrorKind::ReservedEnv { key: key.value.clone() });
                ok = false;
            }
        }
        ok.then(|| env.iter().map(|(k, v)| (k.value.clone(), v.value.clone())).collect())
    }

    fn ports(&mut self, list: &LocatedList<i64>, at: &str) -> Option<Vec<u16>> {
        let mut ports = Some(Vec::new());
        for (i, p) in list.value.iter().enumerate() {
            let path = format!("{at}[{i}]");
            let port = match u16::try_from(p.value) {
                Ok(port) if port > 0 => port,
                _ => {
                    ports = self.invalid(p.span.clone(), &path, "a port in 1..=65535", p.value.to_string());
                    continue;
                }
            };
            if let Some(first) = list.value[..i].iter().position(|q| q.value == p.value) {
                let expected = format!("each port once ({port} is already at {at}[{first}])");
                ports = self.invalid(p.span.clone(), &path, &expected, port.to_string());
                continue;
            }
            if let Some(list) = ports.as_mut() {
                list.push(port);
            }
        }
        ports
    }

    fn health(&mut self, h: &RawHealth, table: &Option<Range<usize>>, at: &str) -> Option<HealthCheck> {
        let path = |key: &str| format!("{at}.{key}");
        let command = self.required(&h.command, table, &path("command")).and_then(|c| {
            if c.value.is_empty() || c.value.iter().all(|part| part.value.is_empty()) {
                return self.invalid(c.span.clone(), &path("command"), "a non-empty command", "[]".into());
            }
            Some(c.value.iter().map(|part| part.value.clone()).collect())
        });
        let mut millis = |v: &Option<Located<i64>>, key: &str, default: u64| match v {
            Some(ms) if HEALTH_MS.contains(&ms.value) => u64::try_from(ms.value).ok(),
            Some(ms) => {
                self.invalid(ms.span.clone(), &path(key), "1..=3600000 milliseconds", ms.value.to_string())
            }
            None => Some(default),
        };
        let interval_ms = millis(&h.interval_ms, "interval_ms", HEALTH_DEFAULT_INTERVAL_MS);
        let timeout_ms = millis(&h.timeout_ms, "timeout_ms", HEALTH_DEFAULT_TIMEOUT_MS);
        let retries = match &h.retries {
            Some(r) => self.count(r, &path("retries"), 1..=100),
            None => Some(HEALTH_DEFAULT_RETRIES),
        };
        Some(HealthCheck {
            command: command?,
            interval_ms: interval_ms?,
            timeout_ms: timeout_ms?,
            retries: retries?,
        })
    }

    /// Exactly one genesis and one master: none is reported once, extras each at their `role`.
    fn role_counts(&mut self, raw: &RawSpec) {
        for role in [Role::Genesis, Role::Master] {
            let of_role: Vec<(usize, &Located<String>)> = raw
                .services
                .iter()
                .enumerate()
                .filter_map(|(i, s)| {
                    s.value.role.as_ref().filter(|r| r.value == role.as_str()).map(|r| (i, r))
                })
                .collect();
            let found = of_role.len();
            // A misspelt role is already reported; "found 0" on top of it would be the same mistake twice.
            let roles_readable = raw.services.iter().all(|s| {
                s.value.role.as_ref().is_some_and(|r| Role::ORDER.iter().any(|k| k.as_str() == r.value))
            });
            if found == 0 && roles_readable {
                self.report(None, "services", SpecErrorKind::RoleCount { role, found, first: None });
            }
            if let Some(((i, first), extra)) = of_role.split_first().filter(|(_, extra)| !extra.is_empty()) {
                let first = self.origin.describe(first.span.clone(), &format!("services[{i}]"));
                for (k, r) in extra {
                    let kind = SpecErrorKind::RoleCount { role, found, first: Some(first.clone()) };
                    self.report(r.span.clone(), &format!("services[{k}].role"), kind);
                }
            }
        }
    }
}

/// `^[a-z][a-z0-9-]{0,31}$`: safe in every provider's names, tags and DNS labels.
fn is_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && s.len() <= 32
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// `^[A-Za-z0-9_:-]{1,64}$`: DigitalOcean's tag charset, the strictest of the providers.
fn is_tag(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | ':' | '-'))
}

/// `^[A-Z_][A-Z0-9_]*$`: portable environment variable names.
fn is_env_key(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_uppercase() || c == '_')
        && chars.all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
}

/// Parses an IPv4 or IPv6 CIDR into its canonical text; the error says what was expected.
fn parse_cidr(s: &str) -> Result<String, String> {
    let expected = || "an IPv4 or IPv6 CIDR such as 203.0.113.0/24".to_string();
    let (ip, prefix) = s.trim().split_once('/').ok_or_else(expected)?;
    let ip: IpAddr = ip.parse().map_err(|_| expected())?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let prefix: u32 = prefix.parse().ok().filter(|&p| p <= max).ok_or_else(expected)?;
    // Firewalls reject (or silently widen) a CIDR with host bits set; say which network was meant.
    let network = match ip {
        IpAddr::V4(v4) => {
            let mask = u32::MAX.checked_shl(32 - prefix).unwrap_or(0);
            IpAddr::from((u32::from(v4) & mask).to_be_bytes())
        }
        IpAddr::V6(v6) => {
            let mask = u128::MAX.checked_shl(128 - prefix).unwrap_or(0);
            IpAddr::from((u128::from(v6) & mask).to_be_bytes())
        }
    };
    if network != ip {
        return Err(format!("a network address with no host bits set (did you mean {network}/{prefix}?)"));
    }
    Ok(format!("{ip}/{prefix}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_documented_pattern() {
        for ok in ["a", "relay", "nine-regions", "x1", &"a".repeat(32)] {
            assert!(is_name(ok), "{ok}");
        }
        for bad in ["", "Relay", "1relay", "-a", "re_lay", "relé", &"a".repeat(33)] {
            assert!(!is_name(bad), "{bad}");
        }
    }

    #[test]
    fn tags_and_env_keys_follow_the_documented_patterns() {
        assert!(is_tag("peer_cluster") && is_tag("k8s:role-1") && is_tag(&"t".repeat(64)));
        assert!(!is_tag("") && !is_tag("a b") && !is_tag("a.b") && !is_tag(&"t".repeat(65)));
        assert!(is_env_key("LOG_LEVEL") && is_env_key("_X1"));
        assert!(!is_env_key("log_level") && !is_env_key("1X") && !is_env_key(""));
    }

    #[test]
    fn cidrs_are_checked_and_canonicalised() {
        assert_eq!(parse_cidr("203.0.113.0/24").unwrap(), "203.0.113.0/24");
        assert_eq!(parse_cidr("2001:DB8::/32").unwrap(), "2001:db8::/32");
        assert_eq!(parse_cidr("0.0.0.0/0").unwrap(), "0.0.0.0/0");
        assert_eq!(parse_cidr("198.51.100.7/32").unwrap(), "198.51.100.7/32");
        assert!(parse_cidr("203.0.113.0").is_err());
        assert!(parse_cidr("203.0.113.0/33").is_err());
        assert!(parse_cidr("example.com/24").is_err());
        assert_eq!(
            parse_cidr("203.0.113.5/24").unwrap_err(),
            "a network address with no host bits set (did you mean 203.0.113.0/24?)"
        );
    }
}
