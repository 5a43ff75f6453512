//! How a Delta table is laid out in MySQL: columns, key (or the hidden key hash), the
//! names lakestream gives its own tables and columns, and the DDL text. Running it (and
//! keeping an existing table in step with the Delta table) is `mysql`'s.

use deltalake::arrow::datatypes::{DataType, SchemaRef};

use super::refresh::{self, Refresh};
use super::types::{fixed_key_bytes, mysql_type, string_key_chars};
use super::SyncError;
use crate::config::is_identifier;

/// The table that records which Delta version (and table id) each mirror reflects.
pub(super) const STATE_TABLE: &str = "lakestream_sync_state";
/// Hidden primary key of a table whose key columns may hold NULL (a MySQL primary key
/// cannot): SHA-256 of the key values, NULL-safe.
pub(super) const HASH_KEY: &str = "lakestream_key";

/// `name` as a quoted identifier, after checking it against the strict pattern (quoting
/// alone would also do; the check keeps odd names out of BI tools too).
pub(super) fn ident(name: &str) -> Result<String, SyncError> {
    if is_identifier(name) {
        Ok(format!("`{name}`"))
    } else {
        Err(SyncError::Name(name.to_string()))
    }
}

/// How a Delta table is laid out in MySQL.
#[derive(Debug, Clone)]
pub(super) struct Layout {
    pub table: String,
    pub schema: SchemaRef,
    /// Columns identifying a row (empty: none, the table is only ever replaced).
    pub keys: Vec<String>,
    /// Whether the key is the hidden hash column (some key column is nullable).
    pub hashed: bool,
    /// The refresh columns after the others (see `refresh`).
    pub refresh: Refresh,
}

impl Layout {
    pub(super) fn new(
        table: &str,
        schema: SchemaRef,
        keys: Vec<String>,
        zone: chrono_tz::Tz,
    ) -> Result<Self, SyncError> {
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
        let refresh = Refresh::new(&schema, &keys, zone);
        Ok(Self {
            table: table.to_string(),
            schema,
            keys,
            hashed,
            refresh,
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
        names.extend(refresh::COLUMNS);
        names
    }

    /// The columns the Delta table's rows fill (not the hidden key nor the refresh
    /// columns).
    pub(super) fn is_data_column(name: &str) -> bool {
        name != HASH_KEY && !refresh::COLUMNS.contains(&name)
    }

    pub(super) fn ddl(&self, collation: &str) -> Result<String, SyncError> {
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
        lines.extend(Refresh::ddl_lines());
        Ok(format!(
            "CREATE TABLE {} (\n  {}\n) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE={collation}",
            ident(&self.table)?,
            lines.join(",\n  ")
        ))
    }
}
