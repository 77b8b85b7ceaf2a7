//! Rendering plans: Terraform-like text for people, stable JSON for scripts, DOT for graphs.
//!
//! Rendering is pure and lives in the core so that the CLI, the examples and embedding tools all show
//! the same thing. Values of sensitive environment keys were already redacted by the planner.

use std::fmt::Write as _;

use serde::Serialize;

use crate::plan::{Action, Change, FORMAT_VERSION, Plan, Reason, Rollout, RolloutStep, Summary};
use crate::resource::{Actual, Desired};

/// ANSI colours, or none (the default: plain text for files, pipes and logs).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Style {
    /// Whether to emit colour codes.
    pub color: bool,
}

impl Style {
    /// Colour on a terminal unless `NO_COLOR` is set (https://no-color.org).
    pub fn detect(is_terminal: bool) -> Self {
        Style { color: is_terminal && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()) }
    }

    fn paint(&self, code: &str, text: &str) -> String {
        if self.color { format!("\x1b[{code}m{text}\x1b[0m") } else { text.to_string() }
    }

    fn action(&self, action: Action, text: &str) -> String {
        let code = match action {
            Action::Create => "32",
            Action::Update => "33",
            Action::Replace => "35",
            Action::Delete => "31",
            Action::NoOp => "0",
        };
        self.paint(code, text)
    }

    /// Bold text.
    pub fn bold(&self, text: &str) -> String {
        self.paint("1", text)
    }
}

fn verb(action: Action) -> &'static str {
    match action {
        Action::Create => "will be created",
        Action::Update => "will be updated in place",
        Action::Replace => "must be replaced",
        Action::Delete => "will be destroyed",
        Action::NoOp => "is unchanged",
    }
}

/// A one-line description of what the resource is.
pub fn describe(change: &Change) -> String {
    match (&change.after, &change.before) {
        (Some(Desired::Machine(m)), _) => {
            format!(
                "{} {}, size {}{}",
                m.provider,
                m.region.slug,
                m.size,
                m.image.as_ref().map(|i| format!(", image {i}")).unwrap_or_default()
            )
        }
        (Some(Desired::Container(c)), _) => {
            format!("{} ({}) on {}, image {}", c.name, c.role, c.node, c.image)
        }
        (Some(Desired::Firewall(f)), _) => format!("{} rules in {} {}", f.rules.len(), f.provider, f.region),
        (Some(Desired::StableIp(s)), _) => format!("stable address for {}", s.machine),
        (None, Some(Actual::Machine(m))) => format!("{} {} {}, size {}", m.id, m.provider, m.region, m.size),
        (None, Some(Actual::Container(c))) => {
            format!("{} {}", c.id, c.spec.as_ref().map(|s| s.name.as_str()).unwrap_or(""))
        }
        (None, Some(other)) => other.id().to_string(),
        (None, None) => String::new(),
    }
}

fn reason_line(r: &Reason) -> String {
    let show = |v: &Option<String>| v.as_ref().map(|v| format!("{v:?}")).unwrap_or_else(|| "(none)".into());
    let forces = if r.forces_replace { "  # forces replacement" } else { "" };
    format!("{}: {} → {}{}", r.field, show(&r.before), show(&r.after), forces)
}

/// The summary line: `Plan: 3 to add, 1 to change, 2 to replace, 0 to destroy.`
pub fn summary_line(s: Summary) -> String {
    format!(
        "Plan: {} to add, {} to change, {} to replace, {} to destroy.",
        s.create, s.update, s.replace, s.delete
    )
}

