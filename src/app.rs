//! Wiring for `lakestream run`: one reader per source and one commit loop per pipeline,
//! the MySQL sync, maintenance schedules and the status page, all on one task tracker;
//! signals; fail-fast.

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

use crate::config::{Config, ConfigError};
use crate::http::{Observed, ObservedPipeline};
use crate::metrics::Snapshot;
use crate::pipeline::{Pipeline, RunOptions};
use crate::sync::SyncTask;
use crate::{Error, Result};

/// How long `run --until-caught-up` keeps retrying the last MySQL sync.
const FINAL_SYNC_PATIENCE: std::time::Duration = std::time::Duration::from_secs(120);

/// Run `selected` pipelines (all when empty) until a signal, or until caught up.
/// The first SIGINT/SIGTERM lets every pipeline finish its batch in flight; a second
/// one exits at once (commits are atomic, so that is safe too, just less tidy).
pub async fn run(config: Config, selected: &[String], opts: RunOptions) -> Result<Vec<Snapshot>> {
    let names: Vec<String> = if selected.is_empty() {
        config.pipelines.keys().cloned().collect()
    } else {
        selected.to_vec()
    };
    if names.is_empty() {
        return Err(ConfigError::key("pipelines", "no pipeline is configured").into());
    }
    for name in &names {
        if !config.pipelines.contains_key(name) {
            let known: Vec<&String> = config.pipelines.keys().collect();
            return Err(ConfigError::key(
                format!("pipelines.{name}"),
                format!("no such pipeline (known: {known:?})"),
            )
            .into());
        }
    }
    crate::sink::check_conditional_put(&crate::storage::Storage::from_config(&config)).await?;

    // One shape for every long-lived task: spawned on `tasks`, stopped by a token.
    // `shutdown` (first signal, or a failed pipeline) stops everything, pipelines
    // finishing their batch in flight; `background` also stops the helpers once the
    // pipelines are done (the mirror then makes its final pass).
    let shutdown = CancellationToken::new();
    let background = shutdown.child_token();
    let tasks = TaskTracker::new();
    tokio::spawn(watch_signals(shutdown.clone()));

    let sync_task = SyncTask::new(&config)
        .filter(|t| t.has_targets() && config.mysql.as_ref().is_some_and(|m| m.enabled));
    let sync_metrics = sync_task.as_ref().map(|t| t.metrics.clone());
    let sync = sync_task.map(|task| {
        // A backfill ends with the mirror caught up too; a signal just stops it.
        let final_pass = opts.until_caught_up.then_some(FINAL_SYNC_PATIENCE);
        tasks.spawn(task.run(background.clone(), final_pass))
    });

    let tables: Vec<String> = names
        .iter()
        .flat_map(|n| {
            let p = &config.pipelines[n];
            [p.table.clone(), p.dead_letter_table()]
        })
        .collect();
    crate::maintenance::spawn_schedules(&config, &tables, &tasks, &background);

    let pipelines: Vec<Pipeline> = names
        .iter()
        .map(|name| Pipeline::new(name, config.clone()))
        .collect();
    if config.http.enabled {
        serve_status(
            &config,
            &names,
            &pipelines,
            sync_metrics,
            &tasks,
            &background,
        )
        .await;
    }
    // One reader per source: its pipelines' commit loops and the reader itself all run
    // on `running`; the first to fail stops the rest.
    let mut running: JoinSet<(String, Result<Option<Snapshot>>)> = JoinSet::new();
    let mut first_error = None;
    let mut by_name: std::collections::HashMap<String, Pipeline> =
        names.iter().cloned().zip(pipelines).collect();
    for group in crate::pipeline::reader_groups(&config, &names) {
        let members: Vec<Pipeline> = group.iter().filter_map(|n| by_name.remove(n)).collect();
        let started = match crate::pipeline::start_source(members, opts, &shutdown).await {
            Ok(started) => started,
            Err(e) => {
                error!(pipelines = ?group, error = %e, "cannot start; stopping the others");
                shutdown.cancel();
                first_error = Some(e);
                break;
            }
        };
        for (name, run) in started.pipelines {
            running.spawn(tasks.track_future(async move { (name, run.await.map(Some)) }));
        }
        let reader = format!("reader of {group:?}");
        running.spawn(
            tasks.track_future(async move { (reader, started.reader.await.map(|()| None)) }),
        );
    }
    let mut summaries = Vec::new();
    while let Some(joined) = running.join_next().await {
        match joined {
            Ok((_, Ok(summary))) => summaries.extend(summary),
            Ok((name, Err(e))) => {
                error!(task = %name, error = %e, "failed; stopping the others");
                shutdown.cancel();
                first_error.get_or_insert(e);
            }
            Err(e) => {
                shutdown.cancel();
                first_error.get_or_insert(Error::Task {
                    task: "pipeline".into(),
                    cause: e,
                });
            }
        }
    }
    background.cancel();
    tasks.close();
    if let Some(sync) = sync {
        match sync.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                first_error.get_or_insert(e.into());
            }
            Err(e) => {
                first_error.get_or_insert(Error::Task {
                    task: "mysql sync".into(),
                    cause: e,
                });
            }
        }
    }
    tasks.wait().await;
    match first_error {
        Some(e) => Err(e),
        None => Ok(summaries),
    }
}

/// Start the status page and its table refresher on `tasks`; a port that is taken is a
/// warning, not a reason to stop ingesting (several processes may share a host).
async fn serve_status(
    config: &Config,
    names: &[String],
    pipelines: &[Pipeline],
    sync: Option<std::sync::Arc<crate::sync::SyncMetrics>>,
    tasks: &TaskTracker,
    stop: &CancellationToken,
) {
    let observed = Observed {
        pipelines: names
            .iter()
            .zip(pipelines)
            .map(|(name, p)| {
                let pc = &config.pipelines[name];
                ObservedPipeline {
                    name: name.clone(),
                    table: pc.table.clone(),
                    dead_letter_table: pc.dead_letter_table(),
                    metrics: p.metrics(),
                }
            })
            .collect(),
        sync,
        storage: crate::storage::Storage::from_config(config),
        max_ready_lag: config.http.max_ready_lag,
        started: chrono::Utc::now(),
        tables: Default::default(),
    };
    let observed = std::sync::Arc::new(observed);
    match crate::http::Server::bind(&config.http.listen, observed.clone()).await {
        Ok(server) => {
            tasks.spawn(observed.refresh_tables(stop.clone()));
            tasks.spawn(server.run(stop.clone()));
        }
        Err(e) => warn!(error = %e, "status page not served; set http.listen to a free address"),
    }
}

pub(crate) async fn watch_signals(shutdown: CancellationToken) {
    let mut count = 0;
    loop {
        if wait_for_signal().await.is_err() {
            warn!("cannot listen for signals; stop with SIGKILL");
            return;
        }
        count += 1;
        if count == 1 {
            info!("shutting down: finishing batches in flight (signal again to exit at once)");
            shutdown.cancel();
        } else {
            error!("second signal: exiting without waiting");
            std::process::exit(130);
        }
    }
}

async fn wait_for_signal() -> std::io::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}
