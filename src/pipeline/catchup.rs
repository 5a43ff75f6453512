//! `run --until-caught-up`: done is decided from the table, for every partition of the
//! topic (whoever owns it), against the ends read when the run started. Until then the
//! run keeps going and says what it waits for; a deadline turns "not yet" into an error,
//! never into a silent success.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use tracing::info;

use crate::config::{Start, StartingOffsets};
use crate::sink::{DeltaSink, SinkError};
use crate::source::Bounds;

/// How often a run that is not caught up says what it waits for.
const REPORT_EVERY: Duration = Duration::from_secs(10);

pub struct CatchUp {
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
    /// What the table held for the partitions others own, and since when unchanged.
    others: (Vec<(i32, Option<i64>)>, Instant),
}

/// Where a catch-up stands.
#[derive(Debug, PartialEq, Eq)]
pub enum Status {
    Done,
    Waiting,
    /// Partitions other members own have not moved for a whole session timeout:
    /// their owner is dead (or stuck), so join the group again to take them over.
    Rejoin,
}

/// A partition not caught up yet: where the table stands and where it must get to.
#[derive(Debug)]
struct Missing {
    partition: i32,
    at: Option<i64>,
    end: i64,
}

impl CatchUp {
    pub fn new(
        bounds: BTreeMap<i32, Bounds>,
        starting: StartingOffsets,
        deadline: Option<Duration>,
        session_timeout: Duration,
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
            others: (Vec::new(), Instant::now()),
        }
    }

    /// A batch with these consumer positions was committed (or held nothing new).
    pub fn covered(&mut self, positions: &HashMap<i32, i64>) {
        for (&p, &pos) in positions {
            let c = self.covered.entry(p).or_insert(pos);
            *c = (*c).max(pos);
        }
    }

    /// Partitions the table does not yet hold up to their end.
    async fn missing(&self, table: &mut DeltaSink) -> Result<Vec<Missing>, SinkError> {
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
            }
        }
        Ok(missing)
    }

    /// Done once caught up; an error when the deadline passed first.
    pub async fn check(
        &mut self,
        table: &mut DeltaSink,
        assigned: &[i32],
    ) -> Result<Status, String> {
        let missing = self.missing(table).await.map_err(|e| e.to_string())?;
        if missing.is_empty() {
            info!(
                table = table.name(),
                "caught up: the table holds every partition up to its end at start"
            );
            return Ok(Status::Done);
        }
        let elapsed = self.started.elapsed();
        if self.deadline.is_some_and(|d| elapsed >= d) {
            return Err(format!(
                "not caught up within {}: {}",
                humantime::format_duration(Duration::from_secs(elapsed.as_secs())),
                self.describe(&missing, assigned)
            ));
        }
        if self.last_report.elapsed() >= REPORT_EVERY {
            self.last_report = Instant::now();
            info!(
                table = table.name(),
                "not caught up yet: {}",
                self.describe(&missing, assigned)
            );
        }
        let others: Vec<(i32, Option<i64>)> = missing
            .iter()
            .filter(|m| !assigned.contains(&m.partition))
            .map(|m| (m.partition, m.at))
            .collect();
        if others.is_empty() || others != self.others.0 {
            self.others = (others, Instant::now());
            return Ok(Status::Waiting);
        }
        if self.others.1.elapsed() > self.session_timeout + Duration::from_secs(2) {
            self.others.1 = Instant::now();
            return Ok(Status::Rejoin);
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
