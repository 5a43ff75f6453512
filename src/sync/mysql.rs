//! The MySQL side of the mirror: the transaction that writes rows (and deletes keys)
//! together with the Delta version they reflect, and the tables' DDL. Connecting:
//! `connect`; table layout: `layout`.

use deltalake::arrow::array::RecordBatch;
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Params, TxOpts, Value};

use super::freshness::{self, Freshness};
use super::layout::{ident, Layout, HASH_KEY, STATE_TABLE};
use super::refresh::{self, Stamp};
use super::types::{mysql_type, values, ValueError};
use super::SyncError;

/// Rows of every mirrored table's sync state: the Delta version each one reflects.
/// Bound values per statement stay below the protocol's 65,535 placeholders.
pub(super) const MAX_PLACEHOLDERS: usize = 60_000;

pub(super) async fn run(conn: &mut Conn, sql: &str) -> Result<(), SyncError> {
    conn.query_drop(sql)
        .await
        .map_err(|e| SyncError::mysql(sql, e))
}

/// What a mirror reflects: a version of one Delta table (its `metaData` id: a table
/// deleted and rebuilt under the same name has a new id and starts again at version 0).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Mirrored {
    pub version: u64,
    /// None: mirrored before the id was kept.
    pub table_id: Option<String>,
}

impl Mirrored {
    /// Whether the Delta table (id `table_id`, at `version`) was deleted and rebuilt
    /// since this: a new id, or a version behind the one recorded.
    pub(super) fn rebuilt(&self, table_id: &str, version: u64) -> bool {
        self.table_id.as_ref().is_some_and(|id| id != table_id) || self.version > version
    }
}

/// What `table`'s mirror in MySQL reflects (None: never synced).
pub(super) async fn mirrored(conn: &mut Conn, table: &str) -> Result<Option<Mirrored>, SyncError> {
    let sql =
        format!("SELECT delta_version, delta_table_id FROM {STATE_TABLE} WHERE table_name = ?");
    let row: Option<(i64, Option<String>)> = conn
        .exec_first(&sql, (table,))
        .await
        .map_err(|e| SyncError::mysql(&sql, e))?;
    Ok(row.map(|(version, table_id)| Mirrored {
        version: version as u64,
        table_id,
    }))
}

/// Delete the rows whose keys `deletes` (the key columns) holds.
async fn delete_keys(
    tx: &mut mysql_async::Transaction<'_>,
    layout: &Layout,
    deletes: &RecordBatch,
) -> Result<(), SyncError> {
    let columns: Vec<Vec<Value>> = layout
        .keys
        .iter()
        .map(|k| {
            let column = deletes.column_by_name(k).ok_or_else(|| SyncError::Setup {
                message: format!("table '{}': deleted keys lack column '{k}'", layout.table),
            })?;
            values(column).map_err(|e| SyncError::Setup {
                message: format!("table '{}', column '{k}': {e}", layout.table),
            })
        })
        .collect::<Result<_, _>>()?;
    let (sql, params): (String, Vec<Vec<Value>>) = if layout.hashed {
        let sql = format!(
            "DELETE FROM {} WHERE {HASH_KEY} = UNHEX(SHA2(?, 256))",
            ident(&layout.table)?
        );
        let params = (0..deletes.num_rows())
            .map(|r| {
                let key: Vec<&Value> = columns.iter().map(|c| &c[r]).collect();
                vec![Value::Bytes(key_text(&key))]
            })
            .collect();
        (sql, params)
    } else {
        let conditions: Vec<String> = layout
            .keys
            .iter()
            .map(|k| Ok(format!("{} = ?", ident(k)?)))
            .collect::<Result<_, SyncError>>()?;
        let sql = format!(
            "DELETE FROM {} WHERE {}",
            ident(&layout.table)?,
            conditions.join(" AND ")
        );
        let params = (0..deletes.num_rows())
            .map(|r| columns.iter().map(|c| c[r].clone()).collect())
            .collect();
        (sql, params)
    };
    tx.exec_batch(&sql, params)
        .await
        .map_err(|e| SyncError::mysql(&sql, e))
}

/// One sync of a table: the rows (and deleted keys) to bring in, and the version they
/// take the mirror from and to.
pub(super) struct Rows<'a> {
    pub batches: &'a [RecordBatch],
    pub deletes: Option<&'a RecordBatch>,
    /// Swap the whole content rather than upsert.
    pub replace: bool,
    pub from: Option<u64>,
    pub to: Mirrored,
    pub fresh: Freshness,
}

/// A transaction holding `table`'s state row, which must still record version `from`
/// (`Conflict` when another sync moved it first; nothing is written then).
pub(super) async fn begin_at<'c>(
    conn: &'c mut Conn,
    table: &str,
    from: Option<u64>,
) -> Result<mysql_async::Transaction<'c>, SyncError> {
    let mut tx = conn
        .start_transaction(TxOpts::default())
        .await
        .map_err(|e| SyncError::mysql("START TRANSACTION", e))?;
    let check = format!("SELECT delta_version FROM {STATE_TABLE} WHERE table_name = ? FOR UPDATE");
    let current: Option<i64> = tx
        .exec_first(&check, (table,))
        .await
        .map_err(|e| SyncError::mysql(&check, e))?;
    if current.map(|v| v as u64) != from {
        return Err(SyncError::Conflict {
            table: table.to_string(),
        });
    }
    Ok(tx)
}

