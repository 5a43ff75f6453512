//! Start-up validation of each pipeline: its names and tables, its triggers, its mode
//! with the settings that go with it, and the columns it names.

use super::fields::{FieldSpec, FieldType};
use super::kafka_columns::METADATA_COLUMNS;
use super::validate::check_name;
use super::{Config, ConfigError, OutputMode};

impl Config {
    pub(super) fn validate_pipeline(&self, name: &str) -> Result<(), ConfigError> {
        let key = |k: &str| format!("pipelines.{name}.{k}");
        let p = &self.pipelines[name];
        check_name(&format!("pipelines.{name}"), name, true)?;
        let source = self.sources.get(&p.source).ok_or_else(|| {
            let known: Vec<&str> = self.sources.keys().map(String::as_str).collect();
            ConfigError::key(
                key("source"),
                format!("no source '{}' (known: {})", p.source, known.join(", ")),
            )
        })?;
        // A per-topic table is checked as it would be named for a topic.
        let sample = |t: &str| super::render_table(t, "topic");
        check_name(&key("table"), &sample(&p.table), true)?;
        check_name(
            &key("dead_letter_table"),
            &sample(&p.dead_letter_table()),
            true,
        )?;
        if p.is_per_topic() && !source.is_multi_topic() {
            return Err(ConfigError::key(
                key("table"),
                format!(
                    "{{topic}} needs a source with several topics: set sources.{}.topics \
                     or topic_pattern",
                    p.source
                ),
            ));
        }
        if p.dead_letter_table().contains(super::TOPIC) != p.is_per_topic() {
            return Err(ConfigError::key(
                key("dead_letter_table"),
                "name {topic} in both table and dead_letter_table, or in neither",
            ));
        }
        if source.is_multi_topic() && p.sql.is_some() && !p.is_per_topic() {
            return Err(ConfigError::key(
                key("table"),
                "a query keeps its state per table: name the topic in it (\"name_{topic}\") \
                 so each topic has its own",
            ));
        }
        if p.dead_letter_table() == p.table {
            return Err(ConfigError::key(
                key("dead_letter_table"),
                "must differ from the output table",
            ));
        }
        if let Some(group) = &p.group_id {
            check_name(&key("group_id"), group, false)?;
        }
        if p.max_offsets_per_trigger == 0 {
            return Err(ConfigError::key(
                key("max_offsets_per_trigger"),
                "must be at least 1",
            ));
        }
        if p.max_bytes_per_trigger == 0 {
            return Err(ConfigError::key(
                key("max_bytes_per_trigger"),
                "must be at least 1",
            ));
        }
        if p.trigger_interval.is_zero() {
            return Err(ConfigError::key(
                key("trigger_interval"),
                "must be positive",
            ));
        }
        let fields = source.field_specs(&p.source)?;
        self.validate_streaming(name, &fields)?;
        if p.sql.is_some() && !p.derived().is_empty() {
            return Err(ConfigError::key(
                key("partition_by"),
                "date(...) partitions records as they are read; a query selects its own \
                 partition column",
            ));
        }
        if p.sql.is_some() {
            // Output columns come from the query: checked when it is planned at start-up.
            return Ok(());
        }
        self.validate_columns(name, &fields)
    }

