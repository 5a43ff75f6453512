//! Which tables' ingestion commits lost to another writer, and when: the sinks report,
//! the maintenance schedules read. A scheduled run on such a table yields once, so a
//! tight schedule on a slow store cannot keep a pipeline losing its commit until
//! `commit_retry_timeout` stops it. One handle per process, passed to both.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Default)]
pub struct Contention(Arc<Mutex<HashMap<String, Instant>>>);

impl Contention {
    /// Ingestion of `table` just lost a commit to a concurrent writer.
    pub fn report(&self, table: &str) {
        let mut lost = self.0.lock().unwrap_or_else(|e| e.into_inner());
        lost.insert(table.to_string(), Instant::now());
    }

    /// Whether ingestion of `table` lost a commit within `window`.
    pub fn recent(&self, table: &str, window: Duration) -> bool {
        let lost = self.0.lock().unwrap_or_else(|e| e.into_inner());
        lost.get(table).is_some_and(|t| t.elapsed() < window)
    }
}
