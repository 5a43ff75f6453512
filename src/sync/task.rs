//! The sync task: each pass brings every mirrored table up to its latest Delta version,
//! one MySQL transaction per table; it retries with backoff while MySQL is away.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use deltalake::DeltaTable;
use mysql_async::Conn;
use prometheus_client::metrics::counter::Counter;
use serde::Serialize;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::changes::{self, Change};
use super::freshness::Freshness;
use super::layout::Layout;
use crate::config::{GrainPlan, MirrorPlan, Mode, OutputMode, Plan};
use crate::retry::Backoff;
use crate::retry::{Retry, RetryHint};

use super::{bi, connect, grains, mysql, zones, SyncError};

/// One mirrored table.
#[derive(Debug, Clone)]
struct Target {
    table: String,
    mode: OutputMode,
    keys: Vec<String>,
    /// The zone the source reads local times in: `_lake_date_key` counts its days.
    zone: chrono_tz::Tz,
    /// How late an event may be, where the pipeline keeps a watermark.
    watermark_delay: Option<Duration>,
}

/// Per-table outcome of one pass.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TableSync {
    pub table: String,
    pub version: Option<u64>,
    pub rows: u64,
    pub replaced: bool,
    /// Why this table did not sync (the pass went on with the others).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl TableSync {
    pub(super) fn new(table: &str) -> Self {
        Self {
            table: table.to_string(),
            version: None,
            rows: 0,
            replaced: false,
            error: None,
        }
    }
}

/// What the task has done, for logs, the exit summary and the status page (the
/// counters are handles into the process's metrics registry).
#[derive(Debug)]
pub struct SyncMetrics {
    pub passes: Counter,
    pub rows: Counter,
    pub errors: Counter,
    /// Unix ms of the last pass that reached every table (-1: none yet).
    pub last_success_ms: AtomicI64,
    /// The Delta version each table's mirror holds.
    pub mirrored: std::sync::Mutex<std::collections::BTreeMap<String, u64>>,
    /// Tables whose last sync failed, with the error; the others keep syncing.
    pub failing: std::sync::Mutex<std::collections::BTreeMap<String, String>>,
}

impl Default for SyncMetrics {
    fn default() -> Self {
        let m = crate::metrics::metrics();
        Self {
            passes: m.sync_passes.clone(),
            rows: m.sync_rows.clone(),
            errors: m.sync_errors.clone(),
            last_success_ms: AtomicI64::new(-1),
            mirrored: Default::default(),
            failing: Default::default(),
        }
    }
}

