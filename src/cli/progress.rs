//! Progress while applying: bars on a terminal, one line per event elsewhere (logs, CI).

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
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

/// Creates the progress display on the first event, once the plan is confirmed; `steps` holds the
/// confirmed plan's number of changes by then.
pub struct LazyProgress<'a> {
    /// The display, once created.
    pub progress: &'a OnceLock<Progress>,
    /// The number of steps of the plan being applied.
    pub steps: &'a AtomicUsize,
    /// JSON output: no bars.
    pub json: bool,
}

impl LazyProgress<'_> {
    fn display(&self, terminal: bool) -> &Progress {
        self.progress.get_or_init(|| Progress::new(terminal, self.steps.load(Ordering::Relaxed)))
    }
}

impl Reporter for LazyProgress<'_> {
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

    #[test]
    fn the_bar_counts_to_the_number_of_steps_of_the_confirmed_plan() {
        let (progress, steps) = (OnceLock::new(), AtomicUsize::new(0));
        let lazy = LazyProgress { progress: &progress, steps: &steps, json: false };
        // What the confirmation step records before the first event arrives.
        steps.store(9, Ordering::Relaxed);
        let shown = lazy.display(true);
        assert_eq!(shown.len(), Some(9), "not `9/0 steps`");
        shown.finish();
    }
}
