//! Crash points for tests: `LAKESTREAM_FAILPOINT=NAME` (or `NAME:N`, the Nth time) makes
//! the process abort at that point, as a kill -9 there would, so the moments between
//! two writes that must agree are tested deterministically, not by chance.
//! `NAME@PIPELINE[:N]` counts only that pipeline's hits (the others sharing its reader
//! are then wherever they are in their own batch).
//!
//! Points: `after_dead_letters` (dead letters committed, rows not yet),
//! `after_state_write` (state snapshot written, its commit not yet), `after_commit`
//! (table committed, group offsets not yet), `before_schema_change` (data files of a batch
//! that adds columns written, its commit not yet), `during_reset` (a reset of the offsets
//! after a recreated topic: before each row table's reset commit, the dead letters'
//! already done). Unset, a point costs one atomic load.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

fn armed() -> Option<&'static (String, u64)> {
    static ARMED: OnceLock<Option<(String, u64)>> = OnceLock::new();
    ARMED
        .get_or_init(|| {
            let spec = std::env::var("LAKESTREAM_FAILPOINT").ok()?;
            let (name, nth) = match spec.split_once(':') {
                Some((name, n)) => (name.to_string(), n.parse().unwrap_or(1)),
                None => (spec, 1),
            };
            Some((name, nth))
        })
        .as_ref()
}

/// Abort here, in `pipeline`, if this point is armed and this is the armed hit.
pub fn hit(point: &str, pipeline: &str) {
    static HITS: AtomicU64 = AtomicU64::new(0);
    let Some((name, nth)) = armed() else {
        return;
    };
    let matches = match name.split_once('@') {
        Some((n, p)) => n == point && p == pipeline,
        None => name == point,
    };
    if matches && HITS.fetch_add(1, Ordering::SeqCst) + 1 == *nth {
        eprintln!("failpoint {point} in pipeline {pipeline}: aborting");
        std::process::abort();
    }
}
