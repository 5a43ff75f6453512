//! `[mysql]` checked: the MySQL mirror's server, accounts and the pipelines it mirrors
//! (each of them a table the mirror can key).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use super::super::kafka_columns;
use super::super::pipeline::OutputMode;
use super::super::service::{GrainConfig, MysqlConfig, MysqlTls};
use super::check_name;
use super::pipeline::{Mode, PipelinePlan};
use super::source::SourcePlan;
use crate::config::ConfigError;

/// Where the mirror lives and what it holds. Passwords are read when it connects.
#[derive(Debug, Clone)]
pub struct MirrorPlan {
    /// Off: `run` starts no sync task (`lakestream sync` still works).
    pub enabled: bool,
    pub host: String,
    pub port: u16,
    pub user: String,
    /// The password's environment variable (wins when set) and file.
    pub password_env: String,
    pub password_file: Option<String>,
    pub database: String,
    /// The mirrored pipelines, each a configured pipeline with one table.
    pub mirror: Vec<String>,
    pub interval: Duration,
    pub batch_rows: usize,
    pub sql_dir: String,
    pub bi_user: Option<String>,
    pub bi_password_env: String,
    pub bi_host: String,
    pub tls: MysqlTls,
    pub tls_ca_file: Option<String>,
    /// Roll-ups of append tables, by name.
    pub grains: Vec<GrainPlan>,
}

/// `[mysql.grains.<name>]` checked: counts of table `table` per minute, hour and day.
#[derive(Debug, Clone)]
pub struct GrainPlan {
    pub name: String,
    pub table: String,
    pub time: String,
    pub by: Vec<String>,
    pub count: String,
    /// The zone its days are counted in (the source's; UTC when it has none).
    pub zone: chrono_tz::Tz,
}

impl MirrorPlan {
    pub(super) fn compile(
        m: &MysqlConfig,
        pipelines: &BTreeMap<String, Arc<PipelinePlan>>,
        sources: &BTreeMap<String, Arc<SourcePlan>>,
    ) -> Result<Self, ConfigError> {
        if m.host.trim().is_empty() {
            return Err(ConfigError::key("mysql.host", "must not be empty"));
        }
        check_name("mysql.user", &m.user, false)?;
        check_name("mysql.database", &m.database, true)?;
        match (&m.tls_ca_file, m.tls) {
            (Some(_), MysqlTls::Off) => {
                return Err(ConfigError::key(
                    "mysql.tls_ca_file",
                    "is set but mysql.tls is \"off\": set mysql.tls = \"required\"",
                ))
            }
            (Some(path), _) if !std::path::Path::new(path).is_file() => {
                return Err(ConfigError::key(
                    "mysql.tls_ca_file",
                    format!("{path} is not a readable file"),
                ))
            }
            _ => {}
        }
        for name in &m.mirror {
            let p = pipelines.get(name).ok_or_else(|| {
                ConfigError::key(
                    "mysql.mirror",
                    format!("'{name}' is not a configured pipeline"),
                )
            })?;
            check_mirrored(name, p, sources[&p.source].is_multi_topic())?;
        }
        check_settings(m)?;
        let grains = m
            .grains
            .iter()
            .map(|(name, g)| compile_grain(name, g, m, pipelines, sources))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            enabled: m.enabled,
            host: m.host.clone(),
            port: m.port,
            user: m.user.clone(),
            password_env: m.password_env.clone(),
            password_file: m.password_file.clone(),
            database: m.database.clone(),
            mirror: m.mirror.clone(),
            interval: m.interval,
            batch_rows: m.batch_rows,
            sql_dir: m.sql_dir.clone(),
            bi_user: m.bi_user.clone(),
            bi_password_env: m.bi_password_env.clone(),
            bi_host: m.bi_host.clone(),
            tls: m.tls,
            tls_ca_file: m.tls_ca_file.clone(),
            grains,
        })
    }
}

