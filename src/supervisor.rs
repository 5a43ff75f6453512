//! The tasks of a run and how they stop: one owner for the readers, commit loops and
//! helpers, the first error, and the signals. The first SIGINT/SIGTERM drains (every
//! pipeline finishes its batch in flight); a second one, or the drain outliving its
//! grace period, exits at once (commits are atomic, so that is safe too, just less tidy).

use std::future::Future;
use std::time::Duration;

use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

use crate::metrics::Snapshot;
use crate::{Error, Result};

/// The exit code of a run stopped without draining (as a shell reports SIGINT).
const ABORTED: i32 = 130;

/// A task the run waits for: a reader (no summary) or a commit loop (its counters).
type Outcome = (String, Result<Option<Snapshot>>);

pub struct Supervisor {
    critical: JoinSet<Outcome>,
    helpers: TaskTracker,
    /// The first signal or the first failure: pipelines finish their batch and stop.
    shutdown: CancellationToken,
    /// Helpers (mirror, maintenance, status page) stop once the pipelines are done.
    background: CancellationToken,
    /// The run is over: the signal watcher stops.
    done: CancellationToken,
    first_error: Option<Error>,
    summaries: Vec<Snapshot>,
}

impl Supervisor {
    /// A supervisor that drains on the first signal and exits if draining takes longer
    /// than `grace`.
    pub fn new(grace: Duration) -> Self {
        let (shutdown, done) = (CancellationToken::new(), CancellationToken::new());
        let helpers = TaskTracker::new();
        // Created before anything starts, so no signal is missed in between.
        match Signals::listen() {
            Ok(signals) => {
                helpers.spawn(signals.watch(shutdown.clone(), done.clone(), grace));
            }
            Err(e) => {
                warn!(error = %crate::report::Report(&e), "cannot listen for signals; stop with SIGKILL")
            }
        }
        Self {
            critical: JoinSet::new(),
            helpers,
            background: shutdown.child_token(),
            shutdown,
            done,
            first_error: None,
            summaries: Vec::new(),
        }
    }

    /// Cancelled on the first signal or failure.
    pub fn shutdown(&self) -> &CancellationToken {
        &self.shutdown
    }

    /// Cancelled once the pipelines are done (and on shutdown).
    pub fn background(&self) -> &CancellationToken {
        &self.background
    }

    /// Start a task the run waits for; its failure stops every other.
    pub fn spawn<F>(&mut self, name: String, task: F)
    where
        F: Future<Output = Result<Option<Snapshot>>> + Send + 'static,
    {
        self.critical
            .spawn(self.helpers.track_future(async move { (name, task.await) }));
    }

    /// Start a helper; it stops on `background()` and the run waits for it at the end.
    pub fn spawn_helper<F>(&self, task: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.helpers.spawn(task)
    }

    /// The tracker helpers run on (maintenance schedules spawn theirs there).
    pub fn helpers(&self) -> &TaskTracker {
        &self.helpers
    }

    /// `task` failed: stop everything, keep the first error.
    pub fn fail(&mut self, task: &str, e: Error) {
        error!(task, error = %crate::report::Report(&e), "failed; stopping the others");
        self.shutdown.cancel();
        self.first_error.get_or_insert(e);
    }

    /// Whether tasks the run waits for are still running.
    pub fn busy(&self) -> bool {
        !self.critical.is_empty()
    }

    /// Wait for the next task to end and take its outcome.
    pub async fn join_next(&mut self) {
        let Some(joined) = self.critical.join_next().await else {
            return;
        };
        match joined {
            Ok((_, Ok(summary))) => self.summaries.extend(summary),
            Ok((name, Err(e))) => self.fail(&name, e),
            Err(cause) => self.fail(
                "pipeline",
                Error::Task {
                    task: "pipeline".into(),
                    cause,
                },
            ),
        }
    }

    /// The pipelines are done: stop the helpers, wait for `last` (the mirror's final
    /// pass) and every helper, and return the counters or the first error.
    pub async fn finish(
        mut self,
        last: Option<(&str, JoinHandle<Result<()>>)>,
    ) -> Result<Vec<Snapshot>> {
        while self.busy() {
            self.join_next().await;
        }
        self.background.cancel();
        self.helpers.close();
        if let Some((task, handle)) = last {
            match handle.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    self.first_error.get_or_insert(e);
                }
                Err(cause) => {
                    self.first_error.get_or_insert(Error::Task {
                        task: task.into(),
                        cause,
                    });
                }
            }
        }
        self.done.cancel();
        self.helpers.wait().await;
        match self.first_error {
            Some(e) => Err(e),
            None => Ok(self.summaries),
        }
    }
}

/// SIGINT and SIGTERM, listened to once for the whole run.
pub struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    pub fn listen() -> std::io::Result<Self> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Self {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    async fn next(&mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
    }

    /// Cancel `shutdown` on the first signal; once shutting down (a signal or a
    /// failure), exit on a second signal or when the drain outlives `grace`. Ends when
    /// `done` is cancelled.
    pub async fn watch(
        mut self,
        shutdown: CancellationToken,
        done: CancellationToken,
        grace: Duration,
    ) {
        tokio::select! {
            () = self.next() => {
                info!(grace = ?grace, "shutting down: finishing batches in flight (signal again to exit at once)");
                shutdown.cancel();
            }
            () = shutdown.cancelled() => {}
            () = done.cancelled() => return,
        }
        tokio::select! {
            () = self.next() => error!("second signal: exiting without waiting"),
            () = tokio::time::sleep(grace) => error!(grace = ?grace, "still draining after the grace period: exiting without waiting"),
            () = done.cancelled() => return,
        }
        std::process::exit(ABORTED);
    }
}
