//! Firewalls: the network's firewall of a region, mapped between DigitalOcean's rules and the
//! core's [`Firewall`].

use std::sync::Arc;

use futures::FutureExt as _;
use peerfleet_core::Address;
use peerfleet_core::network::ProviderKind;
use peerfleet_core::provider::ProviderError;
use peerfleet_core::resource::{Firewall, FirewallRule, FirewallSpec, Protocol};
use reqwest::Method;
use serde_json::{Value, json};

use super::{Inner, check_provider, transient};
use crate::client::{Answer, Retry};
use crate::model::{self, Rule, Target};
use crate::ownership::{self, firewall_tag};

impl Inner {
    /// Adopts the network's firewall of the region if one exists (correcting its rules), else
    /// creates it, attached to the region's droplets by tag.
    pub(super) async fn create_firewall(
        self: &Arc<Self>,
        spec: &FirewallSpec,
    ) -> Result<Firewall, ProviderError> {
        check_provider(spec.provider, &spec.address)?;
        ownership::check_network(&spec.network)?;
        let inner = self;
        inner.ensure_tag(&firewall_tag(&spec.network, &spec.region)).await?;
        let body = &Inner::firewall_body(spec);
        let fw = inner
            .find_or_create(
                "firewall",
                move |not_before| {
                    async move {
                        let existing = inner.firewalls(not_before).await?;
                        Ok(existing.iter().find_map(|f| inner.firewall_of(&spec.network, &spec.region, f)))
                    }
                    .boxed()
                },
                move || {
                    async move {
                        let answer =
                            inner.call(Method::POST, "/v2/firewalls", Some(body), Retry::Caller).await?;
                        inner.answered_firewall(&answer, &spec.network, &spec.region)
                    }
                    .boxed()
                },
            )
            .await?;
        // An adopted firewall may have been changed by hand since: converge its rules.
        if fw.rules == FirewallRule::canonical(&spec.rules) {
            Ok(fw)
        } else {
            self.update_firewall(&fw, spec).await
        }
    }

    pub(super) async fn update_firewall(
        self: &Arc<Self>,
        current: &Firewall,
        spec: &FirewallSpec,
    ) -> Result<Firewall, ProviderError> {
        check_provider(spec.provider, &spec.address)?;
        let inner = self;
        inner.ensure_tag(&firewall_tag(&spec.network, &spec.region)).await?;
        let body = Inner::firewall_body(spec);
        let result =
            inner.call(Method::PUT, &format!("/v2/firewalls/{}", current.id), Some(&body), Retry::Safe).await;
        inner.touch();
        let answer = result?;
        inner.answered_firewall(&answer, &spec.network, &spec.region)
    }

    /// The network's firewall of `region` in an answer's `firewall`.
    pub(super) fn answered_firewall(
        &self,
        answer: &Answer,
        network: &str,
        region: &str,
    ) -> Result<Firewall, ProviderError> {
        let fw: model::Firewall =
            serde_json::from_value(answer.body.get("firewall").cloned().unwrap_or(Value::Null))
                .map_err(|e| transient(format!("unexpected firewall in the answer: {e}")))?;
        self.firewall_of(network, region, &fw)
            .ok_or_else(|| transient("the firewall in the answer lacks its tag"))
    }

    pub(super) fn firewall_of(&self, network: &str, region: &str, fw: &model::Firewall) -> Option<Firewall> {
        let tag = firewall_tag(network, region);
        if !fw.tags.as_ref().is_some_and(|t| t.contains(&tag)) {
            return None;
        }
        let rules: Vec<FirewallRule> = fw
            .inbound_rules
            .iter()
            .flatten()
            .filter_map(|r| {
                let protocol = match r.protocol.as_str() {
                    "tcp" => Protocol::Tcp,
                    "udp" => Protocol::Udp,
                    _ => return None,
                };
                let port = r.ports.parse().ok()?;
                let sources = r.sources.as_ref().map(|s| s.addresses.clone()).unwrap_or_default();
                Some(FirewallRule { protocol, port, sources })
            })
            .collect();
        Some(Firewall {
            id: fw.id.clone(),
            address: Address::firewall(ProviderKind::DigitalOcean, region),
            rules: FirewallRule::canonical(&rules),
        })
    }

    pub(super) fn firewall_body(spec: &FirewallSpec) -> Value {
        let inbound: Vec<Rule> = spec
            .rules
            .iter()
            .map(|r| Rule {
                protocol: match r.protocol {
                    Protocol::Tcp => "tcp".into(),
                    Protocol::Udp => "udp".into(),
                },
                ports: r.port.to_string(),
                sources: Some(Target { addresses: r.sources.clone() }),
                destinations: None,
            })
            .collect();
        // DigitalOcean firewalls drop outbound traffic without outbound rules; a security group
        // allows it. Same rules as AWS means: everything out is allowed.
        let everywhere = Target { addresses: vec!["0.0.0.0/0".into(), "::/0".into()] };
        let outbound: Vec<Rule> = ["tcp", "udp", "icmp"]
            .into_iter()
            .map(|p| Rule {
                protocol: p.into(),
                ports: "0".into(),
                sources: None,
                destinations: Some(everywhere.clone()),
            })
            .collect();
        json!({
            "name": ownership::firewall_name(&spec.network, &spec.region),
            "inbound_rules": inbound,
            "outbound_rules": outbound,
            "tags": [firewall_tag(&spec.network, &spec.region)],
        })
    }
}
