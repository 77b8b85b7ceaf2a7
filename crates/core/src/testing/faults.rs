//! Faults armed on the test world: which call they strike, when, and how often.

use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::{Op, TestWorld, World};
use crate::address::Address;
use crate::provider::ErrorKind;

/// When an armed fault strikes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Strike {
    /// Before the call does anything.
    Before,
    /// After the call took effect: the response is lost.
    After,
    /// After the call took effect: the call never returns.
    Hang,
}

/// A fault armed on the test world, consumed as matching calls hit it.
#[derive(Debug, Clone)]
pub(super) struct Fault {
    op: Op,
    address: Option<Address>,
    remaining: u32,
    kind: ErrorKind,
    when: Strike,
}

impl World {
    /// Consumes the first armed fault matching the call, if any; else rolls the random faults.
    pub(super) fn take_fault(
        &mut self,
        op: Op,
        address: Option<&Address>,
        when: Strike,
    ) -> Option<ErrorKind> {
        let armed = self.take_armed(op, address, when);
        armed.or_else(|| self.roll(op, when))
    }

    /// A random fault for a call that changes something (listings stand for provider clients that
    /// retry on their own, and are spared).
    fn roll(&mut self, op: Op, when: Strike) -> Option<ErrorKind> {
        let (rng, rate) = self.random.as_mut()?;
        if !op.changes_something() || when == Strike::Hang {
            return None;
        }
        // Half the rate before acting, half after (a lost response), so a call fails at `rate`.
        let hit = rng.random::<f64>() < *rate / 2.0;
        let pick = rng.random_range(0..3u8);
        hit.then(|| match (when, pick) {
            (Strike::Before, 0) => ErrorKind::Throttled { retry_after: Some(Duration::from_millis(5)) },
            _ => ErrorKind::Transient,
        })
    }

    fn take_armed(&mut self, op: Op, address: Option<&Address>, when: Strike) -> Option<ErrorKind> {
        let i = self.faults.iter().position(|f| {
            f.op == op
                && f.when == when
                && f.remaining > 0
                && (f.address.is_none() || f.address.as_ref() == address)
        })?;
        let fault = &mut self.faults[i];
        fault.remaining -= 1;
        let kind = fault.kind.clone();
        if fault.remaining == 0 {
            self.faults.remove(i);
        }
        Some(kind)
    }
}

impl TestWorld {
    fn arm(&self, op: Op, address: Option<Address>, times: u32, kind: ErrorKind, when: Strike) {
        self.lock().faults.push(Fault { op, address, remaining: times, kind, when });
    }

    /// The next `times` calls of `op` (for `address`, or for any address when `None`) fail with `kind`
    /// before doing anything.
    pub fn fail(&self, op: Op, address: Option<Address>, times: u32, kind: ErrorKind) {
        self.arm(op, address, times, kind, Strike::Before);
    }

    /// The next `times` calls of `op` are throttled, with `retry_after` as the provider's hint.
    pub fn throttle(&self, op: Op, address: Option<Address>, times: u32, retry_after: Option<Duration>) {
        self.arm(op, address, times, ErrorKind::Throttled { retry_after }, Strike::Before);
    }

    /// The next `times` calls of `op` take effect, then fail with `kind` (a response lost on the way).
    pub fn lose_response(&self, op: Op, address: Option<Address>, times: u32, kind: ErrorKind) {
        self.arm(op, address, times, kind, Strike::After);
    }

    /// From now on, each call that changes something fails with probability `rate`, from a PRNG
    /// seeded with `seed` (the same seed and calls give the same faults): before acting (throttled,
    /// or a transient error such as a timeout or a reset connection) or after acting (the response
    /// is lost). Armed faults strike first.
    pub fn fail_randomly(&self, seed: u64, rate: f64) {
        self.lock().random = Some((StdRng::seed_from_u64(seed), rate));
    }

    /// The next call of `op` for `address` takes effect and never returns.
    pub fn crash_after(&self, op: Op, address: Address) {
        self.arm(op, Some(address), 1, ErrorKind::Transient, Strike::Hang);
    }
}
