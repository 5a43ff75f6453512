//! lakestream: exactly-once streaming from Kafka into Delta Lake tables.
//!
//! Data flows `source` (Kafka consumer, replay producer) -> `decode` (JSON -> Arrow,
//! dead letters) -> `pipeline` (micro-batch loop) -> `sink` (Delta writer and the
//! exactly-once commit; `storage` says where tables live). `config` checks the file once
//! at start-up and compiles it into a typed `Plan`; `app` starts what the plan says on a
//! `supervisor` (tasks, first error, signals). `engine` runs pipeline SQL (windows,
//! watermarks, state); `sync` mirrors tables into MySQL for BI tools; `catalog` registers
//! them in a data catalog (Glue).

pub mod app;
pub mod catalog;
pub mod cli;
pub mod commands;
pub mod config;
pub mod decode;
pub mod demo;
pub mod engine;
pub mod error;
pub mod failpoint;
pub mod http;
pub mod maintenance;
pub mod metrics;
pub mod pipeline;
pub mod query;
pub mod report;
pub mod retry;
pub mod sink;
pub mod source;
pub mod storage;
pub mod supervisor;
pub mod sync;

pub use error::{Error, Result};
