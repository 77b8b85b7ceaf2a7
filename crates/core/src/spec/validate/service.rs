//! Services: role, image, placement, environment, ports, health, and the one-genesis/one-master rule.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;

use crate::network::{Cluster, HealthCheck, Image, RestartPolicy, Role, Service, Strategy};
use crate::provider::Secret;

use super::super::error::{SpecErrorKind, quoted};
use super::super::raw::{Located, LocatedList, RawEnvValue, RawHealth, RawService, RawSpec};
use super::rules::is_env_key;
use super::{
    Checker, ENV_RULE, HEALTH_DEFAULT_INTERVAL_MS, HEALTH_DEFAULT_RETRIES, HEALTH_DEFAULT_TIMEOUT_MS,
    HEALTH_MS, MAX_CONTAINERS, REFERENCE_IMAGE, RESERVED_ENV, RESTART_POLICIES, STRATEGIES, Seen,
};

impl Checker<'_> {
    pub(super) fn services(&mut self, raw: &RawSpec, clusters: &[Option<Cluster>]) -> Vec<Option<Service>> {
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
            self.invalid::<()>(st.span.clone(), &path("strategy"), &expected, quoted(&st.value));
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
            None => Some((BTreeMap::new(), BTreeMap::new())),
        };
        let (env, secrets) = env.unzip();
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
        let update = self.update_table(&s.update, &path("update"), super::update::Subject::Service);
        Some(Service {
            name: name?,
            role: role?,
            image: image?,
            containers: containers?,
            strategy: strategy?,
            deploy_tags: deploy_tags?,
            env: env?,
            secrets: secrets?,
            ports: ports?,
            restart: restart?,
            health: health?,
            update: update?,
        })
    }

    /// Plain variables, and those declared secret.
    fn env(
        &mut self,
        env: &BTreeMap<Located<String>, Located<RawEnvValue>>,
        at: &str,
    ) -> Option<(BTreeMap<String, String>, BTreeMap<String, Secret>)> {
        let mut ok = true;
        for key in env.keys() {
            // A key that could be mistaken for path syntax (or hold control characters) is quoted.
            let plain = key.value.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            let path =
                if plain { format!("{at}.{}", key.value) } else { format!("{at}.{}", quoted(&key.value)) };
            if !is_env_key(&key.value) {
                self.invalid::<()>(key.span.clone(), &path, ENV_RULE, quoted(&key.value));
                ok = false;
            } else if RESERVED_ENV.contains(&key.value.as_str()) {
                self.report(key.span.clone(), &path, SpecErrorKind::ReservedEnv { key: key.value.clone() });
                ok = false;
            }
        }
        let (mut plain, mut secret) = (BTreeMap::new(), BTreeMap::new());
        for (k, v) in env {
            match &v.value {
                RawEnvValue::Text(text) => _ = plain.insert(k.value.clone(), text.clone()),
                // Unread (reported by `secrets::resolve`, whose errors the caller adds): left out.
                RawEnvValue::Source(source) => match super::super::secrets::value_of(source) {
                    Some((value, true)) => _ = secret.insert(k.value.clone(), Secret::new(value)),
                    Some((value, false)) => _ = plain.insert(k.value.clone(), value),
                    None => {}
                },
            }
        }
        ok.then_some((plain, secret))
    }

    fn ports(&mut self, list: &LocatedList<i64>, at: &str) -> Option<Vec<u16>> {
        let mut ports = Some(Vec::new());
        // Where each port was first seen: one look-up per port, not a scan of those before it.
        let mut first_at: BTreeMap<i64, usize> = BTreeMap::new();
        for (i, p) in list.value.iter().enumerate() {
            let path = format!("{at}[{i}]");
            let port = match u16::try_from(p.value) {
                Ok(port) if port > 0 => port,
                _ => {
                    ports = self.invalid(p.span.clone(), &path, "a port in 1..=65535", p.value.to_string());
                    continue;
                }
            };
            if let Some(&first) = first_at.get(&p.value) {
                let expected = format!("each port once ({port} is already at {at}[{first}])");
                ports = self.invalid(p.span.clone(), &path, &expected, port.to_string());
                continue;
            }
            first_at.insert(p.value, i);
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
    pub(super) fn role_counts(&mut self, raw: &RawSpec) {
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
