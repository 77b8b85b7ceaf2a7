//! Progress while applying: bars on a terminal, one line per event elsewhere (logs, CI).

use std::collections::BTreeMap;
use std::sync::Mutex;
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

    /// Clears the bars.
    pub fn finish(&self) {
        if let Some(b) = &self.bars {
            b.total.finish_and_clear();
        }
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
