//! Integration tests: one binary (the heavy crates link once), real broker, real tables.
//! The broker comes from LAKESTREAM_TEST_BROKERS (default 127.0.0.1:9092); start one
//! with scripts/services.sh.

mod common;

mod bi;
mod broker;
mod catalog;
mod cdc;
mod changes;
mod check;
mod config_errors;
mod crash;
mod deploy;
mod direct_lake;
mod edges;
mod engines;
mod grafana;
mod ingest;
mod lakes;
mod maintenance;
mod many_topics;
mod memory;
mod metrics;
mod mirror;
mod mirror_edges;
mod offsets;
mod quickstart;
mod registry;
mod registry_formats;
mod replay;
mod scale_out;
mod schema_evolution;
mod security;
mod shared_reader;
mod sink;
mod start_positions;
mod status;
mod streaming;
mod time_travel;
