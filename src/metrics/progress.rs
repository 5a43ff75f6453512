//! One progress record per micro-batch, with the fields Spark's StreamingQueryProgress
//! users know (camelCase, as Spark prints them).

use std::collections::BTreeMap;

use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Progress {
    /// The pipeline.
    pub name: String,
    /// This process's run of it (a new id each start).
    pub run_id: String,
    pub batch_id: i64,
    /// When the batch's first record arrived (RFC 3339).
    pub timestamp: String,
    pub num_input_rows: u64,
    /// Rows arrived per second since the previous batch started.
    pub input_rows_per_second: f64,
    /// Rows processed per second of this batch's own duration.
    pub processed_rows_per_second: f64,
    pub duration_ms: Durations,
    pub sources: Vec<SourceProgress>,
    pub event_time: EventTime,
    /// From each record's Kafka timestamp to this commit, over the batch's records
    /// (`None`: the records carry no timestamps).
    pub latency_ms: Option<Latency>,
    pub state_rows: u64,
    pub late_rows_dropped: u64,
    pub dead_letters: u64,
    pub sink: SinkProgress,
}

#[derive(Debug, Clone, Copy, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Durations {
    /// First record to the batch closing (trigger interval or size reached).
    pub fetch: u64,
    pub decode: u64,
    /// The pipeline's SQL (and state) over the batch.
    pub query: u64,
    /// Data files (and state snapshots) written.
    pub write: u64,
    /// The Delta commit (for MERGE: the whole merge).
    pub commit: u64,
    /// First record to committed.
    pub total: u64,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SourceProgress {
    pub description: String,
    /// First and last offset of the batch, and the latest offset the broker reported,
    /// by partition.
    pub start_offset: BTreeMap<i32, i64>,
    pub end_offset: BTreeMap<i32, i64>,
    pub latest_offset: BTreeMap<i32, i64>,
    /// Records behind the latest offset after this batch, by partition.
    pub lag: BTreeMap<i32, i64>,
}

/// Produced-to-committed time of a batch's records: median, 99th percentile, oldest.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Latency {
    pub p50: u64,
    pub p99: u64,
    pub max: u64,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EventTime {
    pub watermark: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SinkProgress {
    pub description: String,
    pub table: String,
    /// The table version this batch committed (None: it was already in the table).
    pub version: Option<i64>,
}

impl Progress {
    /// Total lag over partitions.
    pub fn lag(&self) -> i64 {
        self.sources.iter().flat_map(|s| s.lag.values()).sum()
    }

    /// The compact human line.
    pub fn line(&self) -> String {
        let d = &self.duration_ms;
        format!(
            "{} batch {} v{}: {} rows ({} dead letters, {} late), {:.0} in/s, {:.0} \
             processed/s, lag {}, {} ms (fetch {} decode {} query {} write {} commit {})",
            self.name,
            self.batch_id,
            self.sink.version.map_or("-".into(), |v| v.to_string()),
            self.num_input_rows,
            self.dead_letters,
            self.late_rows_dropped,
            self.input_rows_per_second,
            self.processed_rows_per_second,
            self.lag(),
            d.total,
            d.fetch,
            d.decode,
            d.query,
            d.write,
            d.commit
        )
    }
}
