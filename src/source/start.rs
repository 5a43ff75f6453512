//! Where an assigned partition starts: a pure decision from what the tables hold, the
//! partition's bounds and the configured start (gathered by `context.rs`).

use super::loss::Lost;
use super::{Committed, ReadError};
use crate::config::Start;

/// What is known about one partition when it is assigned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Facts {
    pub partition: i32,
    pub committed: Committed,
    /// The partition's first retained offset and the consumer's high watermark.
    pub low: i64,
    pub high: i64,
    /// The partition's end as a separate request reads it (never below `high`; under
    /// read_committed `high` is the last stable offset). Only read when `needs_end`.
    pub end: i64,
    /// Where a partition no table has recorded starts (see `SourceContext::start_of`).
    pub start: Start,
    /// The first offset at or after a configured start time, when `start` is one.
    pub time_start: Option<i64>,
    /// The topic's id now, for the message when the tables hold another topic's offsets.
    pub topic_id: String,
}

/// How a partition starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Decision {
    /// The first offset to read.
    pub start: i64,
    /// Record `start - 1` in the tables before reading: a configured start, which the
    /// next owner must keep if this member dies before its first commit (Spark does too).
    pub record: bool,
    /// The tables' offsets belong to a topic that is gone: set them to `low - 1` first,
    /// or every new record at or below the old offsets would be dropped as a replay.
    pub reset: bool,
    /// Records that can no longer be read (the data-loss policy decides what follows).
    pub lost: Vec<Lost>,
}

/// Whether deciding needs the partition's end beyond the consumer's high watermark.
pub(super) fn needs_end(committed: &Committed, high: i64, start: Start) -> bool {
    committed.highest.is_some_and(|h| h + 1 > high)
        || committed.lowest.is_none()
            && match start {
                Start::Earliest => false,
                Start::Latest | Start::Time(_) => true,
                Start::Offset(offset) => offset > high,
            }
}

/// Where `facts.partition` starts.
pub(super) fn start_for(facts: &Facts) -> Result<Decision, ReadError> {
    let (p, low, committed) = (facts.partition, facts.low, facts.committed);
    let mut d = Decision {
        start: low,
        record: false,
        reset: false,
        lost: Vec::new(),
    };
    if committed.recreated {
        // Every table starts the new topic over, at its first record.
        d.lost.push(Lost::OldTopic {
            partition: p,
            now: facts.topic_id.clone(),
        });
        d.reset = true;
        return Ok(d);
    }
    if let Some(highest) = committed.highest.filter(|&h| committed.lowest != Some(h)) {
        // A table ahead of the others (or beside a new one) may hold offsets of a
        // deleted topic, or lost records the new one does not miss: reading from the
        // lowest alone would not notice. Retention below a lower table is that table's
        // report.
        let floor = match committed.lowest {
            Some(_) => low.min(highest + 1),
            None => low,
        };
        resume_at(facts, highest + 1, floor, &mut d);
    }
    d.start = match (committed.lowest, facts.start) {
        // A table ahead was found to hold a deleted topic's offsets: all start over.
        _ if d.reset => low,
        (Some(last), _) => resume_at(facts, last + 1, low, &mut d),
        (None, Start::Earliest) => low,
        (None, Start::Latest) => {
            d.record = true;
            facts.end
        }
        (None, Start::Offset(offset)) => {
            d.record = true;
            explicit_start(facts, offset, &mut d)?
        }
        (None, Start::Time(_)) => {
            d.record = true;
            facts.time_start.unwrap_or(low)
        }
    };
    Ok(d)
}

/// Where to read when a table resumes at `resume`: below `low` or past the end, records
/// were lost.
fn resume_at(facts: &Facts, resume: i64, low: i64, d: &mut Decision) -> i64 {
    let partition = facts.partition;
    if resume < low {
        d.lost.push(Lost::Deleted {
            partition,
            resume,
            low,
        });
        return low;
    }
    if resume <= facts.high.max(facts.end) {
        return resume;
    }
    d.lost.push(Lost::PastEnd {
        partition,
        resume,
        end: facts.end,
    });
    d.reset = true;
    facts.low
}

