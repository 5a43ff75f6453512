//! The BI layer: the SQL files of `sql/mysql/` (views over the mirrored tables), applied
//! in name order at start-up, and the read-only account dashboards log in with.

use std::path::{Path, PathBuf};

use mysql_async::prelude::Queryable;
use mysql_async::Conn;
use tracing::{info, warn};

use super::freshness;
use super::layout::ident;
use super::mysql::run;
use super::SyncError;
use crate::config::MirrorPlan;

const VERSION_TABLE: &str = "lakestream_schema_version";

/// The `.sql` files of `dir`, in name order (`001_...`, `002_...`).
pub fn sql_files(dir: &str) -> Result<Vec<PathBuf>, SyncError> {
    let entries = std::fs::read_dir(dir).map_err(|e| SyncError::Setup {
        message: format!("cannot read mysql.sql_dir '{dir}': {e}"),
    })?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "sql"))
        .collect();
    files.sort();
    Ok(files)
}

/// The text of every `.sql` file of `dir`.
pub(super) fn sql_texts(dir: &str) -> Result<Vec<String>, SyncError> {
    sql_files(dir)?
        .iter()
        .map(|path| {
            std::fs::read_to_string(path).map_err(|e| SyncError::BiSql {
                file: path.display().to_string(),
                message: e.to_string(),
            })
        })
        .collect()
}

/// Statements of a file: split at `;` that ends a line; comment-only parts dropped.
fn statements(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        current.push_str(line);
        current.push('\n');
        if line.trim_end().ends_with(';') {
            push_statement(&mut out, &current);
            current.clear();
        }
    }
    push_statement(&mut out, &current);
    out
}

fn push_statement(out: &mut Vec<String>, text: &str) {
    let code: Vec<&str> = text
        .lines()
        .filter(|l| !l.trim_start().starts_with("--") && !l.trim().is_empty())
        .collect();
    if !code.is_empty() {
        let stmt = code.join("\n");
        out.push(stmt.trim_end().trim_end_matches(';').to_string());
    }
}

/// Create lakestream's own views (`freshness`), apply every file (each statement is
/// create-or-replace, so applying again is safe) and record each file's checksum.
pub(super) async fn apply(conn: &mut Conn, dir: &str) -> Result<usize, SyncError> {
    run(
        conn,
        &format!(
            "CREATE TABLE IF NOT EXISTS {VERSION_TABLE} (\
               file VARCHAR(255) NOT NULL PRIMARY KEY, \
               checksum VARCHAR(32) NOT NULL, \
               applied_at DATETIME(6) NOT NULL) ENGINE=InnoDB"
        ),
    )
    .await?;
    for view in freshness::VIEWS {
        run(conn, view).await?;
    }
    let files = sql_files(dir)?;
    for path in &files {
        apply_file(conn, path).await?;
    }
    Ok(files.len())
}

async fn apply_file(conn: &mut Conn, path: &Path) -> Result<(), SyncError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| SyncError::BiSql {
        file: file.clone(),
        message: e.to_string(),
    })?;
    for stmt in statements(&text) {
        conn.query_drop(&stmt).await.map_err(|e| SyncError::BiSql {
            file: file.clone(),
            message: format!("{e} in: {}", first_line(&stmt)),
        })?;
    }
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let sql = format!(
        "INSERT INTO {VERSION_TABLE} (file, checksum, applied_at) VALUES (?, ?, UTC_TIMESTAMP(6)) \
         ON DUPLICATE KEY UPDATE checksum = VALUES(checksum), applied_at = VALUES(applied_at)"
    );
    conn.exec_drop(&sql, (name, checksum(&text)))
        .await
        .map_err(|e| SyncError::mysql(&sql, e))
}

fn first_line(stmt: &str) -> &str {
    stmt.lines().next().unwrap_or_default()
}

/// FNV-1a of the file: tells which text of a file was applied (not a security hash).
fn checksum(text: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// Names of the views in the current database.
async fn views(conn: &mut Conn) -> Result<Vec<String>, SyncError> {
    let sql = "SELECT TABLE_NAME FROM information_schema.VIEWS WHERE TABLE_SCHEMA = DATABASE() \
               ORDER BY TABLE_NAME";
    conn.query(sql).await.map_err(|e| SyncError::mysql(sql, e))
}

/// Create or update the BI account: it can SELECT the views and nothing else.
pub(super) async fn ensure_account(conn: &mut Conn, cfg: &MirrorPlan) -> Result<(), SyncError> {
    let Some(user) = &cfg.bi_user else {
        return Ok(());
    };
    let Ok(password) = std::env::var(&cfg.bi_password_env) else {
        warn!(
            user = %user,
            "BI account not managed: set {} to its password",
            cfg.bi_password_env
        );
        return Ok(());
    };
    let password = literal_password(&password, &cfg.bi_password_env)?;
    ident(user)?;
    let account = format!("'{user}'@'{}'", cfg.bi_host);
    // Account statements take no bound parameters: the password is checked above to
    // hold no quote or backslash, the names match strict patterns (config validation).
    for (what, sql) in [
        (
            "CREATE USER",
            format!("CREATE USER IF NOT EXISTS {account} IDENTIFIED BY '{password}'"),
        ),
        (
            "ALTER USER",
            format!("ALTER USER {account} IDENTIFIED BY '{password}'"),
        ),
    ] {
        // Reported without the statement: it holds the password.
        conn.query_drop(sql)
            .await
            .map_err(|e| SyncError::mysql(&format!("{what} {account}"), e))?;
    }
    run(
        conn,
        &format!("REVOKE ALL PRIVILEGES, GRANT OPTION FROM {account}"),
    )
    .await?;
    let db: String = conn
        .query_first("SELECT DATABASE()")
        .await
        .map_err(|e| SyncError::mysql("SELECT DATABASE()", e))?
        .unwrap_or_default();
    let views = views(conn).await?;
    for view in &views {
        run(
            conn,
            &format!(
                "GRANT SELECT ON {}.{} TO {account}",
                ident(&db)?,
                ident(view)?
            ),
        )
        .await?;
    }
    info!(account = %account, views = views.len(), "BI account can read the views only");
    Ok(())
}

fn literal_password(password: &str, env: &str) -> Result<String, SyncError> {
    let ok = (8..=128).contains(&password.len())
        && password
            .chars()
            .all(|c| c.is_ascii_graphic() && c != '\'' && c != '\\' && c != '"');
    if ok {
        Ok(password.to_string())
    } else {
        Err(SyncError::Setup {
            message: format!(
                "{env}: the BI password must be 8 to 128 printable ASCII characters without \
                 quotes or backslashes"
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_split_into_statements_without_comments() {
        let text = "-- header\nCREATE OR REPLACE VIEW a AS\nSELECT 1;\n\n-- next\nCREATE OR REPLACE VIEW b AS SELECT ';' AS x;\n-- trailing\n";
        let s = statements(text);
        assert_eq!(s.len(), 2, "{s:?}");
        assert_eq!(s[0], "CREATE OR REPLACE VIEW a AS\nSELECT 1");
        assert!(s[1].ends_with("AS x"), "{s:?}");
    }

    #[test]
    fn passwords_that_would_need_quoting_are_refused() {
        assert!(literal_password("s3cret-pass", "E").is_ok());
        for bad in ["short", "it's-a-secret", "back\\slash-x", "with space!"] {
            assert!(literal_password(bad, "E").is_err(), "{bad}");
        }
    }
}