/// Record that `table` now reflects `to`, in the transaction that wrote its rows.
pub(super) async fn save_state(
    tx: &mut mysql_async::Transaction<'_>,
    table: &str,
    to: &Mirrored,
    written: u64,
) -> Result<(), SyncError> {
    let state = format!(
        "INSERT INTO {STATE_TABLE} \
         (table_name, delta_version, rows_written, synced_at, delta_table_id) \
         VALUES (?, ?, ?, UTC_TIMESTAMP(6), ?) ON DUPLICATE KEY UPDATE \
         delta_version = VALUES(delta_version), \
         rows_written = rows_written + VALUES(rows_written), synced_at = VALUES(synced_at), \
         delta_table_id = VALUES(delta_table_id)"
    );
    let params = (
        table,
        to.version as i64,
        written as i64,
        to.table_id.as_deref(),
    );
    tx.exec_drop(&state, params)
        .await
        .map_err(|e| SyncError::mysql(&state, e))
}

/// Write `rows` and the new state in one transaction: upsert by key, or (with
/// `replace`) swap the whole content. Readers see the old rows or the new, never a
/// mix. Fails with `Conflict` when the recorded version is no longer `from` (another
/// sync got there first); nothing is written then.
pub(super) async fn write(
    conn: &mut Conn,
    layout: &Layout,
    rows: &Rows<'_>,
    batch_rows: usize,
) -> Result<u64, SyncError> {
    let Rows {
        batches,
        deletes,
        replace,
        from,
        ref to,
        ref fresh,
    } = *rows;
    let mut tx = begin_at(conn, &layout.table, from).await?;
    if replace {
        let sql = format!("DELETE FROM {}", ident(&layout.table)?);
        tx.query_drop(&sql)
            .await
            .map_err(|e| SyncError::mysql(&sql, e))?;
    }
    if let Some(deletes) = deletes.filter(|d| d.num_rows() > 0) {
        delete_keys(&mut tx, layout, deletes).await?;
    }
    let mut written = 0u64;
    for batch in batches.iter().filter(|b| b.num_rows() > 0) {
        written += insert_batch(&mut tx, layout, batch, fresh.stamp, batch_rows).await?;
    }
    save_state(&mut tx, &layout.table, to, written).await?;
    freshness::record(&mut tx, layout, fresh).await?;
    tx.commit()
        .await
        .map_err(|e| SyncError::mysql("COMMIT", e))?;
    Ok(written)
}

async fn insert_batch(
    tx: &mut mysql_async::Transaction<'_>,
    layout: &Layout,
    batch: &RecordBatch,
    stamp: Stamp,
    batch_rows: usize,
) -> Result<u64, SyncError> {
    let bad = |e: ValueError| SyncError::Setup {
        message: format!("table '{}', refresh columns: {e}", layout.table),
    };
    let refresh = layout.refresh.values(batch, stamp).map_err(bad)?;
    let columns: Vec<Vec<Value>> = batch
        .columns()
        .iter()
        .zip(batch.schema().fields())
        .map(|(c, f)| {
            values(c).map_err(|e| SyncError::Setup {
                message: format!("table '{}', column '{}': {e}", layout.table, f.name()),
            })
        })
        .collect::<Result<_, _>>()?;
    let key_index: Vec<usize> = layout
        .keys
        .iter()
        .filter_map(|k| batch.schema().index_of(k).ok())
        .collect();
    let per_row = columns.len() + usize::from(layout.hashed) + refresh.len();
    let chunk = batch_rows.min(MAX_PLACEHOLDERS / per_row.max(1)).max(1);
    let rows = batch.num_rows();
    let mut start = 0;
    while start < rows {
        let end = (start + chunk).min(rows);
        let sql = insert_sql(layout, end - start)?;
        let mut params = Vec::with_capacity((end - start) * per_row);
        for r in start..end {
            params.extend(columns.iter().map(|c| c[r].clone()));
            if layout.hashed {
                let key: Vec<&Value> = key_index.iter().map(|&i| &columns[i][r]).collect();
                params.push(Value::Bytes(key_text(&key)));
            }
            params.extend(refresh.iter().map(|c| c[r].clone()));
        }
        tx.exec_drop(&sql, Params::Positional(params))
            .await
            .map_err(|e| SyncError::mysql(&sql, e))?;
        start = end;
    }
    Ok(rows as u64)
}

