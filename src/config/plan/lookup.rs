//! A lookup table checked: its file or Delta folder, the format it is read as, how
//! often it is looked at again.

use std::time::Duration;

use super::super::pipeline::{LookupConfig, LookupFormat};
use super::check_name;
use crate::config::ConfigError;

#[derive(Debug, Clone)]
pub struct LookupPlan {
    pub path: String,
    /// As declared, or as the path says (a folder with a `_delta_log` is Delta).
    pub format: LookupFormat,
    pub refresh_interval: Duration,
}

impl LookupPlan {
    pub(super) fn compile(name: &str, l: &LookupConfig) -> Result<Self, ConfigError> {
        check_name(&format!("lookups.{name}"), name, true)?;
        if l.refresh_interval.is_zero() {
            return Err(ConfigError::key(
                format!("lookups.{name}.refresh_interval"),
                "must be positive",
            ));
        }
        Ok(Self {
            path: l.path.clone(),
            format: format(name, l)?,
            refresh_interval: l.refresh_interval,
        })
    }
}

/// The declared format, or the one the path implies.
fn format(name: &str, l: &LookupConfig) -> Result<LookupFormat, ConfigError> {
    if let Some(f) = l.format {
        return Ok(f);
    }
    let path = std::path::Path::new(&l.path);
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    match ext.to_ascii_lowercase().as_str() {
        "json" | "ndjson" => Ok(LookupFormat::Json),
        "csv" => Ok(LookupFormat::Csv),
        _ if path.join("_delta_log").is_dir() => Ok(LookupFormat::Delta),
        _ => Err(ConfigError::key(
            format!("lookups.{name}.format"),
            format!(
                "cannot tell the format of '{}': set format = \"json\", \"csv\" or \"delta\"",
                l.path
            ),
        )),
    }
}