/// The plan as Terraform-like text.
pub fn text(plan: &Plan, style: Style) -> String {
    let mut out = String::new();
    if !plan.has_changes() {
        let _ = writeln!(
            out,
            "No changes. Network `{}` matches its spec ({} resources).",
            plan.network, plan.unchanged
        );
        return out;
    }
    let _ = writeln!(
        out,
        "peerfleet will perform the following actions on network `{}` (chain {}):",
        plan.network,
        plan.chain_id.short()
    );
    if let Some(only) = plan.only {
        let _ = writeln!(
            out,
            "(restricted to the {} layer)",
            match only {
                crate::plan::Layer::Machines => "machines",
                crate::plan::Layer::Containers => "containers",
            }
        );
    }
    for change in &plan.changes {
        let _ = writeln!(out);
        let _ = writeln!(out, "  # {} {}", style.bold(&change.address.to_string()), verb(change.action));
        let symbol = format!("{:>3}", change.action.symbol());
        let _ = writeln!(
            out,
            "{} {}  {}",
            style.action(change.action, &symbol),
            change.address,
            describe(change)
        );
        if matches!(change.action, Action::Update | Action::Replace) {
            for r in &change.reasons {
                let _ = writeln!(out, "      {}", reason_line(r));
            }
        }
        if let Some(gate) = &change.gate {
            let _ = writeln!(out, "      then wait for: {}", gate.waiting_for);
        }
    }
    rollouts_text(plan, &mut out);
    let _ = writeln!(out);
    let _ = writeln!(out, "{}", style.bold(&summary_line(plan.summary())));
    out
}

/// The rollouts: one headline each, its batches, and where it departs from the declared policy.
fn rollouts_text(plan: &Plan, out: &mut String) {
    for r in &plan.rollouts {
        let _ = writeln!(out);
        let _ = writeln!(out, "Rollout: {}", r.headline());
        for (i, batch) in r.batches.iter().enumerate() {
            let members: Vec<String> = batch.iter().map(ToString::to_string).collect();
            let _ = writeln!(out, "  batch {}: {}", i + 1, members.join(", "));
        }
        for note in &r.notes {
            let _ = writeln!(out, "  note: {note}");
        }
    }
}

/// One change in the stable JSON format.
#[derive(Debug, Serialize)]
pub struct JsonChange<'a> {
    /// Resource address.
    pub address: String,
    /// `create`, `update`, `replace` or `delete`.
    pub action: Action,
    /// Why.
    pub reasons: &'a [Reason],
    /// Addresses of the changes that run first.
    pub waits_for: Vec<String>,
    /// A short description.
    pub description: String,
    /// Where it stands in a rollout (absent when it is not part of one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rollout: Option<&'a RolloutStep>,
}

/// The stable JSON form of a plan (`plan --json`), documented in docs/cli.md.
#[derive(Debug, Serialize)]
pub struct JsonPlan<'a> {
    /// [`FORMAT_VERSION`].
    pub format_version: u32,
    /// Network name.
    pub network: &'a str,
    /// Chain ID.
    pub chain_id: &'a str,
    /// Layer restriction.
    pub only: Option<crate::plan::Layer>,
    /// Changes in address order.
    pub changes: Vec<JsonChange<'a>>,
    /// Counts.
    pub summary: Summary,
    /// Resources with nothing to do.
    pub unchanged: usize,
    /// Replaces of running members in ordered batches, per service or cluster (absent when none).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub rollouts: Vec<JsonRollout<'a>>,
}

/// One rollout in the stable JSON format.
#[derive(Debug, Serialize)]
pub struct JsonRollout<'a> {
    /// "replace relay in 9 batches of 1 (stop-first, on failure pause)".
    pub headline: String,
    /// The rollout itself (kind, name, policy, batches, notes).
    #[serde(flatten)]
    pub rollout: &'a Rollout,
}