/// A mirrored pipeline writes one table whose rows the mirror can key.
fn check_mirrored(name: &str, p: &PipelinePlan, multi_topic: bool) -> Result<(), ConfigError> {
    if p.is_per_topic() {
        return Err(ConfigError::key(
            "mysql.mirror",
            format!("'{name}' writes one table per topic; the mirror takes one table per pipeline"),
        ));
    }
    let by_offset = [kafka_columns::PARTITION, kafka_columns::OFFSET];
    if multi_topic && matches!(p.mode, Mode::Append) && p.row_keys == by_offset {
        return Err(ConfigError::key(
            format!("pipelines.{name}.keys"),
            "a table of several topics is mirrored by topic, partition and offset: \
             set keys = [\"kafka_topic\", \"kafka_partition\", \"kafka_offset\"]",
        ));
    }
    if p.output() != OutputMode::Complete && p.row_keys.is_empty() {
        return Err(ConfigError::key(
            format!("pipelines.{name}.keys"),
            "a mirrored append table needs the columns that identify a row (the \
             MySQL primary key, so a re-read file cannot duplicate rows)",
        ));
    }
    Ok(())
}

fn compile_grain(
    name: &str,
    g: &GrainConfig,
    m: &MysqlConfig,
    pipelines: &BTreeMap<String, Arc<PipelinePlan>>,
    sources: &BTreeMap<String, Arc<SourcePlan>>,
) -> Result<GrainPlan, ConfigError> {
    let key = |k: &str| format!("mysql.grains.{name}.{k}");
    check_name(&format!("mysql.grains.{name}"), name, true)?;
    for (k, column) in std::iter::once(("time", &g.time))
        .chain(std::iter::once(("count", &g.count)))
        .chain(g.by.iter().map(|b| ("by", b)))
    {
        check_name(&key(k), column, true)?;
    }
    let p = pipelines.get(&g.from).ok_or_else(|| {
        ConfigError::key(
            key("from"),
            format!("'{}' is not a configured pipeline", g.from),
        )
    })?;
    // Counts are recomputed per touched hour from the rows a commit added: a table
    // whose rows change or go away (update, complete, upsert) has no such rows.
    if p.output() != OutputMode::Append || p.is_per_topic() {
        return Err(ConfigError::key(
            key("from"),
            format!(
                "'{}' is not one append table: grains count the rows of one",
                g.from
            ),
        ));
    }
    let clash = ["minute", "hour", "day"].iter().find_map(|grain| {
        let t = format!("{name}_{grain}");
        m.mirror
            .iter()
            .filter_map(|n| pipelines.get(n))
            .any(|mp| mp.table == t)
            .then_some(t)
    });
    if let Some(t) = clash {
        return Err(ConfigError::key(
            format!("mysql.grains.{name}"),
            format!("its table '{t}' is a mirrored table too: rename the grain"),
        ));
    }
    Ok(GrainPlan {
        name: name.to_string(),
        table: p.table.clone(),
        time: g.time.clone(),
        by: g.by.clone(),
        count: g.count.clone(),
        zone: sources[&p.source].decoder.zone.unwrap_or(chrono_tz::UTC),
    })
}

fn check_settings(m: &MysqlConfig) -> Result<(), ConfigError> {
    if m.batch_rows == 0 {
        return Err(ConfigError::key("mysql.batch_rows", "must be at least 1"));
    }
    if m.interval.is_zero() {
        return Err(ConfigError::key("mysql.interval", "must be positive"));
    }
    if let Some(bi) = &m.bi_user {
        check_name("mysql.bi_user", bi, true)?;
        if bi == &m.user {
            return Err(ConfigError::key(
                "mysql.bi_user",
                "must differ from mysql.user (it gets read-only grants)",
            ));
        }
    }
    let host_ok = !m.bi_host.is_empty()
        && m.bi_host.len() <= 60
        && m.bi_host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "%._-:".contains(c));
    if !host_ok {
        return Err(ConfigError::key(
            "mysql.bi_host",
            format!("'{}' is not a host name, address or '%'", m.bi_host),
        ));
    }
    Ok(())
}
