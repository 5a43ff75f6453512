//! A lost commit race, caught up cheaply. Members of a group append to one table side by
//! side (each its own partitions), so every commit another member lands first fails our
//! attempt: the sink re-reads the table and commits again. What it cached of the table
//! (each partition's offset and topic id, the batch counter) is carried forward from the
//! winners' own commits, a few small log entries, instead of being read again: each of
//! those reads replays the log since the last checkpoint, and with eight members they
//! were most of what a conflict cost (docs/benchmarks.md, "Many writers on one table").
//!
//! delta-rs's own retries stay off: its conflict checker would admit an append past
//! winners that touched none of its `txn`s, but it replays the table's whole file list
//! for every winning commit, which costs more the larger the table (measured: 45% of a
//! member's CPU at 8 members on a table of 140 versions).

use deltalake::kernel::Action;

use super::delta_sink::DeltaSink;
use crate::sink::txn::parse_app_id;
use crate::sink::SinkError;

/// Load the table's latest version after losing a commit race, with the caches
/// brought forward by what the commits in between recorded.
pub(super) async fn catch_up_with_winners(sink: &mut DeltaSink) -> Result<(), SinkError> {
    let read = sink.table.version();
    sink.table
        .update_incremental(None)
        .await
        .map_err(|e| sink.err(e))?;
    sink.stream_checked = false;
    match (read, sink.table.version()) {
        (Some(read), Some(now)) => absorb(sink, read + 1..=now).await,
        _ => forget(sink),
    }
    Ok(())
}

/// Apply the `txn`s of `versions`, in order, to the caches (an unreadable entry
/// clears them: they are then read from the snapshot when needed).
async fn absorb(sink: &mut DeltaSink, versions: std::ops::RangeInclusive<u64>) {
    for version in versions {
        let Ok(Some(actions)) = crate::sink::commit_actions(&sink.table, version).await else {
            forget(sink);
            return;
        };
        for action in actions {
            let Action::Txn(txn) = action else { continue };
            if txn.app_id == sink.batch_app_id() {
                sink.last_batch_id = Some(Some(txn.version));
                continue;
            }
            match parse_app_id(&sink.opts.pipeline, &sink.opts.topic, &txn.app_id) {
                Some((p, false)) => {
                    sink.committed.insert(p, Some(txn.version));
                }
                Some((p, true)) => {
                    sink.stamps.insert(p, Some(txn.version));
                }
                None => {}
            }
        }
    }
}

/// Drop what the sink cached of the table (read again when needed).
pub(super) fn forget(sink: &mut DeltaSink) {
    sink.committed.clear();
    sink.stamps.clear();
    sink.last_batch_id = None;
}
