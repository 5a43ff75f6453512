//! What the status endpoints show: pipelines, tables, the MySQL mirror, maintenance and
//! recent errors, read from the counters the tasks keep.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use crate::maintenance::{table_stats, TableStats};
use crate::metrics::{metrics, recent_errors, PipelineMetrics, PipelineState, TableLabel};
use crate::storage::Storage;
use crate::sync::SyncMetrics;

/// Progress records shown per pipeline (the charts' last minutes).
const CHART_POINTS: usize = 120;

pub struct ObservedPipeline {
    pub name: String,
    pub table: String,
    pub dead_letter_table: String,
    pub metrics: Arc<PipelineMetrics>,
}

/// Everything the endpoints read.
pub struct Observed {
    pub pipelines: Vec<ObservedPipeline>,
    pub sync: Option<Arc<SyncMetrics>>,
    pub storage: Storage,
    pub max_ready_lag: i64,
    pub started: chrono::DateTime<chrono::Utc>,
    /// File counts and sizes, refreshed in the background (opening a table per page
    /// refresh would cost more than the page is worth); versions are in the registry.
    pub tables: Mutex<BTreeMap<String, TableStats>>,
}

impl Observed {
    /// Re-read every table's version and files every 10 s until `stop`.
    pub async fn refresh_tables(self: Arc<Self>, stop: CancellationToken) {
        loop {
            for p in &self.pipelines {
                for name in [&p.table, &p.dead_letter_table] {
                    if let Ok(t) = self.storage.open(name).await {
                        if let (Some(v), Ok(stats)) = (t.version(), table_stats(&t)) {
                            let label = TableLabel {
                                table: name.clone(),
                            };
                            crate::metrics::set_table_version(name, v as i64);
                            let m = metrics();
                            m.table_files.get_or_create(&label).set(stats.files as i64);
                            let mut tables = self.tables.lock().unwrap_or_else(|e| e.into_inner());
                            tables.insert(name.clone(), stats);
                        }
                    }
                }
            }
            tokio::select! {
                () = tokio::time::sleep(Duration::from_secs(10)) => {}
                () = stop.cancelled() => return,
            }
        }
    }

    /// Why this process is not ready (empty: ready).
    pub fn not_ready(&self) -> Vec<String> {
        let mut reasons = Vec::new();
        for p in &self.pipelines {
            let state = p.metrics.state();
            if state != PipelineState::Running {
                reasons.push(format!("pipeline {} is {state:?}", p.name).to_lowercase());
            }
            let lag: i64 = p.metrics.lag().values().sum();
            if lag > self.max_ready_lag {
                reasons.push(format!(
                    "pipeline {} is {lag} records behind (http.max_ready_lag {})",
                    p.name, self.max_ready_lag
                ));
            }
        }
        if let Some(sync) = &self.sync {
            for (table, error) in sync.failing() {
                reasons.push(format!("MySQL mirror of {table} is failing: {error}"));
            }
        }
        reasons
    }

    pub fn health_json(&self) -> (bool, String) {
        let reasons = self.not_ready();
        let ready = reasons.is_empty();
        let body = json!({ "live": true, "ready": ready, "reasons": reasons });
        (ready, body.to_string())
    }

