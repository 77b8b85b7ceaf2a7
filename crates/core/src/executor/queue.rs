//! The apply schedule as a pure data structure: which changes may start, and what a failure skips.
//!
//! Built from the plan's changes and their `waits_for` edges only, with no I/O and no clock, so every
//! scheduling rule is tested step by step on tiny graphs. The coordinator loop asks it for ready work
//! ([`Queue::dequeue`]) and tells it how each step ended ([`Queue::finish`]).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::address::Address;
use crate::plan::Change;

/// Where one change is in the schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// Waiting for changes it depends on.
    Waiting,
    /// May start.
    Ready,
    /// Started.
    Running,
    /// Finished successfully.
    Done,
    /// Finished with an error.
    Failed,
    /// Never started because `because` (a failed change) is among its transitive dependencies.
    Skipped {
        /// The failed change that is the root cause.
        because: Address,
    },
}

/// Why a plan cannot be scheduled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueueError {
    /// The changes wait for each other in a circle.
    #[error("the plan's changes wait for each other in a cycle: {}", DisplayCycle(.0))]
    Cycle(Vec<Address>),
    /// Two changes share an address.
    #[error("the plan has two changes for {0}")]
    Duplicate(Address),
}

struct DisplayCycle<'a>(&'a [Address]);

impl fmt::Display for DisplayCycle<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for a in self.0 {
            write!(f, "{a} → ")?;
        }
        match self.0.first() {
            Some(first) => write!(f, "{first}"),
            None => Ok(()),
        }
    }
}

#[derive(Debug)]
struct Node {
    /// Dependencies in the plan that have not finished yet.
    pending: BTreeSet<Address>,
    /// Changes that wait for this one.
    dependents: Vec<Address>,
    status: Status,
}

/// The schedule of one apply.
///
/// Ready changes come out in address order, so the same plan is always started in the same order
/// (which makes progress output and tests reproducible).
#[derive(Debug)]
pub struct Queue {
    nodes: BTreeMap<Address, Node>,
    ready: BTreeSet<Address>,
    running: usize,
}

impl Queue {
    /// The schedule of `changes`. A `waits_for` entry naming an address that has no change in the plan
    /// is already satisfied (the resource exists and stays as it is).
    ///
    /// # Errors
    /// [`QueueError::Cycle`] naming the cycle, or [`QueueError::Duplicate`]; both before anything runs.
    pub fn new(changes: &[Change]) -> Result<Self, QueueError> {
        let mut nodes = BTreeMap::new();
        for c in changes {
            let node = Node { pending: BTreeSet::new(), dependents: Vec::new(), status: Status::Waiting };
            if nodes.insert(c.address.clone(), node).is_some() {
                return Err(QueueError::Duplicate(c.address.clone()));
            }
        }
        for c in changes {
            for dep in &c.waits_for {
                if dep == &c.address {
                    return Err(QueueError::Cycle(vec![dep.clone()]));
                }
                if !nodes.contains_key(dep) {
                    continue;
                }
                let newly = nodes.get_mut(&c.address).is_some_and(|n| n.pending.insert(dep.clone()));
                if newly && let Some(d) = nodes.get_mut(dep) {
                    d.dependents.push(c.address.clone());
                }
            }
        }
        if let Some(cycle) = find_cycle(&nodes) {
            return Err(QueueError::Cycle(cycle));
        }
        let mut queue = Queue { nodes, ready: BTreeSet::new(), running: 0 };
        let roots: Vec<Address> =
            queue.nodes.iter().filter(|(_, n)| n.pending.is_empty()).map(|(a, _)| a.clone()).collect();
        for a in roots {
            queue.mark_ready(&a);
        }
        Ok(queue)
    }

    fn mark_ready(&mut self, address: &Address) {
        if let Some(n) = self.nodes.get_mut(address) {
            n.status = Status::Ready;
            self.ready.insert(address.clone());
        }
    }

    /// The next change that may start (marked running), or `None` if none may start now.
    pub fn dequeue(&mut self) -> Option<Address> {
        let next = self.ready.pop_first()?;
        if let Some(n) = self.nodes.get_mut(&next) {
            n.status = Status::Running;
        }
        self.running += 1;
        Some(next)
    }

