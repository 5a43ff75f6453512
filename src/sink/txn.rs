//! How lakestream names what it records in a table's `txn` actions (the offsets, the
//! batch ids and the topic ids that make a commit exactly once), and which commit
//! failures mean "another writer got there first".

use deltalake::kernel::Transaction;

/// The `txn` app id under which a table numbers a pipeline's batches.
pub(crate) fn batch_app_id(pipeline: &str) -> String {
    format!("lakestream.{pipeline}.batch")
}

/// The `txn` app id under which a table records the last offset of a partition.
pub(super) fn txn_app_id(pipeline: &str, topic: &str, partition: i32) -> String {
    format!("lakestream.{pipeline}.{topic}.{partition}")
}

/// The `txn` app id under which a table records the id of the topic a partition's
/// offset was read from (its version is `TopicId::fingerprint`).
pub(super) fn topic_app_id(pipeline: &str, topic: &str, partition: i32) -> String {
    format!("lakestream.{pipeline}.{topic}.{partition}.topic_id")
}

/// The `txn` actions recording `last` offsets of `pipeline` reading `topic`, stamped
/// with the topic's id when known.
pub(crate) fn offset_txns(
    (pipeline, topic): (&str, &str),
    last: impl Iterator<Item = (i32, i64)>,
    topic_id: Option<i64>,
) -> Vec<Transaction> {
    let mut txns = Vec::new();
    for (p, o) in last {
        txns.push(Transaction::new(txn_app_id(pipeline, topic, p), o));
        if let Some(id) = topic_id {
            txns.push(Transaction::new(topic_app_id(pipeline, topic, p), id));
        }
    }
    txns
}

/// What `app_id` records for `pipeline` reading `topic`: a partition's offset
/// (`(partition, false)`) or the topic id beside it (`(partition, true)`).
pub(super) fn parse_app_id(pipeline: &str, topic: &str, app_id: &str) -> Option<(i32, bool)> {
    let rest = app_id
        .strip_prefix("lakestream.")?
        .strip_prefix(pipeline)?
        .strip_prefix('.')?
        .strip_prefix(topic)?
        .strip_prefix('.')?;
    match rest.split_once('.') {
        None => Some((rest.parse().ok()?, false)),
        Some((p, "topic_id")) => Some((p.parse().ok()?, true)),
        Some(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_ids_read_back() {
        let offset = txn_app_id("calls", "sf.calls", 3);
        assert_eq!(parse_app_id("calls", "sf.calls", &offset), Some((3, false)));
        let stamp = topic_app_id("calls", "sf.calls", 12);
        assert_eq!(parse_app_id("calls", "sf.calls", &stamp), Some((12, true)));
        assert_eq!(parse_app_id("calls", "other", &offset), None);
        assert_eq!(
            parse_app_id("calls", "sf.calls", &batch_app_id("calls")),
            None
        );
    }
}
