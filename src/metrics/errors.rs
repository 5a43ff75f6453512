//! Warnings and errors of the whole process, kept for the status page and counted by
//! level and module in the metrics registry (a tracing layer beside the log output).

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::{Mutex, OnceLock};

use serde::Serialize;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer};

const KEEP: usize = 50;

#[derive(Debug, Clone, Serialize)]
pub struct ErrorEntry {
    pub time: String,
    pub level: String,
    /// Module, e.g. `lakestream::sink` (two path segments: a bounded label set).
    pub kind: String,
    pub message: String,
}

fn log() -> &'static Mutex<VecDeque<ErrorEntry>> {
    static LOG: OnceLock<Mutex<VecDeque<ErrorEntry>>> = OnceLock::new();
    LOG.get_or_init(Default::default)
}

/// The last warnings and errors, newest last.
pub fn recent_errors() -> Vec<ErrorEntry> {
    let log = log().lock().unwrap_or_else(|e| e.into_inner());
    log.iter().cloned().collect()
}

/// Records WARN and ERROR events of lakestream's own modules.
pub struct ErrorLayer;

impl<S: Subscriber> Layer<S> for ErrorLayer {
    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        let meta = event.metadata();
        let level = *meta.level();
        if level > Level::WARN || !meta.target().starts_with("lakestream") {
            return;
        }
        let mut text = Text::default();
        event.record(&mut text);
        let kind: String = meta
            .target()
            .split("::")
            .take(2)
            .collect::<Vec<_>>()
            .join("::");
        let entry = ErrorEntry {
            time: chrono::Utc::now().to_rfc3339(),
            level: level.to_string().to_lowercase(),
            kind: kind.clone(),
            message: format!("{}{}", text.message, text.fields),
        };
        let labels = super::registry::LogLabels {
            level: entry.level.clone(),
            kind,
        };
        super::metrics().log_events.get_or_create(&labels).inc();
        let mut log = log().lock().unwrap_or_else(|e| e.into_inner());
        if log.len() == KEEP {
            log.pop_front();
        }
        log.push_back(entry);
    }
}

/// `message key=value ...` of an event.
#[derive(Default)]
struct Text {
    message: String,
    fields: String,
}

impl Visit for Text {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            let _ = write!(self.fields, " {}={value:?}", field.name());
        }
    }
}