impl SyncMetrics {
    pub fn failing(&self) -> std::collections::BTreeMap<String, String> {
        self.failing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

pub struct SyncTask {
    mysql: MirrorPlan,
    storage: crate::storage::Storage,
    targets: Vec<Target>,
    grains: Vec<GrainPlan>,
    conn: Option<Conn>,
    /// Open tables, brought up to date incrementally on each pass.
    tables: HashMap<String, DeltaTable>,
    bi_ready: bool,
    /// Zones of the sources (see `zones`).
    source_zones: Vec<chrono_tz::Tz>,
    pub metrics: Arc<SyncMetrics>,
}

impl SyncTask {
    /// The task for `config`'s `[mysql]` section (None when there is none).
    pub fn new(config: &Plan) -> Option<Self> {
        let mysql = config.mirror.clone()?;
        let targets = mysql
            .mirror
            .iter()
            .filter_map(|name| config.pipelines.get(name))
            .map(|p| Target {
                table: p.table.clone(),
                mode: p.output(),
                keys: p.row_keys.clone(),
                zone: config
                    .sources
                    .get(&p.source)
                    .and_then(|s| s.decoder.zone)
                    .unwrap_or(chrono_tz::UTC),
                watermark_delay: match &p.mode {
                    Mode::Query(q) => q.watermark.as_ref().map(|(_, delay)| *delay),
                    _ => None,
                },
            })
            .collect();
        Some(Self {
            storage: config.storage.storage.clone(),
            grains: mysql.grains.clone(),
            mysql,
            targets,
            conn: None,
            tables: HashMap::new(),
            bi_ready: false,
            source_zones: config
                .sources
                .values()
                .filter_map(|s| s.decoder.zone)
                .collect(),
            metrics: Arc::new(SyncMetrics::default()),
        })
    }

    pub fn has_targets(&self) -> bool {
        !self.targets.is_empty() || !self.grains.is_empty()
    }

    /// One pass over every mirrored table; connects (and sets up) first if needed.
    pub async fn pass(&mut self) -> Result<Vec<TableSync>, SyncError> {
        let mut conn = match self.conn.take() {
            Some(c) => c,
            None => connect::connect(&self.mysql).await?,
        };
        let result = self.pass_on(&mut conn).await;
        if result.is_ok() {
            self.conn = Some(conn);
            self.metrics.passes.inc();
            self.metrics
                .last_success_ms
                .store(chrono::Utc::now().timestamp_millis(), Ordering::Relaxed);
        }
        // On error the connection is dropped: the next pass starts from a fresh one.
        result
    }

    /// Sync every table; one table's failure (a value MySQL rejects, a broken Delta
    /// table) is recorded and the others go on. A lost connection ends the pass.
    async fn pass_on(&mut self, conn: &mut Conn) -> Result<Vec<TableSync>, SyncError> {
        let mut out = Vec::new();
        let batch_rows = self.mysql.batch_rows;
        for target in self.targets.clone() {
            let synced = match self.table(&target.table).await {
                Ok(Some(table)) => sync_table(conn, table, &target, batch_rows).await,
                Ok(None) => Ok(TableSync::new(&target.table)),
                Err(e) => Err(e),
            };
            out.push(self.settle(&target.table, synced)?);
        }
        for grain in self.grains.clone() {
            let synced = match self.table(&grain.table).await {
                Ok(Some(table)) => grains::sync(conn, table, &grain, batch_rows).await,
                Ok(None) => Ok(TableSync::new(&grain.name)),
                Err(e) => Err(e),
            };
            out.push(self.settle(&grain.name, synced)?);
        }
        let all_exist = out.iter().all(|done| done.version.is_some());
        // Views read the mirrored tables: create them once those exist.
        if all_exist && !self.bi_ready {
            let sql = bi::sql_texts(&self.mysql.sql_dir)?;
            zones::install(conn, &zones::wanted(self.source_zones.clone(), &sql)).await?;
            let files = bi::apply(conn, &self.mysql.sql_dir).await?;
            bi::ensure_account(conn, &self.mysql).await?;
            info!(files, dir = %self.mysql.sql_dir, "BI views applied");
            self.bi_ready = true;
        }
        Ok(out)
    }

    /// Record one table's outcome. A failure that a retry of the whole pass may cure
    /// (the connection, another sync in the way) ends the pass; any other is recorded
    /// and the others go on.
    fn settle(
        &self,
        table: &str,
        synced: Result<TableSync, SyncError>,
    ) -> Result<TableSync, SyncError> {
        let done = match synced {
            Ok(done) => {
                self.set_failing(table, None);
                done
            }
            Err(e) if e.retry() != Retry::Never => return Err(e),
            Err(e) => {
                warn!(table, error = %crate::report::Report(&e), "table not mirrored; the others go on");
                self.metrics.errors.inc();
                let message = crate::report::Report(&e).to_string();
                self.set_failing(table, Some(message.clone()));
                TableSync {
                    error: Some(message),
                    ..TableSync::new(table)
                }
            }
        };
        self.metrics.rows.inc_by(done.rows);
        if let Some(v) = done.version {
            let mut mirrored = self
                .metrics
                .mirrored
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            mirrored.insert(done.table.clone(), v);
        }
        Ok(done)
    }

    fn set_failing(&self, table: &str, error: Option<String>) {
        let mut failing = self
            .metrics
            .failing
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let gauge = crate::metrics::metrics()
            .sync_table_failing
            .get_or_create(&crate::metrics::TableLabel {
                table: table.to_string(),
            })
            .clone();
        gauge.set(i64::from(error.is_some()));
        match error {
            Some(e) => failing.insert(table.to_string(), e),
            None => failing.remove(table),
        };
    }

    /// The table `name` at its latest version (None: its pipeline has not created it).
    async fn table(&mut self, name: &str) -> Result<Option<&DeltaTable>, SyncError> {
        let table = match self.tables.remove(name) {
            Some(mut t) => {
                t.update_incremental(None)
                    .await
                    .map_err(|e| SyncError::delta(name, e))?;
                t
            }
            None => self.storage.load(name).await?,
        };
        if table.version().is_none() {
            return Ok(None);
        }
        Ok(Some(self.tables.entry(name.to_string()).or_insert(table)))
    }

    /// Sync every `interval` until `stop`; then, if `final_pass`, once more so the
    /// mirror reflects everything the pipelines committed (retrying up to `patience`).
    pub async fn run(
        mut self,
        stop: CancellationToken,
        final_pass: Option<Duration>,
    ) -> Result<(), SyncError> {
        let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
        let mut failing_since: Option<Instant> = None;
        loop {
            let wait = if failing_since.is_some() {
                backoff.next_wait()
            } else {
                self.mysql.interval
            };
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep(wait) => {}
            }
            match self.pass().await {
                Ok(tables) => {
                    if let Some(since) = failing_since.take() {
                        info!(
                            down_for_s = since.elapsed().as_secs(),
                            "MySQL mirror back in sync"
                        );
                    }
                    backoff.reset();
                    log_pass(&tables);
                }
                // A refused account, a missing privilege or a TLS setup does not heal by
                // waiting: stop and say so.
                Err(e) if e.is_refusal() => {
                    self.metrics.errors.inc();
                    return Err(e);
                }
                Err(e) => {
                    self.metrics.errors.inc();
                    failing_since.get_or_insert_with(Instant::now);
                    warn!(error = %crate::report::Report(&e), retry_in_s = backoff.current().as_secs(), "MySQL sync failed; ingestion goes on, retrying");
                }
            }
        }
        let Some(patience) = final_pass else {
            return Ok(());
        };
        let deadline = Instant::now() + patience;
        let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(5));
        loop {
            match self.pass().await {
                // A table MySQL refuses is not going to change its mind: say so now.
                Ok(tables) => {
                    log_pass(&tables);
                    return all_mirrored(&tables);
                }
                Err(e) if e.retry() != Retry::Never && Instant::now() < deadline => {
                    warn!(error = %crate::report::Report(&e), "final MySQL sync failed; retrying");
                    tokio::time::sleep(backoff.next_wait()).await;
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// An error naming every table a pass could not mirror (Ok when all were).
pub fn all_mirrored(tables: &[TableSync]) -> Result<(), SyncError> {
    let failed: Vec<String> = tables
        .iter()
        .filter_map(|t| Some(format!("{}: {}", t.table, t.error.as_ref()?)))
        .collect();
    if failed.is_empty() {
        return Ok(());
    }
    Err(SyncError::Setup {
        message: format!("tables not mirrored to MySQL: {}", failed.join("; ")),
    })
}

fn log_pass(tables: &[TableSync]) {
    for t in tables.iter().filter(|t| t.rows > 0 || t.replaced) {
        info!(table = %t.table, version = t.version, rows = t.rows, replaced = t.replaced, "mirrored to MySQL");
    }
}

/// Bring one table's mirror up to the table's version.
async fn sync_table(
    conn: &mut Conn,
    table: &DeltaTable,
    t: &Target,
    batch_rows: usize,
) -> Result<TableSync, SyncError> {
    let delta_err = |e| SyncError::delta(&t.table, e);
    let mut done = TableSync::new(&t.table);
    let Some(version) = table.version() else {
        return Ok(done);
    };
    let schema = table
        .snapshot()
        .map_err(delta_err)?
        .snapshot()
        .arrow_schema();
    let layout = Layout::new(&t.table, schema, t.keys.clone(), t.zone)?;
    // A table created now (first sync, or dropped by someone) has no rows: start over
    // from the whole Delta table.
    let created = mysql::ensure_table(conn, &layout).await?;
    let state = match created {
        true => None,
        false => mysql::mirrored(conn, &t.table).await?,
    };
    let table_id = table
        .snapshot()
        .map_err(delta_err)?
        .metadata()
        .id()
        .to_string();
    // A table deleted and rebuilt under the same name (a new id, or a version behind the
    // mirror's) shares nothing with what MySQL holds: replace it whole, atomically.
    let rebuilt = state
        .as_ref()
        .is_some_and(|s| s.rebuilt(&table_id, version));
    if rebuilt {
        info!(table = %t.table, "the Delta table was rebuilt since the last sync: replacing its mirror");
    }
    let from = state.as_ref().map(|s| s.version);
    let mirrored = from.filter(|_| !rebuilt);
    let complete = t.mode == OutputMode::Complete;
    // Rows of an upsert table are deleted by key: only the change feed (or a full
    // replace) can carry that to the mirror.
    let deletes = t.mode == OutputMode::Upsert;
    let change = changes::since(table, version, mirrored, complete, &t.keys, deletes)
        .await
        .map_err(delta_err)?;
    done.version = Some(version);
    let Some(Change {
        version,
        batches,
        deletes: deleted,
        full,
    }) = change
    else {
        return Ok(done);
    };
    let replace = complete || rebuilt || (full && (t.keys.is_empty() || deletes));
    let fresh = Freshness::read(table, version, t.mode, t.watermark_delay)
        .await
        .map_err(delta_err)?;
    let rows = mysql::Rows {
        batches: &batches,
        deletes: deleted.as_ref(),
        replace,
        from,
        to: mysql::Mirrored {
            version,
            table_id: Some(table_id),
        },
        fresh,
    };
    done.rows = mysql::write(conn, &layout, &rows, batch_rows).await?;
    done.replaced = replace;
    Ok(done)
}
