//! The exactly-once micro-batch commit (see the module docs of `sink`): `DeltaSink`
//! (`delta_sink.rs`) and one file per way a batch changes a table.

mod append;
mod batch;
mod delta_sink;
mod merge;
mod replay;
mod stateful;
mod upsert;
mod winners;

pub use batch::{BatchInfo, CommitOutcome, CommitTimings, SinkOptions, Write};
pub use delta_sink::DeltaSink;