    /// Records how a running change ended. A success may make dependents ready; a failure skips every
    /// transitive dependent, and those are returned with their root cause (`address`). Finishing an
    /// address that is not running does nothing.
    pub fn finish(&mut self, address: &Address, ok: bool) -> Vec<(Address, Address)> {
        let Some(node) = self.nodes.get_mut(address) else { return Vec::new() };
        if node.status != Status::Running {
            return Vec::new();
        }
        self.running -= 1;
        node.status = if ok { Status::Done } else { Status::Failed };
        let dependents = node.dependents.clone();
        if ok {
            for d in dependents {
                let now_ready = self.nodes.get_mut(&d).is_some_and(|n| {
                    n.pending.remove(address);
                    n.pending.is_empty() && n.status == Status::Waiting
                });
                if now_ready {
                    self.mark_ready(&d);
                }
            }
            return Vec::new();
        }
        let mut skipped = Vec::new();
        let mut stack = dependents;
        while let Some(d) = stack.pop() {
            let Some(n) = self.nodes.get_mut(&d) else { continue };
            // A dependent can only be waiting (it waits for us, transitively); one skipped by another
            // failure keeps its first root cause.
            if !matches!(n.status, Status::Waiting | Status::Ready) {
                continue;
            }
            n.status = Status::Skipped { because: address.clone() };
            self.ready.remove(&d);
            stack.extend(n.dependents.iter().cloned());
            skipped.push((d, address.clone()));
        }
        skipped.sort();
        skipped
    }

    /// How many changes are running.
    pub fn running(&self) -> usize {
        self.running
    }

    /// Whether a change is ready to start.
    pub fn has_ready(&self) -> bool {
        !self.ready.is_empty()
    }

    /// Whether every change has finished or been skipped.
    pub fn is_finished(&self) -> bool {
        self.nodes
            .values()
            .all(|n| matches!(n.status, Status::Done | Status::Failed | Status::Skipped { .. }))
    }

    /// Changes that never started and were not skipped (after an interrupt), in address order.
    pub fn not_started(&self) -> Vec<Address> {
        self.nodes
            .iter()
            .filter(|(_, n)| matches!(n.status, Status::Waiting | Status::Ready))
            .map(|(a, _)| a.clone())
            .collect()
    }

    /// The status of `address`, if it is in the plan.
    pub fn status(&self, address: &Address) -> Option<&Status> {
        self.nodes.get(address).map(|n| &n.status)
    }
}

