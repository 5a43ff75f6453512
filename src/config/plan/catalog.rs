//! `[catalog]` and each pipeline's `catalog_table`, checked: which table is registered
//! under which name.

use std::collections::BTreeMap;
use std::time::Duration;

use super::super::catalog::{CatalogConfig, CatalogKind};
use super::super::pipeline::{PipelineConfig, TOPIC};
use crate::config::ConfigError;

/// A catalog entry's name: Glue's database and table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogName {
    pub database: String,
    pub table: String,
}

impl std::fmt::Display for CatalogName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.database, self.table)
    }
}

#[derive(Debug, Clone)]
pub struct CatalogPlan {
    pub kind: CatalogKind,
    pub region: Option<String>,
    pub endpoint: Option<String>,
    pub max_backoff: Duration,
    /// Lakestream table -> its catalog entry.
    pub tables: BTreeMap<String, CatalogName>,
}

impl CatalogPlan {
    pub(super) fn compile(
        catalog: Option<&CatalogConfig>,
        pipelines: &BTreeMap<String, PipelineConfig>,
    ) -> Result<Option<Self>, ConfigError> {
        let mut tables = BTreeMap::new();
        for (name, p) in pipelines {
            let Some(entry) = &p.catalog_table else {
                continue;
            };
            let key = format!("pipelines.{name}.catalog_table");
            if catalog.is_none() {
                return Err(ConfigError::key(
                    key,
                    "names a catalog entry, but there is no [catalog] section (kind = \"glue\")",
                ));
            }
            if p.table.contains(TOPIC) {
                return Err(ConfigError::key(
                    key,
                    "a table per topic cannot have one catalog name; register a single table",
                ));
            }
            tables.insert(p.table.clone(), parse_name(&key, entry)?);
        }
        let Some(c) = catalog else {
            return Ok(None);
        };
        if let Some(endpoint) = &c.endpoint {
            url::Url::parse(endpoint).map_err(|e| {
                ConfigError::key(
                    "catalog.endpoint",
                    format!("'{endpoint}' is not a URL: {e}"),
                )
            })?;
        }
        if c.max_backoff < Duration::from_secs(1) {
            return Err(ConfigError::key(
                "catalog.max_backoff",
                "must be at least 1s",
            ));
        }
        Ok(Some(Self {
            kind: c.kind,
            region: c.region.clone(),
            endpoint: c.endpoint.clone(),
            max_backoff: c.max_backoff,
            tables,
        }))
    }
}

/// `database.table`, in the lower case Glue stores and Athena needs.
fn parse_name(key: &str, entry: &str) -> Result<CatalogName, ConfigError> {
    let valid = |s: &str| {
        !s.is_empty()
            && s.len() <= 255
            && s.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    };
    match entry.split_once('.') {
        Some((database, table)) if valid(database) && valid(table) => Ok(CatalogName {
            database: database.to_string(),
            table: table.to_string(),
        }),
        _ => Err(ConfigError::key(
            key,
            format!(
                "'{entry}' is not database.table in lower case letters, digits and \
                 underscores (Glue folds names to lower case; Athena needs them so)"
            ),
        )),
    }
}
