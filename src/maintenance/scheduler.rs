//! Maintenance inside `run`: one loop per task and table, so a run never overlaps
//! itself (the next one is planned only when the last has finished; a run longer than
//! the interval skips the ticks it missed instead of queueing them).

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use super::{compact, compact_options, vacuum, vacuum_options};
use crate::config::{Plan, Schedule};
use crate::metrics::metrics;
use crate::sink::Contention;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Task {
    Compact,
    Vacuum,
}

impl Task {
    fn name(self) -> &'static str {
        match self {
            Self::Compact => "compact",
            Self::Vacuum => "vacuum",
        }
    }
}

/// How recent an ingestion conflict makes a scheduled run yield, and how many ticks in a
/// row it may yield.
const YIELD_WINDOW: std::time::Duration = std::time::Duration::from_secs(10);
const MAX_YIELDS: u32 = 3;

/// Start the compaction and vacuum schedules of `tables` on `tasks`; they stop on
/// `shutdown` (a run in progress finishes first).
pub fn spawn_schedules(
    config: &Plan,
    tables: &[String],
    tasks: &TaskTracker,
    shutdown: &CancellationToken,
    contention: &Contention,
) {
    if !config.maintenance.enabled {
        return;
    }
    let config = Arc::new(config.clone());
    for table in tables {
        let overrides = config.maintenance.table(table);
        let plans = [
            (Task::Compact, overrides.compact),
            (Task::Vacuum, overrides.vacuum),
        ];
        for (task, schedule) in plans {
            if schedule != Schedule::Off {
                let (config, table) = (config.clone(), table.clone());
                tasks.spawn(run_schedule(
                    config,
                    table,
                    (task, schedule),
                    shutdown.clone(),
                    contention.clone(),
                ));
            }
        }
    }
}

async fn run_schedule(
    config: Arc<Plan>,
    table: String,
    (task, schedule): (Task, Schedule),
    shutdown: CancellationToken,
    contention: Contention,
) {
    debug!(table = %table, task = ?task, schedule = %schedule, "maintenance scheduled");
    let storage = config.storage.storage.clone();
    let mut yielded = 0;
    while let Some(wait) = schedule.wait(chrono::Utc::now()) {
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = shutdown.cancelled() => return,
        }
        // Ingestion comes first: after it lost a commit, this run waits for the next tick
        // (at most MAX_YIELDS in a row: several writers on one table conflict all the
        // time, and maintenance must still happen).
        if yielded < MAX_YIELDS && contention.recent(&table, YIELD_WINDOW) {
            yielded += 1;
            metrics().maintenance_run(task.name(), "skipped");
            debug!(table = %table, task = ?task, "ingestion just lost a commit; this run waits for the next tick");
            continue;
        }
        yielded = 0;
        // A run in progress is let finish: its commit is atomic either way, and
        // stopping between the vacuum's delete and its END commit is harmless too.
        match task {
            Task::Compact => {
                let opts = compact_options(&config, &table, None);
                let result = compact(&storage, &table, &opts).await;
                let outcome = match &result {
                    Ok(r) if r.version.is_some() => "ok",
                    Ok(_) => "skipped",
                    Err(_) => "failed",
                };
                metrics().maintenance_run(task.name(), outcome);
                match result {
                    Ok(r) if r.version.is_some() => info!(
                        table = %table, version = r.version, files_before = r.before.files,
                        files_after = r.after.files, attempts = r.attempts,
                        seconds = format!("{:.2}", r.seconds), "compacted"
                    ),
                    Ok(r) => {
                        debug!(table = %table, reason = r.skipped.as_deref(), "compaction skipped")
                    }
                    Err(e) => {
                        warn!(table = %table, error = %crate::report::Report(&e), "compaction failed; next try on schedule")
                    }
                }
            }
            Task::Vacuum => {
                let opts = vacuum_options(&config, None, false, false);
                match vacuum(&storage, &table, &opts).await {
                    Ok(r) => {
                        let m = metrics();
                        m.maintenance_run(
                            "vacuum",
                            if r.files.is_empty() { "skipped" } else { "ok" },
                        );
                        m.vacuum_files_deleted.inc_by(r.files.len() as u64);
                        info!(table = %table, files_deleted = r.files.len(), version = r.version, "vacuumed")
                    }
                    Err(e) => {
                        metrics().maintenance_run("vacuum", "failed");
                        warn!(table = %table, error = %crate::report::Report(&e), "vacuum failed; next try on schedule")
                    }
                }
            }
        }
    }
}
