//! `[maintenance]` checked and resolved: each table's schedules and Z-order, a vacuum
//! retention that outlasts every commit retry.

use std::collections::BTreeMap;
use std::time::Duration;

use super::super::schedule::Schedule;
use super::super::service::MaintenanceConfig;
use super::check_name;
use super::pipeline::PipelinePlan;
use crate::config::ConfigError;

/// How much longer than the slowest commit retry a vacuum retention must be.
const VACUUM_MARGIN: Duration = Duration::from_secs(10);

/// Table upkeep, per-table overrides applied.
#[derive(Debug, Clone)]
pub struct MaintenancePlan {
    /// Off: `run` schedules no compaction or vacuum.
    pub enabled: bool,
    /// A checkpoint every this many commits of a table (0: never).
    pub checkpoint_interval: u64,
    pub log_retention: Duration,
    pub compact: CompactPlan,
    pub vacuum: VacuumPlan,
    tables: BTreeMap<String, TablePlan>,
}

#[derive(Debug, Clone)]
pub struct CompactPlan {
    pub schedule: Schedule,
    /// Files are bin-packed up to this size (default `storage.target_file_size`).
    pub target_file_size: u64,
    pub min_small_files: usize,
    pub max_retries: u32,
}

#[derive(Debug, Clone)]
pub struct VacuumPlan {
    pub schedule: Schedule,
    pub retention: Duration,
    pub min_retention: Duration,
}

/// One table's upkeep.
#[derive(Debug, Clone)]
pub struct TablePlan {
    pub compact: Schedule,
    pub vacuum: Schedule,
    pub zorder_by: Vec<String>,
}

impl MaintenancePlan {
    pub(super) fn compile<'p>(
        m: &MaintenanceConfig,
        target_file_size: u64,
        pipelines: impl Iterator<Item = &'p PipelinePlan> + Clone,
    ) -> Result<Self, ConfigError> {
        if m.compact.target_file_size == Some(0) {
            return Err(ConfigError::key(
                "maintenance.compact.target_file_size",
                "must be at least 1 byte",
            ));
        }
        if m.compact.min_small_files < 2 {
            return Err(ConfigError::key(
                "maintenance.compact.min_small_files",
                "must be at least 2 (one file cannot be bin-packed)",
            ));
        }
        check_retention(m, pipelines.clone())?;
        let compact = CompactPlan {
            schedule: m.compact.schedule.clone(),
            target_file_size: m.compact.target_file_size.unwrap_or(target_file_size),
            min_small_files: m.compact.min_small_files,
            max_retries: m.compact.max_retries,
        };
        let vacuum = VacuumPlan {
            schedule: m.vacuum.schedule.clone(),
            retention: m.vacuum.retention,
            min_retention: m.vacuum.min_retention,
        };
        let known: BTreeMap<String, ()> = pipelines
            .flat_map(|p| p.tables())
            .map(|t| (t, ()))
            .collect();
        let mut tables = BTreeMap::new();
        for (name, t) in &m.tables {
            if !known.contains_key(name) {
                let known: Vec<&str> = known.keys().map(String::as_str).collect();
                return Err(ConfigError::key(
                    format!("maintenance.tables.{name}"),
                    format!("no such table (known: {})", known.join(", ")),
                ));
            }
            for column in &t.zorder_by {
                check_name(
                    &format!("maintenance.tables.{name}.zorder_by"),
                    column,
                    true,
                )?;
            }
            let table = TablePlan {
                compact: t
                    .compact
                    .clone()
                    .unwrap_or_else(|| compact.schedule.clone()),
                vacuum: t.vacuum.clone().unwrap_or_else(|| vacuum.schedule.clone()),
                zorder_by: t.zorder_by.clone(),
            };
            tables.insert(name.clone(), table);
        }
        Ok(Self {
            enabled: m.enabled,
            checkpoint_interval: m.checkpoint_interval,
            log_retention: m.log_retention,
            compact,
            vacuum,
            tables,
        })
    }

    /// The upkeep of table `name` (the defaults unless it has overrides).
    pub fn table(&self, name: &str) -> TablePlan {
        self.tables.get(name).cloned().unwrap_or_else(|| TablePlan {
            compact: self.compact.schedule.clone(),
            vacuum: self.vacuum.schedule.clone(),
            zorder_by: Vec::new(),
        })
    }
}

/// A commit that keeps failing retries with the data files it already wrote; a vacuum
/// in between must not delete them, or the commit would point at nothing.
fn check_retention<'p>(
    m: &MaintenanceConfig,
    pipelines: impl Iterator<Item = &'p PipelinePlan>,
) -> Result<(), ConfigError> {
    let v = &m.vacuum;
    if v.retention < v.min_retention {
        return Err(ConfigError::key(
            "maintenance.vacuum.retention",
            format!(
                "{} is below maintenance.vacuum.min_retention ({}); lower the minimum \
                 only if no writer takes that long to commit",
                humantime::format_duration(v.retention),
                humantime::format_duration(v.min_retention)
            ),
        ));
    }
    let slowest = pipelines
        .map(|p| (&p.name, p.commit.retry_timeout))
        .max_by_key(|(_, t)| *t);
    if let Some((pipeline, timeout)) = slowest {
        let needed = timeout + VACUUM_MARGIN;
        if v.retention < needed {
            return Err(ConfigError::key(
                "maintenance.vacuum.retention",
                format!(
                    "{} is shorter than pipelines.{pipeline}.commit_retry_timeout ({}) \
                     plus {} margin: a vacuum could delete the files of a commit that \
                     is still being retried; raise the retention to at least {} or \
                     lower the timeout",
                    humantime::format_duration(v.retention),
                    humantime::format_duration(timeout),
                    humantime::format_duration(VACUUM_MARGIN),
                    humantime::format_duration(needed),
                ),
            ));
        }
    }
    Ok(())
}
