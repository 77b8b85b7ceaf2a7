//! Bounded polling: every wait in this crate ends by itself.

use std::time::Duration;

use tokio::time::Instant;

use crate::settings::Waits;

/// Poll intervals doubling from `first_poll` to `max_poll`, until a deadline.
#[derive(Debug)]
pub(crate) struct Backoff {
    next: Duration,
    max: Duration,
    deadline: Instant,
}

impl Backoff {
    /// A backoff that gives up `bound` from now.
    pub fn new(waits: &Waits, bound: Duration) -> Self {
        Backoff { next: waits.first_poll, max: waits.max_poll, deadline: Instant::now() + bound }
    }

    /// Sleeps until the next poll; `false` (without sleeping) once the deadline has passed.
    pub async fn wait(&mut self) -> bool {
        let now = Instant::now();
        if now >= self.deadline {
            return false;
        }
        tokio::time::sleep(self.next.min(self.deadline - now)).await;
        self.next = (self.next * 2).min(self.max);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn backoff_doubles_up_to_the_cap_and_stops_at_the_bound() {
        let waits = Waits {
            first_poll: Duration::from_secs(1),
            max_poll: Duration::from_secs(4),
            ..Waits::default()
        };
        let start = Instant::now();
        let mut b = Backoff::new(&waits, Duration::from_secs(10));
        let mut at = Vec::new();
        while b.wait().await {
            at.push((Instant::now() - start).as_secs());
        }
        // 1, +2, +4, +4 (capped), then the last sleep is cut short at the 10 s bound.
        assert_eq!(at, vec![1, 3, 7, 10]);
    }
}
