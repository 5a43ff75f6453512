//! `run --until-caught-up`: done is decided from the table, for every partition of the
//! topic (whoever owns it), against the ends read when the run started. Until then the
//! run keeps going and says what it waits for; a deadline turns "not yet" into an error,
//! never into a silent success.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use tracing::info;

use crate::config::{Start, StartingOffsets};
use crate::sink::{DeltaSink, SinkError};
use crate::source::{partition_end, Bounds, Connection, SourceError};

/// How often a run that is not caught up says what it waits for.
const REPORT_EVERY: Duration = Duration::from_secs(10);

pub(super) struct CatchUp {
    bounds: BTreeMap<i32, Bounds>,
    /// `kafka.starting_offsets`: a partition the table never recorded that starts
    /// `earliest` starts at its first retained record; any other start is recorded in
    /// the table before reading.
    starting: StartingOffsets,
    started: Instant,
    deadline: Option<Duration>,
    session_timeout: Duration,
    /// Positions this member's committed batches reached (see `RawBatch::positions`).
    covered: HashMap<i32, i64>,
    last_report: Instant,
    /// Reads a partition's current end (see `missing`).
    probe: Connection,
    topic: String,
}

/// Where a catch-up stands.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Status {
    Done,
    /// Partitions other members own wait for them; a dead member's partitions move to a
    /// live one when its session expires (the broker sees to that).
    Waiting,
}

/// Why a catch-up could not be decided, or ran out of time.
#[derive(Debug, thiserror::Error)]
pub(super) enum CatchUpError {
    #[error("not caught up within {elapsed}: {missing}")]
    Deadline { elapsed: String, missing: String },
    #[error("reading what the table holds")]
    Table(#[from] SinkError),
    #[error("reading the end of partition {partition}")]
    End {
        partition: i32,
        #[source]
        cause: SourceError,
    },
    #[error("the end probe stopped")]
    Probe(#[from] tokio::task::JoinError),
}

/// What the reader knows: partitions assigned now, partitions it positioned (checked
/// for data loss) in this run, and the topic's id now.
pub(super) struct Seen {
    pub assigned: Vec<i32>,
    pub positioned: std::collections::BTreeSet<i32>,
    pub topic_id: Option<i64>,
}

/// A partition not caught up yet: where the table stands and where it must get to.
#[derive(Debug)]
struct Missing {
    partition: i32,
    at: Option<i64>,
    end: i64,
}

impl CatchUp {
    pub(super) fn new(
        bounds: BTreeMap<i32, Bounds>,
        starting: StartingOffsets,
        deadline: Option<Duration>,
        session_timeout: Duration,
        (probe, topic): (Connection, &str),
    ) -> Self {
        info!(targets = ?bounds.iter().map(|(p, b)| (*p, b.end)).collect::<BTreeMap<_, _>>(), "catching up to the ends of the topic's partitions");
        Self {
            bounds,
            starting,
            started: Instant::now(),
            deadline,
            session_timeout,
            covered: HashMap::new(),
            last_report: Instant::now(),
            probe,
            topic: topic.to_string(),
        }
    }

    /// A batch with these consumer positions was committed (or held nothing new).
    pub(super) fn covered(&mut self, positions: &HashMap<i32, i64>) {
        for (&p, &pos) in positions {
            let c = self.covered.entry(p).or_insert(pos);
            *c = (*c).max(pos);
        }
    }

    /// Partitions the table does not yet hold up to their end, or holds offsets of that
    /// nobody has checked against the topic as it is now.
    async fn missing(
        &self,
        table: &mut DeltaSink,
        seen: &Seen,
    ) -> Result<Vec<Missing>, CatchUpError> {
        let mut missing = Vec::new();
        for (&p, b) in &self.bounds {
            if self.covered.get(&p).is_some_and(|&c| c >= b.end) {
                continue;
            }
            let at = table.committed_offset(p).await?;
            let next = match at {
                Some(last) => last + 1,
                None if self.starting.for_partition(p) == Start::Earliest => b.low,
                None => i64::MIN, // "latest": not started until recorded
            };
            if next < b.end {
                missing.push(Missing {
                    partition: p,
                    at,
                    end: b.end,
                });
                continue;
            }
            // Far enough; but offsets of a deleted topic reach any end. They count once
            // this member's data-loss checks ran on the partition, or the offsets were
            // read from the topic as it is now (its id), or (a broker without topic
            // ids, a table written before ids were recorded) the partition reaches that
            // far now (other members read on). No offsets at all: nothing to distrust.
            let stamp = match at {
                Some(_) => table.committed_topic(p).await?,
                None => None,
            };
            let trusted = at.is_none()
                || seen.positioned.contains(&p)
                || match (seen.topic_id, stamp) {
                    (Some(now), Some(stamp)) => stamp == now,
                    _ => next <= b.end || next <= self.current_end(p).await?,
                };
            if !trusted {
                missing.push(Missing {
                    partition: p,
                    at,
                    end: b.end,
                });
            }
        }
        Ok(missing)
    }

    async fn current_end(&self, partition: i32) -> Result<i64, CatchUpError> {
        let (probe, topic) = (self.probe.clone(), self.topic.clone());
        tokio::task::spawn_blocking(move || partition_end(&probe, &topic, partition))
            .await?
            .map_err(|cause| CatchUpError::End { partition, cause })
    }

    /// Done once caught up; an error when the deadline passed first.
    pub(super) async fn check(
        &mut self,
        table: &mut DeltaSink,
        seen: &Seen,
    ) -> Result<Status, CatchUpError> {
        let missing = self.missing(table, seen).await?;
        if missing.is_empty() {
            info!(
                table = table.name(),
                "caught up: the table holds every partition up to its end at start"
            );
            return Ok(Status::Done);
        }
        let elapsed = self.started.elapsed();
        if self.deadline.is_some_and(|d| elapsed >= d) {
            return Err(CatchUpError::Deadline {
                elapsed: humantime::format_duration(Duration::from_secs(elapsed.as_secs()))
                    .to_string(),
                missing: self.describe(&missing, &seen.assigned),
            });
        }
        if self.last_report.elapsed() >= REPORT_EVERY {
            self.last_report = Instant::now();
            info!(
                table = table.name(),
                "not caught up yet: {}",
                self.describe(&missing, &seen.assigned)
            );
        }
        Ok(Status::Waiting)
    }

    fn describe(&self, missing: &[Missing], assigned: &[i32]) -> String {
        let left = self
            .session_timeout
            .saturating_sub(self.started.elapsed())
            .as_secs();
        let parts: Vec<String> = missing
            .iter()
            .map(|m| {
                let at =
                    m.at.map_or("nothing".to_string(), |o| format!("offset {o}"));
                let owner = if assigned.contains(&m.partition) {
                    "read by this member".to_string()
                } else if left > 0 {
                    format!(
                        "owned by another member; if that member is dead the group hands \
                         it over when its session expires, within {left}s"
                    )
                } else {
                    "owned by another member that is still alive (its session has not \
                     expired), or not assigned yet"
                        .to_string()
                };
                format!(
                    "partition {} (table holds {at}, end {}; {owner})",
                    m.partition,
                    m.end - 1
                )
            })
            .collect();
        parts.join(", ")
    }
}
