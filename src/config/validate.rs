//! Start-up validation: every check names the key and says what is allowed.

use super::fields::is_identifier;
use super::{Config, ConfigError, LookupConfig, LookupFormat, MysqlConfig, OutputMode};

/// librdkafka properties that `kafka.security` owns.
fn is_security_option(key: &str) -> bool {
    key == "security.protocol"
        || key.starts_with("sasl.")
        || key.starts_with("ssl.key")
        || key.starts_with("ssl.certificate")
        || key.starts_with("ssl.ca.")
        || key == "enable.sasl.oauthbearer.unsecure.jwt"
}

/// How much longer than the slowest commit retry a vacuum retention must be.
const VACUUM_MARGIN: std::time::Duration = std::time::Duration::from_secs(10);

impl Config {
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        if self.kafka.brokers.trim().is_empty() {
            return Err(ConfigError::key("kafka.brokers", "must not be empty"));
        }
        check_name("kafka.group_id", &self.kafka.group_id, false)?;
        if self.kafka.options.contains_key("isolation.level") {
            return Err(ConfigError::key(
                "kafka.options.isolation.level",
                "set kafka.isolation_level instead (read_committed or read_uncommitted)",
            ));
        }
        // Security goes through kafka.security, which keeps secrets out of the file and
        // the logs and checks the combination once.
        if let Some(key) = self.kafka.options.keys().find(|k| is_security_option(k)) {
            return Err(ConfigError::key(
                format!("kafka.options.{key}"),
                "set TLS and SASL in kafka.security instead (protocol, mechanism, username, \
                 password_env or password_file, ca_file, certificate_file, key_file)",
            ));
        }
        self.kafka.security.validate()?;
        if !(1..=22).contains(&self.storage.zstd_level) {
            return Err(ConfigError::key(
                "storage.zstd_level",
                format!("{} is outside 1..=22", self.storage.zstd_level),
            ));
        }
        if self.memory_limit.as_u64() < super::MIN_MEMORY_LIMIT {
            return Err(ConfigError::key(
                "memory_limit",
                format!(
                    "{} is below the smallest budget a reader works in (16MiB); give it \
                     at least 16MiB per source, 256MiB is the default",
                    self.memory_limit.display().iec()
                ),
            ));
        }
        if self.storage.root.trim().is_empty() {
            return Err(ConfigError::key("storage.root", "must not be empty"));
        }
        for (name, source) in &self.sources {
            check_name(&format!("sources.{name}"), name, true)?;
            if let Some((table, topics)) = self.topic_collisions(name, &source.topics).pop_first() {
                return Err(ConfigError::key(
                    format!("sources.{name}.topics"),
                    format!(
                        "topics {topics:?} would all write table '{table}' (characters other \
                         than letters, digits and _ become _): remove one, or name the table \
                         differently"
                    ),
                ));
            }
            source.field_specs(name)?;
            source.zone(name)?;
            if source.max_message_bytes == 0 {
                return Err(ConfigError::key(
                    format!("sources.{name}.max_message_bytes"),
                    "must be at least 1",
                ));
            }
        }
        for name in self.pipelines.keys() {
            self.validate_pipeline(name)?;
        }
        self.validate_table_owners()?;
        for (name, lookup) in &self.lookups {
            check_name(&format!("lookups.{name}"), name, true)?;
            if self.sources.contains_key(name) {
                return Err(ConfigError::key(
                    format!("lookups.{name}"),
                    "a source has the same name; SQL could not tell them apart",
                ));
            }
            lookup.resolved_format(name)?;
            if lookup.refresh_interval.is_zero() {
                return Err(ConfigError::key(
                    format!("lookups.{name}.refresh_interval"),
                    "must be positive",
                ));
            }
        }
        if let Some(mysql) = &self.mysql {
            self.validate_mysql(mysql)?;
        }
        self.validate_maintenance()
    }

    fn validate_maintenance(&self) -> Result<(), ConfigError> {
        let m = &self.maintenance;
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
        if m.vacuum.retention < m.vacuum.min_retention {
            return Err(ConfigError::key(
                "maintenance.vacuum.retention",
                format!(
                    "{} is below maintenance.vacuum.min_retention ({}); lower the minimum \
                     only if no writer takes that long to commit",
                    humantime::format_duration(m.vacuum.retention),
                    humantime::format_duration(m.vacuum.min_retention)
                ),
            ));
        }
        // A commit that keeps failing retries with the data files it already wrote; a
        // vacuum in between must not delete them, or the commit would point at nothing.
        if let Some((pipeline, timeout)) = self
            .pipelines
            .iter()
            .map(|(n, p)| (n, p.commit_retry_timeout))
            .max_by_key(|(_, t)| *t)
        {
            let needed = timeout + VACUUM_MARGIN;
            if m.vacuum.retention < needed {
                return Err(ConfigError::key(
                    "maintenance.vacuum.retention",
                    format!(
                        "{} is shorter than pipelines.{pipeline}.commit_retry_timeout ({}) \
                         plus {} margin: a vacuum could delete the files of a commit that \
                         is still being retried; raise the retention to at least {} or \
                         lower the timeout",
                        humantime::format_duration(m.vacuum.retention),
                        humantime::format_duration(timeout),
                        humantime::format_duration(VACUUM_MARGIN),
                        humantime::format_duration(needed),
                    ),
                ));
            }
        }
        let tables = self.tables();
        for (name, t) in &m.tables {
            if !tables.contains_key(name) {
                let known: Vec<&str> = tables.keys().map(String::as_str).collect();
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
        }
        Ok(())
    }

    /// Each table has one writer: two pipelines committing to one table would each skip
    /// what the other's offsets say nothing about, or fight over its state.
    fn validate_table_owners(&self) -> Result<(), ConfigError> {
        let mut owners: std::collections::BTreeMap<String, (String, &str)> = Default::default();
        for (name, p) in &self.pipelines {
            for (table, key) in [
                (p.table.clone(), "table"),
                (p.dead_letter_table(), "dead_letter_table"),
            ] {
                if let Some((other, other_key)) = owners.get(&table) {
                    return Err(ConfigError::key(
                        format!("pipelines.{name}.{key}"),
                        format!(
                            "table '{table}' is already written by pipelines.{other}.{other_key}; \
                             each table must have exactly one pipeline"
                        ),
                    ));
                }
                owners.insert(table, (name.clone(), key));
            }
        }
        Ok(())
    }

    fn validate_mysql(&self, m: &MysqlConfig) -> Result<(), ConfigError> {
        if m.host.trim().is_empty() {
            return Err(ConfigError::key("mysql.host", "must not be empty"));
        }
        check_name("mysql.user", &m.user, false)?;
        check_name("mysql.database", &m.database, true)?;
        match (&m.tls_ca_file, m.tls) {
            (Some(_), super::MysqlTls::Off) => {
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
            let p = self.pipelines.get(name).ok_or_else(|| {
                ConfigError::key(
                    "mysql.mirror",
                    format!("'{name}' is not a configured pipeline"),
                )
            })?;
            let multi_topic = self
                .sources
                .get(&p.source)
                .is_some_and(|s| s.is_multi_topic());
            if p.is_per_topic() {
                return Err(ConfigError::key(
                    "mysql.mirror",
                    format!("'{name}' writes one table per topic; the mirror takes one table per pipeline"),
                ));
            }
            if multi_topic && p.sql.is_none() && p.keys.is_empty() {
                return Err(ConfigError::key(
                    format!("pipelines.{name}.keys"),
                    "a table of several topics is mirrored by topic, partition and offset: \
                     set keys = [\"kafka_topic\", \"kafka_partition\", \"kafka_offset\"]",
                ));
            }
            if p.mode != OutputMode::Complete && p.row_keys().is_empty() {
                return Err(ConfigError::key(
                    format!("pipelines.{name}.keys"),
                    "a mirrored append table needs the columns that identify a row (the \
                     MySQL primary key, so a re-read file cannot duplicate rows)",
                ));
            }
        }
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
}

impl LookupConfig {
    /// The declared format, or the one the path implies.
    pub fn resolved_format(&self, name: &str) -> Result<LookupFormat, ConfigError> {
        if let Some(f) = self.format {
            return Ok(f);
        }
        let path = std::path::Path::new(&self.path);
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
        match ext.to_ascii_lowercase().as_str() {
            "json" | "ndjson" => Ok(LookupFormat::Json),
            "csv" => Ok(LookupFormat::Csv),
            _ if path.join("_delta_log").is_dir() => Ok(LookupFormat::Delta),
            _ => Err(ConfigError::key(
                format!("lookups.{name}.format"),
                format!(
                    "cannot tell the format of '{}': set format = \"json\", \"csv\" or \"delta\"",
                    self.path
                ),
            )),
        }
    }
}

/// Table, pipeline and source names become folder names and SQL identifiers later, so
/// they are held to a strict pattern. Group ids may also hold dots and dashes.
pub(super) fn check_name(key: &str, value: &str, identifier: bool) -> Result<(), ConfigError> {
    let ok = if identifier {
        is_identifier(value)
    } else {
        !value.is_empty()
            && value.len() <= 200
            && value
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
    };
    if ok {
        Ok(())
    } else if identifier {
        Err(ConfigError::key(
            key,
            format!("'{value}' must match [A-Za-z_][A-Za-z0-9_]{{0,63}}"),
        ))
    } else {
        Err(ConfigError::key(
            key,
            format!("'{value}' may hold only letters, digits, '.', '_' and '-'"),
        ))
    }
}
