//! Wiring for `lakestream run`: one reader per source (per topic of a multi-topic source)
//! and one commit loop per pipeline, the MySQL sync, maintenance schedules and the status
//! page, all on one supervisor (the first failure stops the others, the first signal
//! drains).

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::{ConfigError, Plan, ReaderPlan, SourcePlan, Topics};
use crate::http::{Observed, ObservedPipeline};
use crate::metrics::Snapshot;
use crate::pipeline::{Pipeline, RunOptions};
use crate::supervisor::Supervisor;
use crate::sync::SyncTask;
use crate::Result;

/// How long `run --until-caught-up` keeps retrying the last MySQL sync.
const FINAL_SYNC_PATIENCE: std::time::Duration = std::time::Duration::from_secs(120);

/// Run `selected` pipelines (all when empty) until a signal, or until caught up.
pub async fn run(plan: Arc<Plan>, selected: &[String], opts: RunOptions) -> Result<Vec<Snapshot>> {
    let names: Vec<String> = match selected {
        [] => plan.pipelines.keys().cloned().collect(),
        _ => selected.to_vec(),
    };
    if names.is_empty() {
        return Err(ConfigError::key("pipelines", "no pipeline is configured").into());
    }
    let readers = plan.readers(&names)?;
    // Before any table is created or touched: a wrong password or certificate stops here,
    // saying what to check.
    let connection = crate::source::Connection::new(&plan.kafka)?
        .checked()
        .await?;
    check_access(&connection, &readers).await?;
    // A root that cannot be written, a missing bucket, denied credentials: at once.
    crate::sink::check_storage(&plan.storage.storage.clone()).await?;

    let supervisor = Supervisor::new(opts.drain_timeout);
    let sync = start_sync(&plan, &supervisor, opts);
    // Sinks report lost commits here; the maintenance schedules yield to them.
    let contention = crate::sink::Contention::default();
    start_maintenance(&plan, &readers, &supervisor, &contention);
    let catalog = plan.catalog.clone().map(|c| {
        let storage = plan.storage.storage.clone();
        crate::catalog::spawn(
            c,
            storage,
            supervisor.helpers(),
            supervisor.background().clone(),
        )
    });
    let pipelines: Vec<Vec<Pipeline>> = readers
        .iter()
        .map(|r| {
            let each = r.pipelines.iter().cloned();
            let shared = (contention.clone(), catalog.clone());
            each.map(|p| Pipeline::new(p, r.source.clone(), plan.clone(), shared.clone()))
                .collect()
        })
        .collect();
    if plan.http.enabled {
        let metrics = sync.as_ref().map(|s| s.1.clone());
        serve_status(&plan, pipelines.iter().flatten(), metrics, &supervisor).await;
    }
    let mut run = Running::new(plan, supervisor, opts);
    run.list_topics(&readers).await?;
    for (reader, members) in readers.iter().zip(pipelines) {
        if let Err(e) = run.start_reader(reader, members).await {
            run.supervisor
                .fail(&format!("reader of {:?}", reader.names()), e);
            break;
        }
    }
    run.until_done().await;
    let sync = sync.map(|(handle, _)| ("mysql sync", handle));
    run.supervisor.finish(sync).await
}

/// Each single-topic reader's topic exists and its group may read it, before any table
/// is created: a refusal does not heal by waiting (a pattern's topics are checked as
/// they are found).
async fn check_access(
    connection: &crate::source::Connection,
    readers: &[ReaderPlan],
) -> Result<()> {
    for r in readers.iter().filter(|r| !r.source.is_multi_topic()) {
        let (connection, topic, group) = (
            connection.clone(),
            r.source.topic().to_string(),
            r.group_id(),
        );
        tokio::task::spawn_blocking(move || {
            crate::source::check_access(&connection, &topic, &group)
        })
        .await
        .map_err(|cause| crate::Error::Task {
            task: "checking access to the topic".into(),
            cause,
        })??;
    }
    Ok(())
}