/// A configured start offset: below the first retained record it is data loss (the
/// records asked for are gone), beyond the end a mistake.
fn explicit_start(facts: &Facts, offset: i64, d: &mut Decision) -> Result<i64, ReadError> {
    let (partition, low) = (facts.partition, facts.low);
    if offset < low {
        d.lost.push(Lost::StartDeleted {
            partition,
            offset,
            low,
        });
        return Ok(low);
    }
    if offset > facts.end.max(facts.high) {
        return Err(ReadError::StartPastEnd {
            partition,
            offset,
            end: facts.end.max(facts.high),
        });
    }
    Ok(offset)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(lowest: Option<i64>, highest: Option<i64>, start: Start) -> Facts {
        Facts {
            partition: 3,
            committed: Committed {
                lowest,
                highest,
                recreated: false,
            },
            low: 100,
            high: 200,
            end: 200,
            start,
            time_start: None,
            topic_id: "id".into(),
        }
    }

    fn decided(f: &Facts) -> Decision {
        start_for(f).expect("a decision")
    }

    #[test]
    fn a_table_resumes_after_its_last_offset() {
        let d = decided(&facts(Some(149), Some(149), Start::Latest));
        assert_eq!(
            (d.start, d.record, d.reset, d.lost.len()),
            (150, false, false, 0)
        );
        // At the end exactly: nothing to read yet, nothing lost.
        assert_eq!(
            decided(&facts(Some(199), Some(199), Start::Earliest)).start,
            200
        );
    }

    #[test]
    fn a_new_partition_starts_as_configured_and_records_all_but_earliest() {
        let earliest = decided(&facts(None, None, Start::Earliest));
        assert_eq!((earliest.start, earliest.record), (100, false));
        let latest = decided(&facts(None, None, Start::Latest));
        assert_eq!((latest.start, latest.record), (200, true));
        let offset = decided(&facts(None, None, Start::Offset(150)));
        assert_eq!((offset.start, offset.record), (150, true));
        let time = Facts {
            time_start: Some(170),
            ..facts(None, None, Start::Time(0))
        };
        assert_eq!(decided(&time).start, 170);
    }

    #[test]
    fn retention_below_the_table_is_loss_and_reads_on_from_the_first_record() {
        let d = decided(&facts(Some(49), Some(49), Start::Earliest));
        assert_eq!(d.start, 100);
        assert_eq!(
            d.lost,
            [Lost::Deleted {
                partition: 3,
                resume: 50,
                low: 100
            }]
        );
        assert!(!d.reset);
    }

    #[test]
    fn a_table_past_the_end_resets_every_table_to_the_first_record() {
        let d = decided(&facts(Some(499), Some(499), Start::Earliest));
        assert_eq!((d.start, d.reset), (100, true));
        assert!(matches!(
            d.lost[..],
            [Lost::PastEnd {
                resume: 500,
                end: 200,
                ..
            }]
        ));
        // A table ahead of the others past the end: all start over, not the lowest.
        let ahead = decided(&facts(Some(149), Some(899), Start::Earliest));
        assert_eq!((ahead.start, ahead.reset), (100, true));
        // Ahead but inside the partition: the lowest table decides.
        assert_eq!(
            decided(&facts(Some(149), Some(179), Start::Earliest)).start,
            150
        );
    }

    #[test]
    fn offsets_of_an_old_topic_are_loss_and_start_over() {
        let f = Facts {
            committed: Committed {
                lowest: Some(10),
                highest: Some(10),
                recreated: true,
            },
            ..facts(None, None, Start::Earliest)
        };
        let d = decided(&f);
        assert_eq!((d.start, d.reset), (100, true));
        assert!(matches!(d.lost[..], [Lost::OldTopic { partition: 3, .. }]));
    }

    #[test]
    fn a_configured_offset_outside_the_partition() {
        let below = decided(&facts(None, None, Start::Offset(5)));
        assert_eq!(below.start, 100);
        assert!(matches!(
            below.lost[..],
            [Lost::StartDeleted { offset: 5, .. }]
        ));
        let past = start_for(&facts(None, None, Start::Offset(900)));
        assert!(matches!(
            past,
            Err(ReadError::StartPastEnd {
                offset: 900,
                end: 200,
                ..
            })
        ));
    }

    #[test]
    fn the_end_is_read_only_when_the_watermark_cannot_decide() {
        let c = |l, h| Committed {
            lowest: l,
            highest: h,
            recreated: false,
        };
        assert!(!needs_end(&c(Some(10), Some(10)), 200, Start::Latest));
        assert!(needs_end(&c(Some(10), Some(200)), 200, Start::Earliest));
        assert!(!needs_end(&c(None, None), 200, Start::Earliest));
        assert!(needs_end(&c(None, None), 200, Start::Latest));
        assert!(!needs_end(&c(None, None), 200, Start::Offset(150)));
        assert!(needs_end(&c(None, None), 200, Start::Offset(250)));
    }
}
