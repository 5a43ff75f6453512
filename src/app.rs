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
    // Before any table is created or touched: a wrong password or certificate stops here,
    // saying what to check.
    crate::source::Connection::new(&config.kafka)?
        .checked()
        .await?;
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

    // Tables named per topic are scheduled as their topics start.
    let tables: Vec<String> = names
        .iter()
        .flat_map(|n| {
            let p = &config.pipelines[n];
            [p.table.clone(), p.dead_letter_table()]
        })
        .filter(|t| !t.contains(crate::config::TOPIC))
        .collect();
    // Sinks report lost commits here; the maintenance schedules yield to them.
    let contention = crate::sink::Contention::default();
    crate::maintenance::spawn_schedules(&config, &tables, &tasks, &background, &contention);

    let pipelines: Vec<Pipeline> = names
        .iter()
        .map(|name| Pipeline::new(name, config.clone(), contention.clone()))
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
    // One reader per source (per topic of a multi-topic source): its pipelines' commit
    // loops and the reader itself all run on `running`; the first to fail stops the rest.
    let mut run = Running {
        set: JoinSet::new(),
        topics: Default::default(),
        tasks: &tasks,
        background: &background,
        shutdown: &shutdown,
        opts,
    };
    let mut first_error = None;
    let mut by_name: std::collections::HashMap<String, Pipeline> =
        names.iter().cloned().zip(pipelines).collect();
    // Pipelines of pattern sources, by source, for topics that appear later.
    let mut templates: std::collections::HashMap<String, Vec<Pipeline>> = Default::default();
    let (found_tx, found_rx) = tokio::sync::mpsc::channel::<(String, String)>(16);
    for group in crate::pipeline::reader_groups(&config, &names) {
        let mut members: Vec<Pipeline> = group.iter().filter_map(|n| by_name.remove(n)).collect();
        let source_name = config.pipelines[&group[0]].source.clone();
        let source = &config.sources[&source_name];
        let started = if source.is_multi_topic() {
            run.start_topics(&config, &source_name, &members).await
        } else {
            let single = members.drain(..).map(|p| (p, false)).collect();
            run.start(single).await.map(|()| Vec::new())
        };
        match started {
            Ok(topics) if source.topic_pattern.is_some() && !opts.until_caught_up => {
                tokio::spawn(watch_topics(
                    config.clone(),
                    source_name.clone(),
                    topics,
                    found_tx.clone(),
                    shutdown.clone(),
                ));
                templates.insert(source_name, members);
            }
            Ok(_) => {}
            Err(e) => {
                error!(pipelines = ?group, error = %e, "cannot start; stopping the others");
                shutdown.cancel();
                first_error = Some(e);
                break;
            }
        }
    }
    drop(found_tx);
    let mut found = Some(found_rx);
    let mut summaries = Vec::new();
    loop {
        tokio::select! {
            Some(joined) = run.set.join_next(), if !run.set.is_empty() => match joined {
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
            },
            topic = async { found.as_mut()?.recv().await }, if found.is_some() => {
                let Some((source, topic)) = topic else {
                    found = None;
                    continue;
                };
                let members = templates.get(&source).map(Vec::as_slice).unwrap_or_default();
                let known = run.topics.get(&source).into_iter().flatten();
                let collisions = config.topic_collisions(&source, known.chain([&topic]));
                if let Some((table, others)) = collisions.into_iter().find(|(_, t)| t.contains(&topic)) {
                    refuse(members, &source, &topic, &table, &others);
                    continue;
                }
                info!(source = %source, topic = %topic, "new topic: starting its pipelines");
                let started = run.start_topic(&source, &topic, members).await;
                if let Err(e) = started {
                    error!(topic = %topic, error = %e, "cannot start; stopping the others");
                    shutdown.cancel();
                    first_error.get_or_insert(e);
                }
            }
            else => break,
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

/// Where readers and commit loops run, and what starting one needs.
struct Running<'a> {
    set: JoinSet<(String, Result<Option<Snapshot>>)>,
    /// The topics started so far, by multi-topic source.
    topics: std::collections::HashMap<String, std::collections::BTreeSet<String>>,
    tasks: &'a TaskTracker,
    background: &'a CancellationToken,
    shutdown: &'a CancellationToken,
    opts: RunOptions,
}

impl Running<'_> {
    /// Start one reader for `members` (of one source and topic); with `per_topic`, the
    /// maintenance of their per-topic tables too.
    async fn start(&mut self, members: Vec<(Pipeline, bool)>) -> Result<()> {
        let names: Vec<String> = members.iter().map(|(p, _)| p.name().to_string()).collect();
        for (p, per_topic) in &members {
            if *per_topic {
                let config = p.config();
                let tables: Vec<String> = p
                    .tables()
                    .into_iter()
                    .filter(|t| !config.tables().contains_key(t))
                    .collect();
                crate::maintenance::spawn_schedules(
                    config,
                    &tables,
                    self.tasks,
                    self.background,
                    p.contention(),
                );
            }
        }
        let pipelines = members.into_iter().map(|(p, _)| p).collect();
        let started = crate::pipeline::start_source(pipelines, self.opts, self.shutdown).await?;
        for (name, run) in started.pipelines {
            self.set.spawn(
                self.tasks
                    .track_future(async move { (name, run.await.map(Some)) }),
            );
        }
        let reader = format!("reader of {names:?}");
        self.set.spawn(
            self.tasks
                .track_future(async move { (reader, started.reader.await.map(|()| None)) }),
        );
        Ok(())
    }

    /// Start `members` on every topic their source reads now; returns the topics.
    async fn start_topics(
        &mut self,
        config: &Config,
        source: &str,
        members: &[Pipeline],
    ) -> Result<Vec<String>> {
        let topics = crate::pipeline::source_topics(config, source).await?;
        if topics.is_empty() {
            warn!(
                source,
                "no topic matches yet; waiting for one to be created"
            );
        }
        // Of topics that would share a per-topic table, the one that has been writing
        // it goes on (or, for a new table, the first by name); the others are refused.
        let storage = crate::storage::Storage::from_config(config);
        let mut refused = std::collections::BTreeSet::new();
        for (table, group) in config.topic_collisions(source, &topics) {
            let writer = crate::sink::last_topic(&storage, &table).await?;
            let keep = writer
                .filter(|w| group.contains(w))
                .unwrap_or_else(|| group[0].clone());
            for topic in group.iter().filter(|t| **t != keep) {
                refuse(members, source, topic, &table, &group);
                refused.insert(topic.clone());
            }
        }
        for topic in topics.iter().filter(|t| !refused.contains(*t)) {
            info!(source, topic = %topic, "starting the pipelines of a topic");
            self.start_topic(source, topic, members).await?;
        }
        Ok(topics)
    }

    /// Start `members` on `topic` of their multi-topic source.
    async fn start_topic(&mut self, source: &str, topic: &str, members: &[Pipeline]) -> Result<()> {
        self.start(members.iter().map(|p| (p.for_topic(topic), true)).collect())
            .await?;
        self.topics
            .entry(source.to_string())
            .or_default()
            .insert(topic.to_string());
        Ok(())
    }
}