/// The plan as stable JSON (one line per call is up to the caller: this is pretty-printed).
pub fn json(plan: &Plan) -> String {
    let doc = JsonPlan {
        format_version: FORMAT_VERSION,
        network: &plan.network,
        chain_id: plan.chain_id.as_str(),
        only: plan.only,
        changes: plan
            .changes
            .iter()
            .map(|c| JsonChange {
                address: c.address.to_string(),
                action: c.action,
                reasons: &c.reasons,
                waits_for: c.waits_for.iter().map(|a| a.to_string()).collect(),
                description: describe(c),
                rollout: c.rollout.as_ref(),
            })
            .collect(),
        summary: plan.summary(),
        unchanged: plan.unchanged,
        rollouts: plan.rollouts.iter().map(|r| JsonRollout { headline: r.headline(), rollout: r }).collect(),
    };
    serde_json::to_string_pretty(&doc).expect("plan JSON always serializes")
}

/// The Graphviz colour of an action, shared by the plan's DOT and the network graph.
pub(crate) fn action_color(action: Action) -> &'static str {
    match action {
        Action::Create => "darkgreen",
        Action::Update => "goldenrod",
        Action::Replace => "purple",
        Action::Delete => "red",
        Action::NoOp => "black",
    }
}

/// The plan's graph in Graphviz DOT: one node per change, an edge from each change to what it waits for.
pub fn dot(plan: &Plan) -> String {
    let mut out =
        String::from("digraph peerfleet {\n  rankdir=LR;\n  node [shape=box, fontname=\"monospace\"];\n");
    for c in &plan.changes {
        let color = action_color(c.action);
        let _ = writeln!(
            out,
            "  \"{}\" [label=\"{} {}\", color={color}];",
            c.address,
            c.action.symbol(),
            c.address
        );
    }
    // Each rollout batch is a box, labelled with its place in the rollout.
    for (n, r) in plan.rollouts.iter().enumerate() {
        for (i, batch) in r.batches.iter().enumerate() {
            let _ = writeln!(out, "  subgraph \"cluster_rollout_{n}_{i}\" {{");
            let _ = writeln!(
                out,
                "    label=\"{} batch {} of {}\"; style=dashed;",
                r.name,
                i + 1,
                r.batches.len()
            );
            for a in batch {
                let _ = writeln!(out, "    \"{a}\";");
            }
            out.push_str("  }\n");
        }
    }
    for c in &plan.changes {
        for dep in &c.waits_for {
            let _ = writeln!(out, "  \"{}\" -> \"{}\";", c.address, dep);
        }
    }
    out.push_str("}\n");
    out
}

/// One line per rollout an apply stopped: where it stopped, what the failed members' gates saw, and
/// how many members were not reached (they keep the previous spec). `failed` is the apply's root causes
/// ([`crate::executor::ApplyOutcome::failed`]), `succeeded` what completed.
pub fn stopped_rollouts(
    plan: &Plan,
    failed: &[(crate::Address, crate::provider::ProviderError)],
    succeeded: &[crate::Address],
) -> Vec<String> {
    let mut lines = Vec::new();
    for r in &plan.rollouts {
        let members: Vec<&crate::Address> = r.batches.iter().flatten().collect();
        let broken: Vec<&(crate::Address, crate::provider::ProviderError)> =
            failed.iter().filter(|(a, _)| members.contains(&a)).collect();
        let Some(batch) =
            broken.iter().filter_map(|(a, _)| r.batches.iter().position(|b| b.contains(a))).min()
        else {
            continue;
        };
        let done = members.iter().filter(|a| succeeded.contains(a)).count();
        let untouched = members.len() - done - broken.len();
        let how = match r.failure_action {
            crate::update::FailureAction::Pause => "paused",
            crate::update::FailureAction::Rollback => "rolled back and stopped",
        };
        let names: Vec<String> = broken.iter().map(|(a, e)| format!("{a} ({})", e.message)).collect();
        lines.push(format!(
            "rollout of {} {how} at batch {} of {}: {}; {done} replaced, {untouched} not reached still run the \
             previous spec. Fix the spec and apply again to resume.",
            r.name,
            batch + 1,
            r.batches.len(),
            names.join("; ")
        ));
    }
    lines
}
