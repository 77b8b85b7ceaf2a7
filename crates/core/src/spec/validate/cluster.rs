//! Clusters and `[access]`: the machines a network asks for and who may administer them.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;

use crate::network::{Access, Cluster, PEER_CLUSTER_TAG, ProviderKind};

use super::super::catalog;
use super::super::error::{SpecErrorKind, quoted};
use super::super::raw::{Located, RawAccess, RawCluster, RawSpec};
use super::rules::parse_cidr;
use super::{Checker, MAX_NODES, Seen};

impl Checker<'_> {
    pub(super) fn clusters(&mut self, raw: &RawSpec) -> Vec<Option<Cluster>> {
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
        let update = self.update_table(&c.update, &path("update"), super::update::Subject::Cluster);
        Some(Cluster {
            name: name?,
            provider: provider?,
            region: region?,
            size: size?,
            image: image?,
            nodes: nodes?,
            tags: tags?,
            profile: profile?,
            update: update?,
        })
    }

    pub(super) fn access(
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
                    cidrs = self.invalid(c.span.clone(), &path, &expected, quoted(&c.value));
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
}
