//! lakestream's own entry in each Delta commit (`commitInfo.lakestream`): the pipeline
//! and topic that wrote it and what the commit holds. Written and read only here, so the
//! format is this one type; older entries (lakestream 0.1) read the same way.

use std::collections::{BTreeMap, HashMap};

use deltalake::kernel::Action;
use deltalake::{DeltaTable, DeltaTableError};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::engine::Clock;
use crate::source::OffsetRange;

/// The entry's key in a commit's `commitInfo`.
const KEY: &str = "lakestream";

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct CommitEntry {
    pub pipeline: String,
    pub topic: String,
    /// The micro-batch's id, where the table records batch ids.
    pub batch_id: Option<i64>,
    /// A micro-batch: its new records per partition, first and last offset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offsets: Option<BTreeMap<i32, [i64; 2]>>,
    /// Rows written (for an aggregate: rows appended, merged or in the new result).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rows: Option<usize>,
    /// Only positions moved past offsets that hold no records.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub positions_only: bool,
    /// Where each partition starts (`kafka.starting_offsets`, `run --reset-to`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_positions: Option<BTreeMap<i32, i64>>,
    /// A stateful pipeline's state after the batch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<StateEntry>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct StateEntry {
    pub late_rows: u64,
    pub watermark: Option<i64>,
    /// Open aggregate rows.
    pub rows: Option<usize>,
    /// The state snapshot's file, relative to the table.
    pub file: Option<String>,
    /// lakestream 0.1 kept the clock in the entry (now inside the snapshot file).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub clock: Option<Clock>,
}

impl CommitEntry {
    /// The entry of a micro-batch's commit.
    pub fn batch(
        (pipeline, topic): (&str, &str),
        batch_id: Option<i64>,
        new_ranges: &BTreeMap<i32, OffsetRange>,
        rows: usize,
    ) -> Self {
        Self {
            pipeline: pipeline.to_string(),
            topic: topic.to_string(),
            batch_id,
            offsets: Some(
                new_ranges
                    .iter()
                    .map(|(&p, r)| (p, [r.first, r.last]))
                    .collect(),
            ),
            rows: Some(rows),
            ..Self::default()
        }
    }

    /// A micro-batch's commit (not a start position's).
    pub fn is_batch(&self) -> bool {
        self.offsets.is_some()
    }

    /// The `(key, value)` a commit's metadata takes.
    pub fn metadata(&self) -> (String, Value) {
        let value = serde_json::to_value(self).unwrap_or(Value::Null);
        (KEY.to_string(), value)
    }

    /// Our entry in a commit's info, when it has one.
    pub fn of(info: &HashMap<String, Value>) -> Option<Self> {
        info.get(KEY)
            .filter(|v| v.is_object())
            .and_then(|v| serde_json::from_value(v.clone()).ok())
    }
}

/// The entry of the newest commit whose entry `wanted` accepts (log entries cleaned up
/// behind a checkpoint end the search: then only `txn` records speak).
pub(super) async fn latest(
    table: &DeltaTable,
    wanted: impl Fn(&CommitEntry) -> bool,
) -> Result<Option<CommitEntry>, DeltaTableError> {
    let Some(latest) = table.version() else {
        return Ok(None);
    };
    for version in (0..=latest).rev() {
        let Some(actions) = super::commit_actions(table, version).await? else {
            break;
        };
        for action in actions {
            let Action::CommitInfo(info) = action else {
                continue;
            };
            if let Some(entry) = CommitEntry::of(&info.info).filter(|e| wanted(e)) {
                return Ok(Some(entry));
            }
        }
    }
    Ok(None)
}

/// The watermark (µs) the newest state entry of `table` records: the event time the
/// table is complete up to (None: not a windowed pipeline's table, or not known yet).
pub async fn latest_watermark(table: &DeltaTable) -> Result<Option<i64>, DeltaTableError> {
    let entry = latest(table, |e| {
        e.state.as_ref().is_some_and(|s| s.watermark.is_some())
    })
    .await?;
    Ok(entry.and_then(|e| e.state?.watermark))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_entry_keeps_the_keys_readers_know() {
        let ranges = BTreeMap::from([(0, OffsetRange { first: 5, last: 9 })]);
        let mut entry = CommitEntry::batch(("calls", "sf"), None, &ranges, 4);
        entry.positions_only = true;
        let (key, value) = entry.metadata();
        assert_eq!(key, "lakestream");
        assert_eq!(
            value,
            serde_json::json!({
                "pipeline": "calls", "topic": "sf", "batchId": null,
                "offsets": {"0": [5, 9]}, "rows": 4, "positionsOnly": true
            })
        );
    }

    #[test]
    fn entries_lakestream_wrote_before_read_the_same() {
        let info = HashMap::from([(
            KEY.to_string(),
            serde_json::json!({
                "pipeline": "hourly", "batchId": 7, "topic": "sf", "rows": 3,
                "offsets": {"10": [100, 120], "2": [1, 1]},
                "state": {"lateRows": 1, "watermark": 42, "rows": 2, "file": null,
                          "clock": {"maxEventTime": {"0": 50}, "watermark": 42}},
                "somethingNewer": true
            }),
        )]);
        let e = CommitEntry::of(&info).expect("an entry");
        assert_eq!((e.pipeline.as_str(), e.batch_id), ("hourly", Some(7)));
        assert!(e.is_batch());
        assert_eq!(e.offsets.expect("offsets")[&10], [100, 120]);
        let state = e.state.expect("state");
        assert_eq!((state.late_rows, state.watermark), (1, Some(42)));
        assert_eq!(state.clock.expect("clock").max_event[&0], 50);
        let start = HashMap::from([(
            KEY.to_string(),
            serde_json::json!({"pipeline": "calls", "topic": "sf", "startPositions": {"0": 17}}),
        )]);
        let e = CommitEntry::of(&start).expect("an entry");
        assert!(!e.is_batch());
        assert_eq!(e.start_positions.expect("starts")[&0], 17);
        assert!(CommitEntry::of(&HashMap::new()).is_none());
    }
}
