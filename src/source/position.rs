//! Where each assigned partition stands, as the consumer sees it. Offsets are not
//! records: commit markers, aborted transactions and compacted-away records take offsets
//! no record shows, so the position (the next offset to deliver) is the consumer's, not
//! the last record's offset + 1. A gap between two delivered offsets is noted here and
//! checked against the log's start once per batch (see `KafkaSource::check_gaps`),
//! never with a request per gap.

use std::collections::{BTreeMap, HashMap};

use super::context::AssignState;

/// One assigned partition.
#[derive(Debug, Clone, Copy)]
struct Part {
    /// The assignment it came with (`AssignState::since`): a partition kept across an
    /// incremental rebalance keeps its position, one assigned again starts over.
    since: u64,
    /// First offset to read (everything before it is in the tables).
    start: i64,
    /// Next offset expected (None: nothing delivered or seen since the start).
    next: Option<i64>,
}

/// An offset range no record was delivered for: markers and compaction, or records
/// retention deleted before they were read (loss).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Gap {
    /// The first offset not delivered.
    pub from: i64,
    /// The offset delivered after it.
    pub to: i64,
}

/// What to do with a delivered record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Admit {
    Keep,
    /// Before the start: read only because of `kafka.seek_rewind`.
    Skip,
    /// Below what the partition already delivered (a re-delivery, `below_start` false)
    /// or below its start: or a topic recreated shorter; `expected` is the offset it
    /// should have been.
    Back {
        expected: i64,
        below_start: bool,
    },
}

#[derive(Debug, Default)]
pub(super) struct Positions {
    parts: HashMap<i32, Part>,
    /// The first gap per partition since the last check.
    gaps: BTreeMap<i32, Gap>,
}

impl Positions {
    /// Follow the assignment: partitions no longer assigned are dropped, newly assigned
    /// ones start at their start, kept ones keep where they are.
    pub(super) fn sync(&mut self, state: &AssignState) {
        self.parts.retain(|p, _| state.assigned.contains(p));
        self.gaps.retain(|p, _| state.assigned.contains(p));
        for &p in &state.assigned {
            let (Some(&since), Some(&start)) = (state.since.get(&p), state.starts.get(&p)) else {
                continue;
            };
            if self.parts.get(&p).is_none_or(|part| part.since != since) {
                self.parts.insert(
                    p,
                    Part {
                        since,
                        start,
                        next: None,
                    },
                );
                self.gaps.remove(&p);
            }
        }
    }

    /// Start `partition` over at `start` (a recreated topic), as an assignment would.
    pub(super) fn restart(&mut self, partition: i32, start: i64) {
        if let Some(part) = self.parts.get_mut(&partition) {
            part.start = start;
            part.next = None;
        }
        self.gaps.remove(&partition);
    }

    /// Judge record `offset` of `partition` (`rewind`: `kafka.seek_rewind`).
    pub(super) fn admit(&mut self, partition: i32, offset: i64, rewind: u32) -> Admit {
        let Some(part) = self.parts.get_mut(&partition) else {
            // Not (yet) known as assigned: the next sync positions it.
            return Admit::Keep;
        };
        let expected = match part.next {
            Some(next) => next,
            None if offset < part.start && offset >= part.start - i64::from(rewind) => {
                return Admit::Skip;
            }
            None => part.start,
        };
        if offset < expected {
            return Admit::Back {
                expected,
                below_start: part.next.is_none(),
            };
        }
        if offset > expected {
            self.gaps.entry(partition).or_insert(Gap {
                from: expected,
                to: offset,
            });
        }
        part.next = Some(offset + 1);
        Admit::Keep
    }

    /// A record below the expected offset is kept after all (a re-delivery, or a
    /// recreated topic whose tables were reset to it): reading goes on from there.
    pub(super) fn resume_at(&mut self, partition: i32, offset: i64) {
        if let Some(part) = self.parts.get_mut(&partition) {
            part.next = Some(offset + 1);
        }
    }

    /// The gaps noted since the last call.
    pub(super) fn take_gaps(&mut self) -> BTreeMap<i32, Gap> {
        std::mem::take(&mut self.gaps)
    }

    /// Move positions forward to the consumer's (it passes markers and aborted records,
    /// which no record shows); never back.
    pub(super) fn advance(&mut self, consumer: impl IntoIterator<Item = (i32, i64)>) {
        for (p, position) in consumer {
            if let Some(part) = self.parts.get_mut(&p) {
                let known = part.next.unwrap_or(part.start);
                if position > known {
                    part.next = Some(position);
                }
            }
        }
    }

    /// The position (next offset to deliver) of every assigned partition.
    pub(super) fn current(&self) -> HashMap<i32, i64> {
        self.parts
            .iter()
            .map(|(&p, part)| (p, part.next.unwrap_or(part.start)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assigned(parts: &[(i32, u64, i64)]) -> AssignState {
        let mut state = AssignState::default();
        for &(p, since, start) in parts {
            state.assigned.insert(p);
            state.since.insert(p, since);
            state.starts.insert(p, start);
        }
        state
    }

    #[test]
    fn a_kept_partition_keeps_its_position_across_an_incremental_rebalance() {
        let mut positions = Positions::default();
        positions.sync(&assigned(&[(0, 1, 0)]));
        for o in 0..50 {
            assert_eq!(positions.admit(0, o, 0), Admit::Keep);
        }
        // Partition 1 joins; partition 0 is kept (same assignment).
        positions.sync(&assigned(&[(0, 1, 0), (1, 2, 10)]));
        assert_eq!(positions.admit(0, 50, 0), Admit::Keep);
        assert!(positions.take_gaps().is_empty(), "no gap on the kept one");
        assert_eq!(positions.current()[&1], 10);
        // Assigned again later: it starts where the tables say.
        positions.sync(&assigned(&[(0, 3, 40)]));
        assert_eq!(positions.admit(0, 45, 0), Admit::Keep);
        assert_eq!(
            positions.take_gaps(),
            BTreeMap::from([(0, Gap { from: 40, to: 45 })])
        );
    }

    #[test]
    fn markers_move_the_position_and_leave_no_gap() {
        let mut positions = Positions::default();
        positions.sync(&assigned(&[(0, 1, 0)]));
        positions.admit(0, 0, 0);
        positions.admit(0, 1, 0);
        // The consumer passed the commit marker at 2.
        positions.advance([(0, 3)]);
        assert_eq!(positions.current()[&0], 3);
        assert_eq!(positions.admit(0, 3, 0), Admit::Keep);
        assert!(positions.take_gaps().is_empty());
        positions.advance([(0, 1)]);
        assert_eq!(positions.current()[&0], 4, "never back");
    }

    #[test]
    fn below_the_start_is_a_rewind_or_a_way_back() {
        let mut positions = Positions::default();
        positions.sync(&assigned(&[(0, 1, 50)]));
        assert_eq!(positions.admit(0, 48, 2), Admit::Skip);
        let below = Admit::Back {
            expected: 50,
            below_start: true,
        };
        assert_eq!(positions.admit(0, 0, 2), below);
        assert_eq!(positions.admit(0, 10, 0), below);
        positions.resume_at(0, 10);
        assert_eq!(positions.admit(0, 11, 0), Admit::Keep);
        assert_eq!(positions.current()[&0], 12);
        let again = Admit::Back {
            expected: 12,
            below_start: false,
        };
        assert_eq!(positions.admit(0, 5, 0), again);
    }
}