/// `INSERT ... VALUES (...), ... ON DUPLICATE KEY UPDATE` for `rows` rows: values are
/// absolute, so writing a row twice leaves it as written once.
fn insert_sql(layout: &Layout, rows: usize) -> Result<String, SyncError> {
    let names: Vec<String> = layout
        .columns()
        .iter()
        .map(|c| ident(c))
        .collect::<Result<_, _>>()?;
    let mut one: Vec<&str> = vec!["?"; layout.schema.fields().len()];
    if layout.hashed {
        one.push("UNHEX(SHA2(?, 256))");
    }
    one.extend(["?"; refresh::COLUMNS.len()]);
    let one = format!("({})", one.join(", "));
    let mut sql = format!(
        "INSERT INTO {} ({}) VALUES {}",
        ident(&layout.table)?,
        names.join(", "),
        vec![one.as_str(); rows].join(", ")
    );
    if !layout.keys.is_empty() {
        let updates: Vec<String> = names.iter().map(|n| format!("{n} = VALUES({n})")).collect();
        sql.push_str(" ON DUPLICATE KEY UPDATE ");
        sql.push_str(&updates.join(", "));
    }
    Ok(sql)
}

/// A NULL-safe, unambiguous text of a key tuple: each value tagged and length-prefixed.
fn key_text(values: &[&Value]) -> Vec<u8> {
    let mut out = Vec::new();
    for v in values {
        let text = match v {
            Value::NULL => {
                out.push(b'N');
                continue;
            }
            Value::Bytes(b) => b.clone(),
            Value::Int(i) => i.to_string().into_bytes(),
            Value::UInt(u) => u.to_string().into_bytes(),
            Value::Float(f) => f.to_bits().to_string().into_bytes(),
            Value::Double(f) => f.to_bits().to_string().into_bytes(),
            Value::Date(y, mo, d, h, mi, s, us) => {
                format!("{y}-{mo}-{d} {h}:{mi}:{s}.{us}").into_bytes()
            }
            Value::Time(neg, d, h, mi, s, us) => format!("{neg}{d} {h}:{mi}:{s}.{us}").into_bytes(),
        };
        out.push(b'V');
        out.extend_from_slice(text.len().to_string().as_bytes());
        out.push(b':');
        out.extend_from_slice(&text);
    }
    out
}

/// Create the table if it is missing (true: created); an existing one must have the
/// same columns. A table created now has no rows, so any sync state left for it is
/// dropped.
pub(super) async fn ensure_table(conn: &mut Conn, layout: &Layout) -> Result<bool, SyncError> {
    let collation = no_pad_collation(conn).await?;
    let sql = "SELECT COLUMN_NAME FROM information_schema.COLUMNS \
               WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ? ORDER BY ORDINAL_POSITION";
    let existing: Vec<String> = conn
        .exec(sql, (layout.table.as_str(),))
        .await
        .map_err(|e| SyncError::mysql(sql, e))?;
    if mirrored_before_refresh(layout, &existing) {
        // Mirrored before the refresh columns: rebuilt from Delta, which fills them.
        tracing::info!(table = %layout.table, "adding the refresh columns: rebuilding the MySQL mirror from Delta");
        run(conn, &format!("DROP TABLE {}", ident(&layout.table)?)).await?;
    } else if !existing.is_empty() {
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

/// An older lakestream mirror of this table: some of the Delta columns in order (schema
/// evolution may have added more since) and none of the refresh columns. Anything else
/// is someone's table, never dropped.
fn mirrored_before_refresh(layout: &Layout, existing: &[String]) -> bool {
    let fields = layout.schema.fields();
    !existing.is_empty()
        && existing.len() <= fields.len()
        && existing
            .iter()
            .zip(fields.iter())
            .all(|(c, f)| c == f.name())
}

/// Columns the Delta table gained (schema evolution: nullable, after the others) are
/// added to the MySQL table too; rows mirrored before hold NULL there, as in Delta.
/// Returns the columns the table has now.
async fn add_columns(
    conn: &mut Conn,
    layout: &Layout,
    existing: Vec<String>,
) -> Result<Vec<String>, SyncError> {
    let data: Vec<&String> = existing
        .iter()
        .filter(|c| Layout::is_data_column(c))
        .collect();
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
pub(super) async fn no_pad_collation(conn: &mut Conn) -> Result<&'static str, SyncError> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_text_keeps_null_apart_from_empty_and_is_unambiguous() {
        let (null, empty) = (Value::NULL, Value::Bytes(Vec::new()));
        assert_ne!(key_text(&[&null]), key_text(&[&empty]));
        let (ab, c) = (Value::Bytes(b"ab".to_vec()), Value::Bytes(b"c".to_vec()));
        let (a, bc) = (Value::Bytes(b"a".to_vec()), Value::Bytes(b"bc".to_vec()));
        assert_ne!(key_text(&[&ab, &c]), key_text(&[&a, &bc]));
    }

    #[test]
    fn hostile_names_never_reach_sql() {
        for name in ["a`b", "x'; DROP TABLE t; --", "t;", &"n".repeat(65), ""] {
            assert!(ident(name).is_err(), "{name}");
        }
        assert_eq!(ident("calls").expect("ok"), "`calls`");
    }
}