    /// Columns named by a pipeline without SQL: fields of its source, partition
    /// columns of the right kind (`date()` of a NOT NULL TIMESTAMP).
    fn validate_columns(&self, name: &str, fields: &[FieldSpec]) -> Result<(), ConfigError> {
        let key = |k: &str| format!("pipelines.{name}.{k}");
        let p = &self.pipelines[name];
        for column in &p.no_dictionary_columns {
            if !fields.iter().any(|f| &f.name == column) {
                return Err(ConfigError::key(
                    key("no_dictionary_columns"),
                    format!("'{column}' is not a field of source '{}'", p.source),
                ));
            }
        }
        for column in &p.partition_by {
            if let Some(derived) = super::Derived::parse(column) {
                let derived = derived.map_err(|m| ConfigError::key(key("partition_by"), m))?;
                let from = fields.iter().find(|f| f.name == derived.from);
                if !from.is_some_and(|f| f.ty.is_timestamp() && f.required) {
                    return Err(ConfigError::key(
                        key("partition_by"),
                        format!(
                            "date() takes a NOT NULL TIMESTAMP field of source '{}'; '{}' is not one",
                            p.source, derived.from
                        ),
                    ));
                }
                if fields.iter().any(|f| f.name == derived.name)
                    || METADATA_COLUMNS.contains(&derived.name.as_str())
                {
                    return Err(ConfigError::key(
                        key("partition_by"),
                        format!(
                            "'{}' is already a column: name it (\"day = {column}\")",
                            derived.name
                        ),
                    ));
                }
                continue;
            }
            let field = fields.iter().find(|f| &f.name == column).ok_or_else(|| {
                ConfigError::key(
                    key("partition_by"),
                    format!("'{column}' is not a field of source '{}'", p.source),
                )
            })?;
            if !matches!(
                field.ty,
                FieldType::Date | FieldType::String | FieldType::Int32 | FieldType::Int64
            ) || !field.required
            {
                return Err(ConfigError::key(
                    key("partition_by"),
                    format!("'{column}' must be a NOT NULL date, string or integer field"),
                ));
            }
        }
        Ok(())
    }

    /// Mode, SQL, keys and watermark settings that belong together.
    fn validate_streaming(&self, name: &str, fields: &[FieldSpec]) -> Result<(), ConfigError> {
        let key = |k: &str| format!("pipelines.{name}.{k}");
        let p = &self.pipelines[name];
        if p.mode == OutputMode::Upsert {
            let source = &self.sources[&p.source];
            if source.schema_evolution != super::SchemaEvolution::Off {
                return Err(ConfigError::key(
                    format!("sources.{}.schema_evolution", p.source),
                    format!(
                        "not supported with upsert pipelines yet (pipelines.{name}): \
                         declare the fields"
                    ),
                ));
            }
            if p.sql.is_some() {
                return Err(ConfigError::key(
                    key("sql"),
                    "upsert mode applies the source's records as they are: remove sql \
                     (aggregates use update mode)",
                ));
            }
            if p.keys.is_empty() {
                return Err(ConfigError::key(
                    key("keys"),
                    "upsert mode MERGEs by key: list the columns that identify a record",
                ));
            }
            for k in &p.keys {
                if !fields.iter().any(|f| &f.name == k) {
                    return Err(ConfigError::key(
                        key("keys"),
                        format!("'{k}' is not a field of source '{}'", p.source),
                    ));
                }
            }
        } else if p.delete_when.is_some() {
            return Err(ConfigError::key(
                key("delete_when"),
                "only upsert mode deletes: set mode = \"upsert\" and keys",
            ));
        }
        if p.sql.is_none() && !matches!(p.mode, OutputMode::Append | OutputMode::Upsert) {
            return Err(ConfigError::key(
                key("mode"),
                format!(
                    "'{}' needs an aggregate query: set pipelines.{name}.sql",
                    p.mode.name()
                ),
            ));
        }
        if let Some(sql) = &p.sql {
            if sql.trim().is_empty() {
                return Err(ConfigError::key(key("sql"), "must name a SQL file"));
            }
        }
        if p.mode == OutputMode::Update && p.keys.is_empty() {
            return Err(ConfigError::key(
                key("keys"),
                "update mode MERGEs by key: list the query's GROUP BY columns",
            ));
        }
        for k in &p.keys {
            check_name(&key("keys"), k, true)?;
        }
        match (&p.event_time, p.watermark) {
            (Some(column), Some(_)) => {
                let field = fields.iter().find(|f| &f.name == column);
                if !field.is_some_and(|f| f.ty.is_timestamp()) {
                    return Err(ConfigError::key(
                        key("event_time"),
                        format!(
                            "'{column}' is not a TIMESTAMP field of source '{}'",
                            p.source
                        ),
                    ));
                }
            }
            (None, None) => {}
            (Some(_), None) => {
                return Err(ConfigError::key(
                    key("watermark"),
                    "event_time is set: also set the watermark delay, e.g. \"1h\"",
                ))
            }
            (None, Some(_)) => {
                return Err(ConfigError::key(
                    key("event_time"),
                    "a watermark needs the event-time column it is measured on",
                ))
            }
        }
        if p.idle_timeout.is_zero() {
            return Err(ConfigError::key(key("idle_timeout"), "must be positive"));
        }
        Ok(())
    }
}
