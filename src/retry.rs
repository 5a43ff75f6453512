//! Retrying: what an error says about trying again, and the one backoff every retry
//! loop uses (exponential, capped and jittered, so writers that collided do not collide
//! again in step).

use std::time::Duration;

use deltalake::kernel::transaction::TransactionError;
use deltalake::DeltaTableError;

/// What a failed attempt says about trying again; each loop decides how long it keeps
/// trying, the error says which kind of failure it was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Another writer committed first: re-read the table and try again at once.
    Conflict,
    /// Possibly transient (storage, network): try again after a backoff.
    Later,
    /// Trying again cannot help.
    Never,
}

/// Errors that know whether trying again can help.
pub trait RetryHint {
    fn retry(&self) -> Retry;
}

impl RetryHint for DeltaTableError {
    /// A lost commit race is a conflict; anything else may be the store's hiccup.
    fn retry(&self) -> Retry {
        let conflict = matches!(
            self,
            DeltaTableError::VersionAlreadyExists(_)
                | DeltaTableError::Transaction {
                    source: TransactionError::MaxCommitAttempts(_)
                        | TransactionError::CommitConflict(_)
                        | TransactionError::VersionAlreadyExists(_)
                }
        );
        match conflict {
            true => Retry::Conflict,
            false => Retry::Later,
        }
    }
}

/// Waits that double from `initial` up to `max`, each one jittered.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    next: Duration,
    max: Duration,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            next: initial,
            max,
        }
    }

    /// The wait before the next attempt: between half and all of the current step.
    pub fn next_wait(&mut self) -> Duration {
        use rand::Rng as _;
        let wait = self.next.mul_f64(rand::thread_rng().gen_range(0.5..=1.0));
        self.next = (self.next * 2).min(self.max);
        wait
    }

    /// Start again from the initial wait (after a success).
    pub fn reset(&mut self) {
        self.next = self.initial;
    }

    /// The step the next wait is drawn from (for "retrying in N s" messages).
    pub fn current(&self) -> Duration {
        self.next
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap_with_jitter() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(350));
        let waits: Vec<Duration> = (0..5).map(|_| b.next_wait()).collect();
        let steps = [100, 200, 350, 350, 350].map(Duration::from_millis);
        for (wait, step) in waits.iter().zip(steps) {
            assert!(
                *wait >= step / 2 && *wait <= step,
                "{wait:?} for step {step:?}"
            );
        }
        b.reset();
        assert_eq!(b.current(), Duration::from_millis(100));
    }
}