/// The maintenance schedules of the tables the readers write; tables named per topic
/// are scheduled as their topics start.
fn start_maintenance(
    plan: &Plan,
    readers: &[ReaderPlan],
    supervisor: &Supervisor,
    contention: &crate::sink::Contention,
) {
    let tables: Vec<String> = readers
        .iter()
        .flat_map(|r| r.pipelines.iter().flat_map(|p| p.tables()))
        .filter(|t| !t.contains(crate::config::TOPIC))
        .collect();
    let (helpers, background) = (supervisor.helpers(), supervisor.background());
    crate::maintenance::spawn_schedules(plan, &tables, helpers, background, contention);
}

/// The MySQL mirror, when one is configured and enabled: its task and its counters.
fn start_sync(
    plan: &Plan,
    supervisor: &Supervisor,
    opts: RunOptions,
) -> Option<(
    tokio::task::JoinHandle<Result<()>>,
    Arc<crate::sync::SyncMetrics>,
)> {
    let task = SyncTask::new(plan)
        .filter(|t| t.has_targets() && plan.mirror.as_ref().is_some_and(|m| m.enabled))?;
    let metrics = task.metrics.clone();
    // A backfill ends with the mirror caught up too; a signal just stops it.
    let final_pass = opts.until_caught_up.then_some(FINAL_SYNC_PATIENCE);
    let stop = supervisor.background().clone();
    let handle = supervisor.spawn_helper(async move { Ok(task.run(stop, final_pass).await?) });
    Some((handle, metrics))
}

/// The readers and commit loops started so far, on the supervisor.
struct Running {
    plan: Arc<Plan>,
    supervisor: Supervisor,
    /// The topics started so far, by multi-topic source.
    topics: HashMap<String, BTreeSet<String>>,
    opts: RunOptions,
    /// Pipelines of pattern sources, by source, for topics that appear later.
    templates: HashMap<String, (ReaderPlan, Vec<Pipeline>)>,
    /// New topics (source, topic) of pattern sources, as the watchers find them; the
    /// sender is dropped once every watcher holds its own.
    found_tx: Option<mpsc::Sender<(String, String)>>,
    found: mpsc::Receiver<(String, String)>,
    /// Readers that share `memory_limit`: those at start, then each one started.
    readers: usize,
    started: usize,
    /// The topics of each multi-topic source at start, listed once (see `list_topics`).
    listed: HashMap<String, Vec<String>>,
}

impl Running {
    fn new(plan: Arc<Plan>, supervisor: Supervisor, opts: RunOptions) -> Self {
        let (tx, rx) = mpsc::channel(16);
        Self {
            plan,
            supervisor,
            topics: HashMap::new(),
            opts,
            templates: HashMap::new(),
            found_tx: Some(tx),
            found: rx,
            readers: 1,
            started: 0,
            listed: HashMap::new(),
        }
    }

    /// List the topics of the multi-topic sources once, before any reader starts, and
    /// count the readers they make (one per topic): each gets that share of
    /// `memory_limit`. A topic a pattern matches later gets the share of one more
    /// reader; the others keep theirs until a restart.
    async fn list_topics(&mut self, readers: &[ReaderPlan]) -> Result<()> {
        let mut count = 0;
        for r in readers {
            if !r.source.is_multi_topic() {
                count += 1;
                continue;
            }
            let topics = crate::pipeline::source_topics(&self.plan.kafka, &r.source).await?;
            count += topics.len().max(1);
            self.listed.insert(r.source.name.clone(), topics);
        }
        self.readers = count;
        Ok(())
    }

