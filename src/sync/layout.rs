//! How a Delta table is laid out in MySQL: columns, key (or the hidden key hash), the
//! DDL that creates the table, and keeping an existing table in step with the Delta
//! table (columns schema evolution adds, the collation keys compare with).

use deltalake::arrow::datatypes::{DataType, SchemaRef};
use mysql_async::prelude::Queryable;
use mysql_async::Conn;

use super::mysql::{ident, run, HASH_KEY, STATE_TABLE};
use super::types::{fixed_key_bytes, mysql_type, string_key_chars};
use super::SyncError;

/// How a Delta table is laid out in MySQL.
#[derive(Debug, Clone)]
pub struct Layout {
    pub table: String,
    pub schema: SchemaRef,
    /// Columns identifying a row (empty: none, the table is only ever replaced).
    pub keys: Vec<String>,
    /// Whether the key is the hidden hash column (some key column is nullable).
    pub hashed: bool,
}

impl Layout {
    pub fn new(table: &str, schema: SchemaRef, keys: Vec<String>) -> Result<Self, SyncError> {
        for k in &keys {
            if schema.field_with_name(k).is_err() {
                return Err(SyncError::Setup {
                    message: format!("key column '{k}' is not a column of table '{table}'"),
                });
            }
        }
        let hashed = keys
            .iter()
            .any(|k| schema.field_with_name(k).is_ok_and(|f| f.is_nullable()));
        Ok(Self {
            table: table.to_string(),
            schema,
            keys,
            hashed,
        })
    }

    pub(super) fn columns(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self
            .schema
            .fields()
            .iter()
            .map(|f| f.name().as_str())
            .collect();
        if self.hashed {
            names.push(HASH_KEY);
        }
        names
    }

    fn ddl(&self, collation: &str) -> Result<String, SyncError> {
        let is_string =
            |t: &DataType| matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View);
        let key_types: Vec<&DataType> = self
            .keys
            .iter()
            .filter_map(|k| self.schema.field_with_name(k).ok().map(|f| f.data_type()))
            .collect();
        let string_keys = key_types.iter().filter(|t| is_string(t)).count();
        let fixed: usize = key_types
            .iter()
            .filter(|t| !is_string(t))
            .map(|t| fixed_key_bytes(t))
            .sum();
        let key_chars = string_key_chars(string_keys, fixed);
        let mut lines = Vec::new();
        for f in self.schema.fields() {
            let key = self.keys.contains(f.name());
            let sized = (key && !self.hashed).then_some(key_chars);
            let ty = mysql_type(f.data_type(), sized).ok_or_else(|| SyncError::Setup {
                message: format!(
                    "table '{}': column '{}' has type {} that the mirror cannot store",
                    self.table,
                    f.name(),
                    f.data_type()
                ),
            })?;
            let null = if f.is_nullable() { "NULL" } else { "NOT NULL" };
            lines.push(format!("{} {ty} {null}", ident(f.name())?));
        }
        if self.hashed {
            lines.push(format!("{HASH_KEY} BINARY(32) NOT NULL PRIMARY KEY"));
            let cols: Vec<String> = self
                .keys
                .iter()
                .map(|k| {
                    let t = self
                        .schema
                        .field_with_name(k)
                        .map(|f| f.data_type().clone());
                    // Long text is indexed by a prefix: enough to find a key's rows.
                    match t {
                        Ok(t) if is_string(&t) => Ok(format!("{}(191)", ident(k)?)),
                        _ => ident(k),
                    }
                })
                .collect::<Result<_, _>>()?;
            lines.push(format!("KEY lakestream_keys ({})", cols.join(", ")));
        } else if !self.keys.is_empty() {
            let cols: Vec<String> = self
                .keys
                .iter()
                .map(|k| ident(k))
                .collect::<Result<_, _>>()?;
            lines.push(format!("PRIMARY KEY ({})", cols.join(", ")));
        }
        Ok(format!(
            "CREATE TABLE {} (\n  {}\n) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE={collation}",
            ident(&self.table)?,
            lines.join(",\n  ")
        ))
    }
}

