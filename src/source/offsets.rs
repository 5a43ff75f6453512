//! The tables' side of a reader's offsets: what the rebalance callback asks the tables
//! fed by one reader (and tells them) before a partition is read.

use std::collections::{BTreeMap, HashMap};

use super::StoreError;

/// The tables' side of the offsets, called from the rebalance callback on the consumer
/// thread (it may block). One reader may feed several tables (one per pipeline).
/// `topic_id` is the topic's id now (`TopicId::fingerprint`; None: the broker keeps none).
pub trait OffsetStore: Send + Sync {
    /// What the output tables hold for each of `partitions`.
    fn committed(
        &self,
        partitions: &[i32],
        topic_id: Option<i64>,
    ) -> Result<HashMap<i32, Committed>, StoreError>;
    /// Commit "the tables hold everything up to `last`" for these partitions (where
    /// `mode` says), stamped with `topic_id`, before they are read. Returns the lowest
    /// offset the tables then record for them.
    fn record(
        &self,
        last: &BTreeMap<i32, i64>,
        mode: Record,
        topic_id: Option<i64>,
    ) -> Result<BTreeMap<i32, i64>, StoreError>;
}

/// Which offsets a table already records [`OffsetStore::record`] replaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Record {
    /// None: only partitions the table has no offset for (a start position).
    Start,
    /// Offsets above the given ones (`run --reset-to`: back, never forward).
    Lower,
    /// All: the table's offsets belong to a deleted topic of the same name.
    Exactly,
}

/// What the tables fed by one reader hold for a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Committed {
    /// Where reading must resume after: the table furthest behind (`None`: a table has
    /// never seen the partition).
    pub lowest: Option<i64>,
    /// The table furthest ahead: a resume point the partition no longer reaches means
    /// the topic was recreated, whichever table holds it.
    pub highest: Option<i64>,
    /// A table recorded its offset for another topic of this name (the topic was
    /// deleted and recreated since): none of the offsets can be trusted.
    pub recreated: bool,
}

impl Committed {
    /// One table's offset.
    pub fn single(last: Option<i64>) -> Self {
        Self {
            lowest: last,
            highest: last,
            recreated: false,
        }
    }
}
