//! Static lookup tables (e.g. `radio_code`) that pipeline SQL joins with. Each is loaded
//! whole into memory and reloaded when its source changes (file size or time, Delta
//! version), checked at most once per `refresh_interval`.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use deltalake::arrow::array::RecordBatch;
use deltalake::arrow::json::reader::infer_json_schema_from_iterator;
use deltalake::arrow::json::ReaderBuilder;
use deltalake::datafusion::datasource::MemTable;
use deltalake::datafusion::prelude::{CsvReadOptions, SessionContext};
use tracing::info;

use super::EngineError;
use crate::config::{LookupFormat, LookupPlan};

/// What identifies one version of a lookup's source.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Stamp {
    File {
        len: u64,
        modified: Option<SystemTime>,
    },
    Delta(Option<i64>),
}

#[derive(Debug)]
pub(super) struct Lookup {
    name: String,
    config: LookupPlan,
    format: LookupFormat,
    stamp: Option<Stamp>,
    checked: Option<Instant>,
    pub rows: usize,
}

impl Lookup {
    pub(super) fn new(name: &str, config: &LookupPlan) -> Result<Self, EngineError> {
        Ok(Self {
            name: name.to_string(),
            config: config.clone(),
            format: config.format,
            stamp: None,
            checked: None,
            rows: 0,
        })
    }

    fn err(&self, message: impl ToString) -> EngineError {
        EngineError::Lookup {
            name: self.name.clone(),
            message: format!("{}: {}", self.config.path, message.to_string()),
        }
    }

    /// (Re)register the table in `ctx` if its source changed; the first call loads it.
    pub(super) async fn refresh(&mut self, ctx: &SessionContext) -> Result<(), EngineError> {
        if self
            .checked
            .is_some_and(|t| t.elapsed() < self.config.refresh_interval)
        {
            return Ok(());
        }
        self.checked = Some(Instant::now());
        match self.reload(ctx).await {
            // A file caught half-written during an edit must not stop every pipeline:
            // keep the last good version and try again at the next interval.
            Err(e) if self.stamp.is_some() => {
                tracing::warn!(lookup = %self.name, error = %crate::report::Report(&e), "lookup table not reloaded; keeping the last good version");
                Ok(())
            }
            result => result,
        }
    }

    async fn reload(&mut self, ctx: &SessionContext) -> Result<(), EngineError> {
        let stamp = self.stamp().await?;
        if self.stamp.as_ref() == Some(&stamp) {
            return Ok(());
        }
        let batches = self.load(ctx).await?;
        let schema = match batches.first() {
            Some(b) => b.schema(),
            None => return Err(self.err("the table is empty")),
        };
        self.rows = batches.iter().map(RecordBatch::num_rows).sum();
        let table = MemTable::try_new(schema, vec![batches]).map_err(|e| self.err(e))?;
        ctx.deregister_table(self.name.as_str())
            .map_err(|e| self.err(e))?;
        ctx.register_table(self.name.as_str(), Arc::new(table))
            .map_err(|e| self.err(e))?;
        if self.stamp.is_some() {
            info!(lookup = %self.name, rows = self.rows, "lookup table changed, reloaded");
        }
        self.stamp = Some(stamp);
        Ok(())
    }

    async fn stamp(&self) -> Result<Stamp, EngineError> {
        if self.format == LookupFormat::Delta {
            let table = deltalake::open_table(self.delta_url()?)
                .await
                .map_err(|e| self.err(e))?;
            return Ok(Stamp::Delta(table.version().map(|v| v as i64)));
        }
        let meta = std::fs::metadata(&self.config.path).map_err(|e| self.err(e))?;
        Ok(Stamp::File {
            len: meta.len(),
            modified: meta.modified().ok(),
        })
    }

    fn delta_url(&self) -> Result<url::Url, EngineError> {
        let path = &self.config.path;
        if path.contains("://") {
            return url::Url::parse(path).map_err(|e| self.err(e));
        }
        let dir = std::path::absolute(path).map_err(|e| self.err(e))?;
        url::Url::from_directory_path(dir).map_err(|()| self.err("not a directory"))
    }

    async fn load(&self, ctx: &SessionContext) -> Result<Vec<RecordBatch>, EngineError> {
        match self.format {
            LookupFormat::Json => self.load_json(),
            LookupFormat::Csv => ctx
                .read_csv(&self.config.path, CsvReadOptions::new())
                .await
                .map_err(|e| self.err(e))?
                .collect()
                .await
                .map_err(|e| self.err(e)),
            LookupFormat::Delta => {
                let table = deltalake::open_table(self.delta_url()?)
                    .await
                    .map_err(|e| self.err(e))?;
                let provider = table.table_provider().await.map_err(|e| self.err(e))?;
                let scratch = SessionContext::new();
                scratch
                    .read_table(provider)
                    .map_err(|e| self.err(e))?
                    .collect()
                    .await
                    .map_err(|e| self.err(e))
            }
        }
    }

    /// A JSON array of objects, or one object per line.
    fn load_json(&self) -> Result<Vec<RecordBatch>, EngineError> {
        let text = std::fs::read_to_string(&self.config.path).map_err(|e| self.err(e))?;
        let values: Vec<serde_json::Value> = match serde_json::from_str(&text) {
            Ok(serde_json::Value::Array(items)) => items,
            _ => serde_json::Deserializer::from_str(&text)
                .into_iter()
                .collect::<Result<_, _>>()
                .map_err(|e| self.err(format!("not a JSON array or JSON lines: {e}")))?,
        };
        if let Some(bad) = values.iter().find(|v| !v.is_object()) {
            return Err(self.err(format!("every entry must be an object, found {bad}")));
        }
        let schema =
            infer_json_schema_from_iterator(values.iter().map(Ok)).map_err(|e| self.err(e))?;
        let mut decoder = ReaderBuilder::new(Arc::new(schema))
            .build_decoder()
            .map_err(|e| self.err(e))?;
        decoder.serialize(&values).map_err(|e| self.err(e))?;
        Ok(decoder
            .flush()
            .map_err(|e| self.err(e))?
            .into_iter()
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_half_written_file_keeps_the_last_good_version() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("codes.json");
        std::fs::write(&path, r#"[{"code":"A"},{"code":"B"}]"#).unwrap();
        let config = LookupPlan {
            path: path.display().to_string(),
            format: LookupFormat::Json,
            refresh_interval: std::time::Duration::from_secs(1),
        };
        let mut lookup = Lookup::new("codes", &config).unwrap();
        let ctx = SessionContext::new();
        lookup.refresh(&ctx).await.unwrap();
        assert_eq!(lookup.rows, 2);

        std::fs::write(&path, r#"[{"code":"A"},{"co"#).unwrap();
        lookup.checked = None;
        lookup.refresh(&ctx).await.unwrap();
        let rows = ctx.sql("SELECT count(*) FROM codes").await.unwrap();
        let count = rows.collect().await.unwrap()[0].column(0).clone();
        assert_eq!(
            count
                .as_any()
                .downcast_ref::<deltalake::arrow::array::Int64Array>()
                .unwrap()
                .value(0),
            2
        );
        // Fixed: the next check loads it.
        std::fs::write(&path, r#"[{"code":"A"},{"code":"B"},{"code":"C"}]"#).unwrap();
        lookup.checked = None;
        lookup.refresh(&ctx).await.unwrap();
        assert_eq!(lookup.rows, 3);
    }
}