/// Create the table if it is missing (true: created); an existing one must have the
/// same columns. A table created now has no rows, so any sync state left for it is
/// dropped.
pub async fn ensure_table(conn: &mut Conn, layout: &Layout) -> Result<bool, SyncError> {
    let collation = no_pad_collation(conn).await?;
    let sql = "SELECT COLUMN_NAME FROM information_schema.COLUMNS \
               WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ? ORDER BY ORDINAL_POSITION";
    let existing: Vec<String> = conn
        .exec(sql, (layout.table.as_str(),))
        .await
        .map_err(|e| SyncError::mysql(sql, e))?;
    if !existing.is_empty() {
        let wanted = layout.columns();
        let existing = add_columns(conn, layout, existing).await?;
        if existing
            .iter()
            .map(String::as_str)
            .ne(wanted.iter().copied())
        {
            return Err(SyncError::Setup {
                message: format!(
                    "MySQL table '{}' has columns {existing:?} but the Delta table has {wanted:?}: \
                     drop it (DROP TABLE `{}`) and the sync recreates and refills it",
                    layout.table, layout.table
                ),
            });
        }
        if table_collation(conn, &layout.table).await? == collation {
            return Ok(false);
        }
        // Written by a version that used a PAD SPACE collation, where 'X' and 'X ' are
        // one key: rebuild it from Delta so keys compare exactly as there.
        tracing::info!(table = %layout.table, collation, "rebuilding the MySQL mirror with a NO PAD collation");
        run(conn, &format!("DROP TABLE {}", ident(&layout.table)?)).await?;
    }
    // Forget the old state first: a crash between the two statements then leaves
    // neither (redone next pass), never a new empty table with an old version.
    let forget = format!("DELETE FROM {STATE_TABLE} WHERE table_name = ?");
    conn.exec_drop(&forget, (layout.table.as_str(),))
        .await
        .map_err(|e| SyncError::mysql(&forget, e))?;
    run(conn, &layout.ddl(collation)?).await?;
    Ok(true)
}

/// Columns the Delta table gained (schema evolution: nullable, after the others) are
/// added to the MySQL table too; rows mirrored before hold NULL there, as in Delta.
/// Returns the columns the table has now.
async fn add_columns(
    conn: &mut Conn,
    layout: &Layout,
    existing: Vec<String>,
) -> Result<Vec<String>, SyncError> {
    let data: Vec<&String> = existing.iter().filter(|c| c.as_str() != HASH_KEY).collect();
    let fields = layout.schema.fields();
    let is_prefix =
        data.len() < fields.len() && data.iter().zip(fields.iter()).all(|(c, f)| *c == f.name());
    if !is_prefix || fields.iter().skip(data.len()).any(|f| !f.is_nullable()) {
        return Ok(existing);
    }
    let mut after = data.last().map(|c| c.to_string()).unwrap_or_default();
    for f in fields.iter().skip(data.len()) {
        let ty = mysql_type(f.data_type(), None).ok_or_else(|| SyncError::Setup {
            message: format!(
                "table '{}': new column '{}' has type {} that the mirror cannot store",
                layout.table,
                f.name(),
                f.data_type()
            ),
        })?;
        let sql = format!(
            "ALTER TABLE {} ADD COLUMN {} {ty} NULL AFTER {}",
            ident(&layout.table)?,
            ident(f.name())?,
            ident(&after)?
        );
        run(conn, &sql).await?;
        tracing::info!(table = %layout.table, column = %f.name(), "mirror: column added");
        after = f.name().clone();
    }
    let sql = "SELECT COLUMN_NAME FROM information_schema.COLUMNS \
               WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ? ORDER BY ORDINAL_POSITION";
    conn.exec(sql, (layout.table.as_str(),))
        .await
        .map_err(|e| SyncError::mysql(sql, e))
}

/// A binary collation that compares trailing spaces (NO PAD): MariaDB's
/// `utf8mb4_nopad_bin` or MySQL 8's `utf8mb4_0900_bin`. Servers with neither keep
/// `utf8mb4_bin`, where 'X' and 'X ' compare equal.
async fn no_pad_collation(conn: &mut Conn) -> Result<&'static str, SyncError> {
    let sql = "SELECT COLLATION_NAME FROM information_schema.COLLATIONS \
               WHERE COLLATION_NAME IN ('utf8mb4_nopad_bin', 'utf8mb4_0900_bin')";
    let found: Vec<String> = conn
        .query(sql)
        .await
        .map_err(|e| SyncError::mysql(sql, e))?;
    Ok(if found.iter().any(|c| c == "utf8mb4_nopad_bin") {
        "utf8mb4_nopad_bin"
    } else if found.iter().any(|c| c == "utf8mb4_0900_bin") {
        "utf8mb4_0900_bin"
    } else {
        tracing::warn!("MySQL has no NO PAD binary collation: string keys differing only in trailing spaces merge");
        "utf8mb4_bin"
    })
}

async fn table_collation(conn: &mut Conn, table: &str) -> Result<String, SyncError> {
    let sql = "SELECT TABLE_COLLATION FROM information_schema.TABLES \
               WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ?";
    let collation: Option<Option<String>> = conn
        .exec_first(sql, (table,))
        .await
        .map_err(|e| SyncError::mysql(sql, e))?;
    Ok(collation.flatten().unwrap_or_default())
}