    /// Start the reader of one source (of each of its topics now, and for a pattern,
    /// of the topics created later).
    async fn start_reader(&mut self, reader: &ReaderPlan, members: Vec<Pipeline>) -> Result<()> {
        let source = &reader.source;
        if !source.is_multi_topic() {
            return self.start(reader.clone(), members, false).await;
        }
        self.start_topics(reader, &members).await?;
        let (Topics::Pattern(_), Some(found)) = (&source.topics, &self.found_tx) else {
            return Ok(());
        };
        if self.opts.until_caught_up {
            return Ok(()); // a backfill takes the topics there are
        }
        let known = self.topics.get(&source.name).cloned().unwrap_or_default();
        let watch = watch_topics(self.plan.clone(), source.clone(), known, found.clone());
        let stop = self.supervisor.shutdown().clone();
        self.supervisor.spawn_helper(async move {
            tokio::select! {
                () = watch => {}
                () = stop.cancelled() => {}
            }
        });
        self.templates
            .insert(source.name.clone(), (reader.clone(), members));
        Ok(())
    }

    /// Take each task's end (the first failure stops the others) and start the
    /// pipelines of new topics, until every reader and pipeline is done.
    async fn until_done(&mut self) {
        self.found_tx = None; // the watchers hold the only senders now
        loop {
            tokio::select! {
                () = self.supervisor.join_next(), if self.supervisor.busy() => {}
                Some((name, topic)) = self.found.recv() => {
                    // Out of the map while they start (`new_topic` needs `self`).
                    if let Some((reader, members)) = self.templates.remove(&name) {
                        self.new_topic(&reader, &topic, &members).await;
                        self.templates.insert(name, (reader, members));
                    }
                }
                else => break,
            }
        }
    }

    /// Start the reader `reader` for `members` (its pipelines, in its order); with
    /// `per_topic`, the maintenance of their per-topic tables too.
    async fn start(
        &mut self,
        reader: ReaderPlan,
        members: Vec<Pipeline>,
        per_topic: bool,
    ) -> Result<()> {
        let configured = self.plan.tables();
        if per_topic {
            for p in &members {
                let tables: Vec<String> = p
                    .spec()
                    .tables()
                    .into_iter()
                    .filter(|t| !configured.contains_key(t))
                    .collect();
                crate::maintenance::spawn_schedules(
                    &self.plan,
                    &tables,
                    self.supervisor.helpers(),
                    self.supervisor.background(),
                    p.contention(),
                );
            }
        }
        let names = reader.names();
        let shutdown = self.supervisor.shutdown().clone();
        self.started += 1;
        let readers = self.readers.max(self.started);
        if self.started > self.readers {
            // The readers started earlier keep the larger shares librdkafka was created
            // with: say so rather than pretend the limit still holds.
            tracing::warn!(
                readers = self.started,
                split_among = self.readers,
                memory_limit = %bytesize::ByteSize(self.plan.memory_limit),
                "a topic appeared while running: memory_limit was split among the readers at \
                 start, so this reader's share comes on top of it; restart to split it anew"
            );
        }
        let started =
            crate::pipeline::start_source(reader, members, self.opts, readers, &shutdown).await?;
        for (name, run) in started.pipelines {
            self.supervisor
                .spawn(name, async move { run.await.map(Some) });
        }
        let reader = started.reader;
        self.supervisor
            .spawn(format!("reader of {names:?}"), async move {
                reader.await.map(|()| None)
            });
        Ok(())
    }

    /// Start `members` on every topic their source reads now.
    async fn start_topics(&mut self, reader: &ReaderPlan, members: &[Pipeline]) -> Result<()> {
        let source = &reader.source;
        let topics = match self.listed.remove(&source.name) {
            Some(topics) => topics,
            None => crate::pipeline::source_topics(&self.plan.kafka, source).await?,
        };
        if topics.is_empty() {
            warn!(source = %source.name, "no topic matches yet; waiting for one to be created");
        }
        // Of topics that would share a per-topic table, the one that has been writing
        // it goes on (or, for a new table, the first by name); the others are refused.
        let storage = self.plan.storage.storage.clone();
        let mut refused = BTreeSet::new();
        for (table, group) in self.plan.topic_collisions(&source.name, &topics) {
            let writer = crate::sink::last_topic(&storage, &table).await?;
            let keep = writer
                .filter(|w| group.contains(w))
                .unwrap_or_else(|| group[0].clone());
            for topic in group.iter().filter(|t| **t != keep) {
                refuse(members, &source.name, topic, &table, &group);
                refused.insert(topic.clone());
            }
        }
        for topic in topics.iter().filter(|t| !refused.contains(*t)) {
            info!(source = %source.name, topic = %topic, "starting the pipelines of a topic");
            self.start_topic(reader, topic, members).await?;
        }
        Ok(())
    }