/// A cycle among `nodes`, if any, as the addresses along it (each waits for the next; the last waits
/// for the first). Depth-first search with colours; iterative, so a long chain cannot overflow the
/// stack.
fn find_cycle(nodes: &BTreeMap<Address, Node>) -> Option<Vec<Address>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Colour {
        Unvisited,
        OnPath,
        Done,
    }
    let mut colour: BTreeMap<&Address, Colour> = nodes.keys().map(|a| (a, Colour::Unvisited)).collect();
    for start in nodes.keys() {
        if colour[start] != Colour::Unvisited {
            continue;
        }
        // The path from `start`, each entry with an iterator over the dependencies still to visit.
        let mut path: Vec<(&Address, std::collections::btree_set::Iter<'_, Address>)> =
            vec![(start, nodes[start].pending.iter())];
        colour.insert(start, Colour::OnPath);
        while let Some((_, deps)) = path.last_mut() {
            match deps.next() {
                Some(dep) => match colour[dep] {
                    Colour::Unvisited => {
                        colour.insert(dep, Colour::OnPath);
                        path.push((dep, nodes[dep].pending.iter()));
                    }
                    Colour::OnPath => {
                        let from = path.iter().position(|(a, _)| *a == dep).unwrap_or(0);
                        return Some(path[from..].iter().map(|(a, _)| (*a).clone()).collect());
                    }
                    Colour::Done => {}
                },
                None => {
                    if let Some((done, _)) = path.pop() {
                        colour.insert(done, Colour::Done);
                    }
                }
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Action;

    fn a(name: &str) -> Address {
        Address::container(name, 0)
    }

    /// A change of `name` waiting for `deps` (the queue looks at nothing else).
    fn change(name: &str, deps: &[&str]) -> Change {
        Change {
            address: a(name),
            action: Action::Create,
            reasons: vec![],
            before: None,
            after: None,
            waits_for: deps.iter().map(|d| a(d)).collect(),
            gate: None,
            rollout: None,
        }
    }

    fn drain(q: &mut Queue) -> Vec<Address> {
        std::iter::from_fn(|| q.dequeue()).collect()
    }

    #[test]
    fn a_chain_runs_one_step_at_a_time() {
        let mut q = Queue::new(&[change("c", &["b"]), change("b", &["a"]), change("a", &[])]).unwrap();
        assert_eq!(drain(&mut q), [a("a")]);
        assert_eq!(q.running(), 1);
        assert!(q.finish(&a("a"), true).is_empty());
        assert_eq!(drain(&mut q), [a("b")]);
        q.finish(&a("b"), true);
        assert_eq!(drain(&mut q), [a("c")]);
        assert!(!q.is_finished());
        q.finish(&a("c"), true);
        assert!(q.is_finished());
        assert_eq!(q.dequeue(), None);
    }

    #[test]
    fn a_join_waits_for_every_dependency() {
        let mut q = Queue::new(&[change("a", &[]), change("b", &[]), change("j", &["a", "b"])]).unwrap();
        assert_eq!(drain(&mut q), [a("a"), a("b")]);
        q.finish(&a("b"), true);
        assert_eq!(q.dequeue(), None, "j still waits for a");
        q.finish(&a("a"), true);
        assert_eq!(drain(&mut q), [a("j")]);
    }

    #[test]
    fn ready_changes_come_out_in_address_order() {
        let mut q = Queue::new(&[change("z", &[]), change("m", &[]), change("b", &[])]).unwrap();
        assert_eq!(drain(&mut q), [a("b"), a("m"), a("z")]);
    }

    #[test]
    fn dependencies_outside_the_plan_are_already_satisfied() {
        let mut q = Queue::new(&[change("relay", &["unchanged-master"])]).unwrap();
        assert_eq!(drain(&mut q), [a("relay")]);
    }

    #[test]
    fn a_failure_skips_transitive_dependents_with_the_root_cause() {
        // genesis → master → relay1, relay2 → (relay2 dependent) extra; other is independent.
        let mut q = Queue::new(&[
            change("genesis", &[]),
            change("master", &["genesis"]),
            change("relay1", &["master"]),
            change("relay2", &["master"]),
            change("extra", &["relay2"]),
            change("other", &[]),
        ])
        .unwrap();
        assert_eq!(drain(&mut q), [a("genesis"), a("other")]);
        q.finish(&a("genesis"), true);
        assert_eq!(drain(&mut q), [a("master")]);
        let skipped = q.finish(&a("master"), false);
        assert_eq!(
            skipped,
            [(a("extra"), a("master")), (a("relay1"), a("master")), (a("relay2"), a("master"))]
        );
        assert_eq!(q.status(&a("relay1")), Some(&Status::Skipped { because: a("master") }));
        assert!(!q.is_finished(), "the independent branch still runs");
        q.finish(&a("other"), true);
        assert!(q.is_finished());
        assert_eq!(q.status(&a("master")), Some(&Status::Failed));
        assert_eq!(q.status(&a("other")), Some(&Status::Done));
    }

    #[test]
    fn a_change_skipped_twice_keeps_its_first_root_cause() {
        let mut q = Queue::new(&[change("a", &[]), change("b", &[]), change("j", &["a", "b"])]).unwrap();
        drain(&mut q);
        assert_eq!(q.finish(&a("a"), false), [(a("j"), a("a"))]);
        assert!(q.finish(&a("b"), false).is_empty());
        assert_eq!(q.status(&a("j")), Some(&Status::Skipped { because: a("a") }));
    }

    #[test]
    fn finishing_something_not_running_changes_nothing() {
        let mut q = Queue::new(&[change("a", &[]), change("b", &["a"])]).unwrap();
        assert!(q.finish(&a("a"), false).is_empty(), "a was never dequeued");
        assert!(q.finish(&a("nope"), true).is_empty());
        assert_eq!(drain(&mut q), [a("a")]);
        q.finish(&a("a"), true);
        q.finish(&a("a"), false);
        assert_eq!(q.status(&a("a")), Some(&Status::Done));
    }

    #[test]
    fn a_cycle_is_rejected_with_its_members_named() {
        let err = Queue::new(&[
            change("ok", &[]),
            change("a", &["c", "ok"]),
            change("b", &["a"]),
            change("c", &["b"]),
        ])
        .unwrap_err();
        let QueueError::Cycle(members) = &err else { panic!("{err}") };
        let mut sorted = members.clone();
        sorted.sort();
        assert_eq!(sorted, [a("a"), a("b"), a("c")]);
        let text = err.to_string();
        assert!(text.contains("container.a[0] → container.c[0] → container.b[0] → container.a[0]"), "{text}");
    }

    #[test]
    fn a_change_waiting_for_itself_is_a_cycle() {
        assert_eq!(Queue::new(&[change("a", &["a"])]).unwrap_err(), QueueError::Cycle(vec![a("a")]));
    }

    #[test]
    fn duplicate_addresses_are_rejected() {
        assert_eq!(
            Queue::new(&[change("a", &[]), change("a", &[])]).unwrap_err(),
            QueueError::Duplicate(a("a"))
        );
    }

    #[test]
    fn not_started_lists_what_an_interrupt_left_behind() {
        let mut q = Queue::new(&[change("a", &[]), change("b", &["a"]), change("c", &[])]).unwrap();
        assert_eq!(q.dequeue(), Some(a("a")));
        q.finish(&a("a"), true);
        assert_eq!(q.not_started(), [a("b"), a("c")]);
    }

    #[test]
    fn a_long_chain_is_checked_without_deep_recursion() {
        let names: Vec<String> = (0..20_000).map(|i| format!("n{i:05}")).collect();
        let changes: Vec<Change> = names
            .iter()
            .enumerate()
            .map(|(i, n)| change(n, &if i == 0 { vec![] } else { vec![names[i - 1].as_str()] }))
            .collect();
        let mut q = Queue::new(&changes).unwrap();
        for n in &names {
            assert_eq!(q.dequeue().as_ref(), Some(&a(n)));
            q.finish(&a(n), true);
        }
        assert!(q.is_finished());
    }
}
