//! Demo and benchmark tools, not part of the pipeline: `lakestream produce` (replay the
//! SF calls dataset or synthetic calls into a topic, at a rate) and `count-topic` (read a
//! topic as fast as a plain consumer can: the broker ceiling of the benchmark).

mod avro;
mod count;
pub mod dataset;
mod producer;
pub mod synthetic;

pub use avro::{AvroFramer, AvroProduceError};
pub use count::{count_topic, CountReport};
pub use producer::{produce, ProduceOptions, ProduceReport, Rate};
