//! Catalog registration: each pipeline's `catalog_table` is created in the configured
//! catalog once its table exists (its first commit, so never a half-created table), and
//! updated when its columns change. A background task does it, so a catalog outage delays
//! registration, never ingestion; failures are retried with backoff.

mod columns;
mod glue;
mod registrar;

use crate::config::{CatalogKind, CatalogName, CatalogPlan};

pub use columns::hive_columns;
pub use glue::Glue;
pub use registrar::{spawn, Offers};

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("catalog entry {entry}: {message}")]
    Failed { entry: String, message: String },
}

impl CatalogError {
    fn failed(entry: &impl std::fmt::Display, message: impl Into<String>) -> Self {
        Self::Failed {
            entry: entry.to_string(),
            message: message.into(),
        }
    }
}

/// What a table's entry says: where it is and its columns (Hive type names).
#[derive(Debug, Clone)]
pub struct Entry {
    pub name: CatalogName,
    /// The lakestream table.
    pub table: String,
    pub location: String,
    pub columns: Vec<(String, String)>,
    /// The Delta version whose schema this is.
    pub version: i64,
}

/// What a registration did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Registered {
    Created,
    Updated,
    Unchanged,
}

/// The configured catalog: one arm per kind, each a file of this folder.
pub enum Catalog {
    Glue(Glue),
}

impl Catalog {
    pub async fn connect(plan: &CatalogPlan) -> Self {
        match plan.kind {
            CatalogKind::Glue => Self::Glue(Glue::connect(plan).await),
        }
    }

    /// Create or update `entry` (and what holds it, the first time).
    pub async fn register(&self, entry: &Entry) -> Result<Registered, CatalogError> {
        match self {
            Self::Glue(glue) => glue.register(entry).await,
        }
    }

    /// What `lakestream check` finds of `database`.
    pub async fn probe(&self, database: &str) -> Result<String, CatalogError> {
        match self {
            Self::Glue(glue) => glue.probe(database).await,
        }
    }
}

/// `lakestream check`: every database the tables are registered in answers.
pub async fn check(plan: &CatalogPlan) -> Result<Vec<String>, CatalogError> {
    let catalog = Catalog::connect(plan).await;
    let mut databases: Vec<&str> = plan.tables.values().map(|n| n.database.as_str()).collect();
    databases.sort_unstable();
    databases.dedup();
    if databases.is_empty() {
        return Ok(vec![
            "configured, but no pipeline names a catalog_table: nothing is registered".into(),
        ]);
    }
    let mut found = Vec::new();
    for database in databases {
        found.push(catalog.probe(database).await?);
    }
    Ok(found)
}