    /// A topic of a pattern source appeared: start `members` on it, unless it would
    /// write another topic's per-topic table.
    async fn new_topic(&mut self, reader: &ReaderPlan, topic: &str, members: &[Pipeline]) {
        let (source, topic) = (&reader.source, topic.to_string());
        let known = self.topics.get(&source.name).into_iter().flatten();
        let collisions = self
            .plan
            .topic_collisions(&source.name, known.chain([&topic]));
        if let Some((table, others)) = collisions.into_iter().find(|(_, t)| t.contains(&topic)) {
            refuse(members, &source.name, &topic, &table, &others);
            return;
        }
        info!(source = %source.name, topic = %topic, "new topic: starting its pipelines");
        if let Err(e) = self.start_topic(reader, &topic, members).await {
            self.supervisor.fail(&format!("topic {topic}"), e);
        }
    }

    /// Start `members` on `topic` of their multi-topic source.
    async fn start_topic(
        &mut self,
        reader: &ReaderPlan,
        topic: &str,
        members: &[Pipeline],
    ) -> Result<()> {
        let on_topic = reader.for_topic(topic);
        let members = members
            .iter()
            .zip(&on_topic.pipelines)
            .map(|(p, spec)| p.reading(spec.clone(), on_topic.source.clone()))
            .collect();
        self.start(on_topic, members, true).await?;
        self.topics
            .entry(reader.source.name.clone())
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
        p.metrics().counters.refused_topics.inc();
    }
}

/// Look for new topics of a pattern source every `refresh_interval`, forever (the
/// caller stops it).
async fn watch_topics(
    plan: Arc<Plan>,
    source: Arc<SourcePlan>,
    mut known: BTreeSet<String>,
    found: mpsc::Sender<(String, String)>,
) {
    loop {
        tokio::time::sleep(source.refresh_interval).await;
        match crate::pipeline::source_topics(&plan.kafka, &source).await {
            Ok(topics) => {
                for topic in topics {
                    if known.insert(topic.clone())
                        && found.send((source.name.clone(), topic)).await.is_err()
                    {
                        return;
                    }
                }
            }
            Err(e) => {
                warn!(source = %source.name, error = %crate::report::Report(&e), "cannot list topics; trying again")
            }
        }
    }
}

/// Start the status page and its table refresher; a port that is taken is a warning,
/// not a reason to stop ingesting (several processes may share a host).
async fn serve_status<'p>(
    plan: &Plan,
    pipelines: impl Iterator<Item = &'p Pipeline>,
    sync: Option<Arc<crate::sync::SyncMetrics>>,
    supervisor: &Supervisor,
) {
    let observed = Observed {
        pipelines: pipelines
            .map(|p| ObservedPipeline {
                name: p.name().to_string(),
                table: p.spec().table.clone(),
                dead_letter_table: p.spec().dead_letter_table.clone(),
                metrics: p.metrics(),
            })
            .collect(),
        sync,
        storage: plan.storage.storage.clone(),
        max_ready_lag: plan.http.max_ready_lag,
        started: chrono::Utc::now(),
        tables: Default::default(),
    };
    let observed = Arc::new(observed);
    let stop: &CancellationToken = supervisor.background();
    match crate::http::Server::bind(&plan.http.listen, observed.clone()).await {
        Ok(server) => {
            supervisor.spawn_helper(observed.refresh_tables(stop.clone()));
            supervisor.spawn_helper(server.run(stop.clone()));
        }
        Err(e) => {
            warn!(error = %crate::report::Report(&e), "status page not served; set http.listen to a free address")
        }
    }
}