/// Leave `topic` unread, loudly: its per-topic table `table` is also another topic's
/// (`topics` all name it). The other topics go on.
fn refuse(members: &[Pipeline], source: &str, topic: &str, table: &str, topics: &[String]) {
    warn!(
        source,
        topic,
        table,
        "topic refused: topics {topics:?} would all write table '{table}' (characters other \
         than letters, digits and _ become _); this one is not read. Rename a topic, or \
         narrow sources.{source}.topic_pattern"
    );
    for p in members {
        p.metrics().refused_topics.inc();
    }
}

/// Look for new topics of a pattern source every `topic_refresh_interval`, until stop.
async fn watch_topics(
    config: Config,
    source: String,
    known: Vec<String>,
    found: tokio::sync::mpsc::Sender<(String, String)>,
    stop: CancellationToken,
) {
    let mut known: std::collections::BTreeSet<String> = known.into_iter().collect();
    let every = config.sources[&source].topic_refresh_interval;
    loop {
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            () = stop.cancelled() => return,
        }
        match crate::pipeline::source_topics(&config, &source).await {
            Ok(topics) => {
                for topic in topics {
                    if known.insert(topic.clone())
                        && found.send((source.clone(), topic)).await.is_err()
                    {
                        return;
                    }
                }
            }
            Err(e) => warn!(source = %source, error = %e, "cannot list topics; trying again"),
        }
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
