//! Where the tables live and how to open them: the one type every part that reads or
//! writes a table (sink, maintenance, queries, the MySQL mirror, the status page) uses.

use std::collections::HashMap;
use std::path::Path;

use deltalake::{DeltaTable, DeltaTableError};
use url::Url;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("table '{table}': bad location: {message}")]
    Location { table: String, message: String },
    #[error("table '{table}'")]
    Delta {
        table: String,
        #[source]
        cause: Box<DeltaTableError>,
    },
    #[error("no Delta table '{table}' under {root} yet (has its pipeline run?)")]
    NoTable { table: String, root: String },
    #[error(
        "'{scheme}://' is not a store lakestream writes to; use a local folder, file://, \
         s3:// (S3 and S3-compatible), abfss:// or az:// (Azure ADLS Gen2, Blob, OneLake) \
         or gs:// (Google Cloud Storage)"
    )]
    Scheme { scheme: String },
}

/// The kinds of object store a table root can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Store {
    Local,
    S3,
    /// Azure Blob / ADLS Gen2, and OneLake through its ADLS endpoint.
    Azure,
    Gcs,
}

impl Store {
    /// The store of `root`; an error names the schemes there are.
    pub fn of(root: &str) -> Result<Self, StorageError> {
        let Some((scheme, _)) = root.split_once("://") else {
            return Ok(Self::Local);
        };
        match scheme.to_ascii_lowercase().as_str() {
            "file" => Ok(Self::Local),
            "s3" | "s3a" => Ok(Self::S3),
            "az" | "abfs" | "abfss" | "azure" | "adl" => Ok(Self::Azure),
            "gs" => Ok(Self::Gcs),
            other => Err(StorageError::Scheme {
                scheme: other.to_string(),
            }),
        }
    }

    /// Stores where two writers are kept apart only by a conditional create of each log
    /// entry (If-None-Match on S3 and Azure, ifGenerationMatch=0 on GCS), which the
    /// server must honour; a local folder's rename is atomic by itself.
    pub fn commits_by_conditional_create(self) -> bool {
        self != Self::Local
    }
}

/// `storage.root` (a local folder or a URL) and `storage.options` (object store
/// credentials and settings, passed to delta-rs as they are).
#[derive(Debug, Clone)]
pub struct Storage {
    pub root: String,
    pub options: HashMap<String, String>,
}

impl Storage {
    pub fn new(root: &str, options: HashMap<String, String>) -> Self {
        Self {
            root: root.to_string(),
            options,
        }
    }

    /// The table `name` is the folder `name` under the root; a local one is created so
    /// delta-rs can open it.
    pub fn url(&self, name: &str) -> Result<Url, StorageError> {
        let root = &self.root;
        let bad = |message: String| StorageError::Location {
            table: name.to_string(),
            message,
        };
        if root.contains("://") {
            let base = Url::parse(&format!("{}/", root.trim_end_matches('/')))
                .map_err(|e| bad(format!("storage.root '{root}' is not a valid URL: {e}")))?;
            return base
                .join(&format!("{name}/"))
                .map_err(|e| bad(e.to_string()));
        }
        let dir = std::path::absolute(Path::new(root).join(name))
            .map_err(|e| bad(format!("cannot resolve '{root}': {e}")))?;
        std::fs::create_dir_all(&dir)
            .map_err(|e| bad(format!("cannot create {}: {e}", dir.display())))?;
        Url::from_directory_path(&dir).map_err(|()| bad(format!("bad path {}", dir.display())))
    }

    /// The table `name` at its latest version, or an uncreated table (no version).
    pub async fn load(&self, name: &str) -> Result<DeltaTable, StorageError> {
        let url = self.url(name)?;
        DeltaTable::try_from_url_with_storage_options(url, self.options.clone())
            .await
            .map_err(|e| StorageError::Delta {
                table: name.to_string(),
                cause: Box::new(e),
            })
    }

    /// The table `name` at its latest version; an error when it has no commit yet.
    pub async fn open(&self, name: &str) -> Result<DeltaTable, StorageError> {
        let table = self.load(name).await?;
        if table.version().is_none() {
            return Err(StorageError::NoTable {
                table: name.to_string(),
                root: self.root.clone(),
            });
        }
        Ok(table)
    }
}

/// What every lakestream commit starts from: checkpoints and log cleanup are ours (the
/// sink's on `maintenance.checkpoint_interval`, `lakestream checkpoint`), never a side
/// effect of whichever commit delta-rs decides should make one.
pub fn commit_properties() -> deltalake::kernel::transaction::CommitProperties {
    deltalake::kernel::transaction::CommitProperties::default()
        .with_create_checkpoint(false)
        .with_cleanup_expired_logs(Some(false))
}
