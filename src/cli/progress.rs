//! Progress while applying: bars on a terminal, one line per event elsewhere (logs, CI).

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use peerfleet::Prepared;
use peerfleet::core::Address;
use peerfleet::core::executor::{ApplyEvent, Reporter};

/// Draws apply progress on stderr.
pub struct Progress {
    bars: Option<Bars>,
}

struct Bars {
    multi: MultiProgress,
    total: ProgressBar,
    steps: Mutex<BTreeMap<Address, ProgressBar>>,
}

impl Progress {
    /// Bars when `terminal`, plain lines otherwise; `steps` is the number of changes.
    pub fn new(terminal: bool, steps: usize) -> Self {
        if !terminal {
            return Progress { bars: None };
        }
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
        let total = multi.add(ProgressBar::new(steps as u64));
        total.set_style(
            ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} steps {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        Progress { bars: Some(Bars { multi, total, steps: Mutex::new(BTreeMap::new()) }) }
    }

    /// The number of steps the bar counts to (`None` without bars).
    #[cfg(test)]
    pub fn len(&self) -> Option<u64> {
        self.bars.as_ref().and_then(|b| b.total.length())
    }

    /// Clears the bars.
    pub fn finish(&self) {
        if let Some(b) = &self.bars {
            b.total.finish_and_clear();
        }
    }
}

/// The apply's progress, created on the first event: by then the plan is confirmed, and its number of
/// changes (recorded by [`LazyProgress::confirming`]) is the bar's length.
pub struct LazyProgress {
    progress: OnceLock<Progress>,
    steps: AtomicUsize,
    json: bool,
}

impl LazyProgress {
    /// Nothing shown yet; `json`: plain lines, never bars.
    pub fn new(json: bool) -> Self {
        LazyProgress { progress: OnceLock::new(), steps: AtomicUsize::new(0), json }
    }

    /// Wraps the confirmation: the plan it is asked about is the plan that runs, so its number of
    /// changes is what the bar counts to.
    pub fn confirming<'a>(
        &'a self,
        mut confirm: impl FnMut(&Prepared) -> bool + Send + 'a,
    ) -> impl FnMut(&Prepared) -> bool + Send + 'a {
        move |prepared| {
            self.steps.store(prepared.planned.plan.changes.len(), Ordering::Relaxed);
            confirm(prepared)
        }
    }

    /// Clears the bars, if any were drawn.
    pub fn finish(&self) {
        if let Some(p) = self.progress.get() {
            p.finish();
        }
    }

    fn display(&self, terminal: bool) -> &Progress {
        self.progress.get_or_init(|| Progress::new(terminal, self.steps.load(Ordering::Relaxed)))
    }
}

impl Reporter for LazyProgress {
    fn event(&self, event: &ApplyEvent) {
        self.display(std::io::stderr().is_terminal() && !self.json).event(event);
    }
}

impl Reporter for Progress {
    fn event(&self, event: &ApplyEvent) {
        let Some(b) = &self.bars else {
            eprintln!("{event}");
            return;
        };
        let mut steps = b.steps.lock().unwrap_or_else(|e| e.into_inner());
        match event {
            ApplyEvent::Started { address, action } => {
                let bar = b.multi.add(ProgressBar::new_spinner());
                bar.set_style(
                    ProgressStyle::with_template("  {spinner} {msg} ({elapsed})")
                        .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                );
                bar.enable_steady_tick(Duration::from_millis(120));
                bar.set_message(format!("{} {address}", action.symbol()));
                steps.insert(address.clone(), bar);
            }
            ApplyEvent::Retrying { address, .. } | ApplyEvent::Waiting { address, .. } => {
                if let Some(bar) = steps.get(address) {
                    bar.set_message(event.to_string());
                }
            }
            ApplyEvent::Finished { address, .. } | ApplyEvent::Failed { address, .. } => {
                if let Some(bar) = steps.remove(address) {
                    bar.finish_and_clear();
                    b.multi.remove(&bar);
                }
                b.total.inc(1);
                let mark = if matches!(event, ApplyEvent::Failed { .. }) { "✗" } else { "✓" };
                let _ = b.multi.println(format!("  {mark} {event}"));
            }
            ApplyEvent::Skipped { .. } => {
                b.total.inc(1);
                let _ = b.multi.println(format!("  - {event}"));
            }
            ApplyEvent::Stopping { .. } => {
                b.total.set_message("(stopping)");
                let _ = b.multi.println(format!("  ! {event}"));
            }
            _ => {
                let _ = b.multi.println(format!("  {event}"));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use peerfleet::core::actual::ActualState;
    use peerfleet::core::executor::ApplyEvent;
    use peerfleet::core::plan::{PlanOptions, Remembered, plan};
    use peerfleet::core::state::State;

    #[test]
    fn the_bar_counts_to_the_number_of_steps_of_the_confirmed_plan() {
        // The local nine-region network from nothing: 9 nodes, genesis, master and 9 relays.
        let spec = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/nine_regions_local.toml");
        let network = peerfleet::core::spec::load(spec.as_ref()).unwrap();
        let actual = ActualState::default();
        let planned = plan(&network, &actual, &Remembered::default(), &PlanOptions::default()).unwrap();
        let changes = planned.plan.changes.len();
        assert_eq!(changes, 20, "the nine-region plan's steps");
        let first = planned.plan.changes[0].address.clone();
        let prepared = Prepared { planned, state: State::new(), actual };

        let progress = LazyProgress::new(false);
        let mut confirm = progress.confirming(|_: &Prepared| true);
        assert!(confirm(&prepared));
        // The first event creates the display, as the executor's first `Started` does.
        let shown = progress.display(true);
        shown.event(&ApplyEvent::Started { address: first, action: prepared.planned.plan.changes[0].action });
        assert_eq!(shown.len(), Some(20), "not `1/0 steps`");
        progress.finish();
    }
}
