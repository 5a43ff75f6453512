//! Opening (or creating) a Delta table and writing data files into it.

use std::collections::HashMap;
use std::path::Path;

use deltalake::arrow::array::RecordBatch;
use deltalake::arrow::datatypes::SchemaRef;
use deltalake::kernel::engine::arrow_conversion::TryIntoKernel as _;
use deltalake::kernel::{Add, StructType};
use deltalake::parquet::basic::{Compression, ZstdLevel};
use deltalake::parquet::file::properties::{EnabledStatistics, WriterProperties};
use deltalake::protocol::SaveMode;
use deltalake::writer::{DeltaWriter, RecordBatchWriter};
use deltalake::{DeltaTable, DeltaTableError};
use url::Url;

use super::SinkError;

/// Where a table lives: `root` is a local path or a URL; the table is the folder `name`.
pub fn table_url(root: &str, name: &str) -> Result<Url, SinkError> {
    let bad = |message: String| SinkError::Location {
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

/// Open the existing table `name` under `root` at its latest version.
pub async fn open_existing(
    root: &str,
    name: &str,
    options: &HashMap<String, String>,
) -> Result<DeltaTable, SinkError> {
    let url = table_url(root, name)?;
    DeltaTable::try_from_url_with_storage_options(url, options.clone())
        .await
        .map_err(|e| SinkError::delta(name, e))
}

/// Load the table at `url`, creating it with `schema` if there is none. Two processes
/// may race to create it: the loser finds the winner's table and checks it.
pub async fn open_or_create(
    url: &Url,
    name: &str,
    schema: &SchemaRef,
    partition_by: &[String],
    options: &HashMap<String, String>,
) -> Result<DeltaTable, SinkError> {
    let err = |source: DeltaTableError| SinkError::delta(name, source);
    let table = DeltaTable::try_from_url_with_storage_options(url.clone(), options.clone())
        .await
        .map_err(err)?;
    let table = if table.version().is_some() {
        table
    } else {
        let columns: StructType = schema.as_ref().try_into_kernel().map_err(|e| {
            err(DeltaTableError::Generic(format!(
                "schema cannot be stored: {e}"
            )))
        })?;
        table
            .create()
            .with_table_name(name)
            .with_columns(columns.fields().cloned())
            .with_partition_columns(partition_by.to_vec())
            .with_save_mode(SaveMode::Ignore)
            .await
            .map_err(err)?
    };
    check_schema(&table, name, schema, partition_by)?;
    Ok(table)
}

/// A table written by another version of the config must still match what we write.
fn check_schema(
    table: &DeltaTable,
    name: &str,
    schema: &SchemaRef,
    partition_by: &[String],
) -> Result<(), SinkError> {
    let snapshot = table
        .snapshot()
        .map_err(|source| SinkError::delta(name, source))?;
    let existing: Vec<(String, String)> = snapshot
        .schema()
        .fields()
        .map(|f| (f.name().clone(), f.data_type().to_string()))
        .collect();
    let wanted: StructType = schema
        .as_ref()
        .try_into_kernel()
        .map_err(|e| SinkError::Schema {
            table: name.to_string(),
            message: e.to_string(),
        })?;
    let wanted: Vec<(String, String)> = wanted
        .fields()
        .map(|f| (f.name().clone(), f.data_type().to_string()))
        .collect();
    if existing != wanted {
        return Err(SinkError::Schema {
            table: name.to_string(),
            message: format!(
                "the table has columns {existing:?} but the pipeline writes {wanted:?}; \
                 write to a new table or migrate this one"
            ),
        });
    }
    let parts = snapshot.metadata().partition_columns();
    if !parts.iter().eq(partition_by.iter()) {
        return Err(SinkError::Schema {
            table: name.to_string(),
            message: format!(
                "the table is partitioned by {parts:?}, the config says {partition_by:?}"
            ),
        });
    }
    Ok(())
}

/// Parquet settings for data files. Delta keeps its own file-level statistics, so page
/// statistics are not worth their cost; dictionaries of near-unique columns are built
/// only to be thrown away (measured: 30% less write time, 25% smaller files on SF calls).
pub fn writer_properties(zstd_level: i32, no_dictionary: &[String]) -> WriterProperties {
    let level = ZstdLevel::try_new(zstd_level).unwrap_or_default();
    let mut builder = WriterProperties::builder()
        .set_compression(Compression::ZSTD(level))
        .set_statistics_enabled(EnabledStatistics::Chunk);
    for column in no_dictionary {
        builder = builder.set_column_dictionary_enabled(column.as_str().into(), false);
    }
    builder.build()
}

/// Write `rows` as Parquet data files of `table` (split by partition values) and return
/// their `add` actions, not yet committed.
pub async fn write_files(
    table: &DeltaTable,
    rows: RecordBatch,
    props: WriterProperties,
    target_file_size: u64,
) -> Result<Vec<Add>, DeltaTableError> {
    if rows.num_rows() == 0 {
        return Ok(Vec::new());
    }
    let mut writer = RecordBatchWriter::for_table(table)?
        .with_writer_properties(props)
        .with_target_file_size(target_file_size);
    writer.write(rows).await?;
    writer.flush().await
}
