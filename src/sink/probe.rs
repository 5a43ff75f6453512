//! Concurrent commits are safe only where the object store refuses to create a key that
//! exists (delta-rs writes each log entry with a conditional put: If-None-Match on S3 and
//! Azure, ifGenerationMatch=0 on GCS). A compatible server that ignores the condition
//! lets two writers both "win" a version and one commit silently vanishes: check once,
//! before writing anything.

use deltalake::logstore::object_store::{
    ObjectStore as _, ObjectStoreExt as _, PutMode, PutOptions, PutPayload,
};
use deltalake::logstore::LogStore as _;
use deltalake::DeltaTableBuilder;
use deltalake::{DeltaTableError, ObjectStoreError, Path};

use super::SinkError;
use crate::storage::{Storage, Store};

/// Folder (under the storage root) the probe writes its two objects to.
const PROBE_TABLE: &str = "_lakestream_probe";

/// The object store of the probe's folder under the storage root.
fn probe_store(storage: &Storage) -> Result<deltalake::logstore::ObjectStoreRef, SinkError> {
    let err = |e: DeltaTableError| SinkError::delta(PROBE_TABLE, e);
    let url = storage.url(PROBE_TABLE)?;
    Ok(DeltaTableBuilder::from_url(url)
        .map_err(err)?
        .with_storage_options(storage.options.clone())
        .build_storage()
        .map_err(err)?
        .object_store(None))
}

fn store_of(storage: &Storage) -> Store {
    Store::of(&storage.root).unwrap_or(Store::Local)
}

/// `lakestream check`: write and delete a scratch object under the storage root (a
/// folder no table uses), then [`check_conditional_put`]. What was found.
pub async fn check_storage(storage: &Storage) -> Result<String, SinkError> {
    let err = |e: DeltaTableError| SinkError::delta(PROBE_TABLE, e);
    let store = probe_store(storage)?;
    let key = Path::from(format!("check-{}.probe", uuid::Uuid::new_v4().simple()));
    store
        .put(&key, PutPayload::from_static(b"lakestream check"))
        .await
        .map_err(|e| err(e.into()))?;
    store.delete(&key).await.map_err(|e| err(e.into()))?;
    check_conditional_put(storage).await?;
    let safe = match store_of(storage).commits_by_conditional_create() {
        true => "; concurrent commits are safe (a second conditional create is refused)",
        false => "",
    };
    Ok(format!("writes and deletes work{safe}"))
}

/// Fail unless a second conditional create of one key is refused. Local folders and
/// stores with another commit protocol (a DynamoDB lock, or a declared single writer)
/// need no probe.
pub async fn check_conditional_put(storage: &Storage) -> Result<(), SinkError> {
    let (root, options) = (&storage.root, &storage.options);
    let option = |k: &str| {
        options
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(k))
            .map(|(_, v)| v.as_str())
    };
    let kind = store_of(storage);
    if !kind.commits_by_conditional_create() {
        return Ok(());
    }
    if kind == Store::S3 && option("aws_s3_locking_provider") == Some("dynamodb") {
        return Ok(());
    }
    if kind == Store::S3 && option("aws_s3_allow_unsafe_rename") == Some("true") {
        tracing::warn!(
            "storage.options.aws_s3_allow_unsafe_rename is set: commits are safe only while \
             exactly one process writes each table"
        );
        return Ok(());
    }
    let err = |e: DeltaTableError| SinkError::delta(PROBE_TABLE, e);
    let store = probe_store(storage)?;
    let key = Path::from(format!("{}.probe", uuid::Uuid::new_v4().simple()));
    let create = || PutOptions {
        mode: PutMode::Create,
        ..Default::default()
    };
    store
        .put_opts(&key, PutPayload::from_static(b"1"), create())
        .await
        .map_err(|e| err(e.into()))?;
    let second = store
        .put_opts(&key, PutPayload::from_static(b"2"), create())
        .await;
    // Best effort: a leftover probe object is a few bytes outside every table.
    let _ = store.delete(&key).await;
    match second {
        Err(ObjectStoreError::AlreadyExists { .. } | ObjectStoreError::Precondition { .. }) => {
            Ok(())
        }
        outcome => Err(SinkError::Storage(crate::storage::StorageError::Location {
            table: PROBE_TABLE.to_string(),
            message: format!(
                "the object store at {root} {} a second conditional create of the same key, \
                 so two writers committing the same table version would both succeed and \
                 one commit would be lost. {}",
                match outcome {
                    Ok(_) => "accepted".to_string(),
                    Err(e) => format!("failed ({e}) instead of refusing"),
                },
                remedy(kind)
            ),
        })),
    }
}

/// What to do about a store that does not refuse a second conditional create.
fn remedy(kind: Store) -> &'static str {
    match kind {
        Store::S3 => {
            "Use a store that honours If-None-Match (AWS S3, MinIO, Cloudflare R2 and moto \
             do), or set storage.options.aws_s3_locking_provider = \"dynamodb\" (with \
             delta_dynamo_table_name) for DynamoDB locking, or, only if exactly one process \
             ever writes each table, storage.options.aws_s3_allow_unsafe_rename = \"true\""
        }
        Store::Azure => {
            "Azure Blob Storage, ADLS Gen2, OneLake and Azurite honour If-None-Match: check \
             that storage.root reaches one of them and not a proxy that drops the header"
        }
        Store::Gcs => {
            "Google Cloud Storage and fake-gcs-server honour ifGenerationMatch=0: check that \
             storage.root reaches one of them and not a proxy that drops the precondition"
        }
        Store::Local => "",
    }
}
