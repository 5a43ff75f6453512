//! AWS Glue: a Delta table's entry as Athena (table_type = DELTA), Spark
//! (spark.sql.sources.provider = delta, the `path` serde parameter) and the Glue crawler's
//! own Delta tables shape it. The columns are informative: engines read the Delta log.

use aws_sdk_glue::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_glue::types::{Column, DatabaseInput, SerDeInfo, StorageDescriptor, TableInput};
use aws_sdk_glue::Client;

use super::{CatalogError, Entry, Registered};
use crate::config::{CatalogName, CatalogPlan};

pub struct Glue {
    client: Client,
}

/// The message of an SDK error: the service's code and message when it answered.
fn why<E, R>(e: &SdkError<E, R>) -> String
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    match e {
        SdkError::ServiceError(s) => {
            let err = s.err();
            format!(
                "{}: {}",
                err.code().unwrap_or("error"),
                err.message().unwrap_or("(no message)")
            )
        }
        other => format!("{other} ({})", source_chain(other)),
    }
}

fn source_chain(e: &dyn std::error::Error) -> String {
    let mut parts = Vec::new();
    let mut cause = e.source();
    while let Some(c) = cause {
        parts.push(c.to_string());
        cause = c.source();
    }
    parts.join(": ")
}

impl Glue {
    pub async fn connect(plan: &CatalogPlan) -> Self {
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .timeout_config(
                aws_config::timeout::TimeoutConfig::builder()
                    .operation_timeout(std::time::Duration::from_secs(30))
                    .build(),
            );
        if let Some(region) = &plan.region {
            loader = loader.region(aws_config::Region::new(region.clone()));
        }
        if let Some(endpoint) = &plan.endpoint {
            loader = loader.endpoint_url(endpoint);
        }
        Self {
            client: Client::new(&loader.load().await),
        }
    }

    /// Create or update `entry`'s table (and its database, the first time).
    pub async fn register(&self, entry: &Entry) -> Result<Registered, CatalogError> {
        let name = &entry.name;
        let err = |message: String| CatalogError::failed(name, message);
        let current = match self
            .client
            .get_table()
            .database_name(&name.database)
            .name(&name.table)
            .send()
            .await
        {
            Ok(out) => out.table().cloned(),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_entity_not_found_exception()) =>
            {
                None
            }
            Err(e) => return Err(err(format!("GetTable: {}", why(&e)))),
        };
        let input = table_input(entry).map_err(|e| err(e.to_string()))?;
        if let Some(table) = current {
            let same = table.storage_descriptor().is_some_and(|sd| {
                sd.location() == Some(entry.location.as_str()) && same_columns(sd.columns(), entry)
            });
            if same {
                return Ok(Registered::Unchanged);
            }
            return self.update(name, input).await;
        }
        match self.create_table(name, input.clone()).await {
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_entity_not_found_exception()) =>
            {
                self.create_database(name).await?;
                self.create_table(name, input)
                    .await
                    .map_err(|e| err(format!("CreateTable: {}", why(&e))))?;
                Ok(Registered::Created)
            }
            // Another member created it between our look and our create.
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_already_exists_exception()) =>
            {
                self.update(name, input).await
            }
            Err(e) => Err(err(format!("CreateTable: {}", why(&e)))),
            Ok(()) => Ok(Registered::Created),
        }
    }

    async fn create_table(
        &self,
        name: &CatalogName,
        input: TableInput,
    ) -> Result<(), SdkError<aws_sdk_glue::operation::create_table::CreateTableError>> {
        self.client
            .create_table()
            .database_name(&name.database)
            .table_input(input)
            .send()
            .await
            .map(|_| ())
    }

    async fn update(
        &self,
        name: &CatalogName,
        input: TableInput,
    ) -> Result<Registered, CatalogError> {
        self.client
            .update_table()
            .database_name(&name.database)
            .table_input(input)
            .send()
            .await
            .map_err(|e| CatalogError::failed(name, format!("UpdateTable: {}", why(&e))))?;
        Ok(Registered::Updated)
    }

    async fn create_database(&self, name: &CatalogName) -> Result<(), CatalogError> {
        let err = |message: String| CatalogError::failed(name, message);
        let input = DatabaseInput::builder()
            .name(&name.database)
            .description("Delta tables written by lakestream")
            .build()
            .map_err(|e| err(e.to_string()))?;
        match self
            .client
            .create_database()
            .database_input(input)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_already_exists_exception()) =>
            {
                Ok(())
            }
            Err(e) => Err(err(format!("CreateDatabase: {}", why(&e)))),
        }
    }

    /// `lakestream check`: whether `database` is there (a missing one is created at the
    /// first registration, so that is no failure).
    pub async fn probe(&self, database: &str) -> Result<String, CatalogError> {
        match self.client.get_database().name(database).send().await {
            Ok(_) => Ok(format!("Glue database '{database}' exists")),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_entity_not_found_exception()) =>
            {
                Ok(format!(
                    "Glue answers; database '{database}' does not exist yet (created at the \
                     first registration)"
                ))
            }
            Err(e) => Err(CatalogError::failed(
                &database,
                format!("GetDatabase: {}", why(&e)),
            )),
        }
    }
}

fn same_columns(columns: &[Column], entry: &Entry) -> bool {
    columns.len() == entry.columns.len()
        && columns
            .iter()
            .zip(&entry.columns)
            .all(|(c, (name, kind))| c.name() == name && c.r#type() == Some(kind.as_str()))
}

fn table_input(entry: &Entry) -> Result<TableInput, aws_sdk_glue::error::BuildError> {
    let mut sd = StorageDescriptor::builder()
        .location(&entry.location)
        .input_format("org.apache.hadoop.hive.ql.io.parquet.MapredParquetInputFormat")
        .output_format("org.apache.hadoop.hive.ql.io.parquet.MapredParquetOutputFormat")
        .serde_info(
            SerDeInfo::builder()
                .serialization_library(
                    "org.apache.hadoop.hive.ql.io.parquet.serde.ParquetHiveSerDe",
                )
                .parameters("serialization.format", "1")
                .parameters("path", &entry.location)
                .build(),
        );
    for (name, kind) in &entry.columns {
        sd = sd.columns(Column::builder().name(name).r#type(kind).build()?);
    }
    TableInput::builder()
        .name(&entry.name.table)
        .description(format!("Delta table {} written by lakestream", entry.table))
        .table_type("EXTERNAL_TABLE")
        .parameters("table_type", "DELTA")
        .parameters("spark.sql.sources.provider", "delta")
        .parameters("EXTERNAL", "TRUE")
        .parameters("lakestream.table", &entry.table)
        .parameters("lakestream.version", entry.version.to_string())
        .storage_descriptor(sd.build())
        .build()
}