    pub fn status_json(&self) -> String {
        let pipelines: Vec<Value> = self.pipelines.iter().map(pipeline_json).collect();
        let tables: Vec<Value> = self
            .tables
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(name, s)| {
                let version = crate::metrics::table_version(name);
                json!({ "name": name, "version": version, "files": s.files, "bytes": s.bytes, "rows": s.rows })
            })
            .collect();
        let errors = recent_errors();
        let runs = |task: &str, result: &str| {
            let labels = crate::metrics::TaskLabels {
                task: task.to_string(),
                result: result.to_string(),
            };
            metrics()
                .maintenance_runs
                .get(&labels)
                .map_or(0, |c| c.get())
        };
        json!({
            "started": self.started.to_rfc3339(),
            "uptimeSeconds": (chrono::Utc::now() - self.started).num_seconds(),
            "ready": self.not_ready().is_empty(),
            "pipelines": pipelines,
            "tables": tables,
            "mysql": self.sync_json(),
            "maintenance": {
                "compactions": runs("compact", "ok"),
                "compactionsSkipped": runs("compact", "skipped"),
                "compactionsFailed": runs("compact", "failed"),
                "vacuums": runs("vacuum", "ok"),
                "vacuumsSkipped": runs("vacuum", "skipped"),
                "vacuumsFailed": runs("vacuum", "failed"),
                "filesDeleted": metrics().vacuum_files_deleted.get(),
            },
            "errors": errors,
        })
        .to_string()
    }

    /// The mirror's state: per table, the version it holds and how far Delta is ahead.
    pub fn sync_lag(&self) -> Vec<(String, u64, u64)> {
        let Some(sync) = &self.sync else {
            return Vec::new();
        };
        let mirrored = sync
            .mirrored
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        mirrored
            .into_iter()
            .map(|(name, v)| {
                let latest = crate::metrics::table_version(&name).map_or(v, |l| l.max(0) as u64);
                (name, v, latest.saturating_sub(v))
            })
            .collect()
    }

    /// Bring the gauges computed from several sources (the mirror's lag) up to date
    /// before the registry is read.
    pub fn export_gauges(&self) {
        let m = metrics();
        for (table, _, behind) in self.sync_lag() {
            let label = TableLabel { table };
            m.sync_versions_behind
                .get_or_create(&label)
                .set(behind as i64);
        }
        if let Some(seconds) = self.sync_seconds_behind() {
            m.sync_seconds_behind.set(seconds);
        }
    }

    /// Seconds since the mirror last reached every table (None: never, or no mirror).
    pub fn sync_seconds_behind(&self) -> Option<f64> {
        let last = self.sync.as_ref()?.last_success_ms.load(Ordering::Relaxed);
        (last > 0).then(|| (chrono::Utc::now().timestamp_millis() - last) as f64 / 1000.0)
    }

    fn sync_json(&self) -> Value {
        let Some(sync) = &self.sync else {
            return json!({ "enabled": false });
        };
        let tables: Vec<Value> = self
            .sync_lag()
            .into_iter()
            .map(|(name, v, behind)| json!({ "name": name, "mirroredVersion": v, "versionsBehind": behind }))
            .collect();
        json!({
            "enabled": true,
            "passes": sync.passes.get(),
            "rows": sync.rows.get(),
            "errors": sync.errors.get(),
            "failing": sync.failing(),
            "secondsBehind": self.sync_seconds_behind(),
            "tables": tables,
        })
    }
}

fn pipeline_json(p: &ObservedPipeline) -> Value {
    let s = p.metrics.snapshot(&p.name, &p.table);
    let recent = p.metrics.recent();
    let points: Vec<Value> = recent
        .iter()
        .skip(recent.len().saturating_sub(CHART_POINTS))
        .map(|r| {
            json!({
                "batchId": r.batch_id,
                "timestamp": r.timestamp,
                "numInputRows": r.num_input_rows,
                "inputRowsPerSecond": r.input_rows_per_second,
                "processedRowsPerSecond": r.processed_rows_per_second,
                "durationMs": r.duration_ms,
            })
        })
        .collect();
    let lag = p.metrics.lag();
    let mut out = json!({
        "name": p.name,
        "state": p.metrics.state(),
        "lag": lag,
        "totalLag": lag.values().sum::<i64>(),
        "last": recent.last(),
        "recent": points,
    });
    // The counters under the names the summary and `/metrics` use.
    if let (Some(out), Ok(Value::Object(snapshot))) =
        (out.as_object_mut(), serde_json::to_value(&s))
    {
        out.extend(snapshot);
    }
    out
}
