//! `lakestream check` of the MySQL side: the sync account connects and holds what the
//! mirror needs (docs/operations.md#the-mysql-accounts), read from its own grants; nothing
//! is created.

use mysql_async::prelude::Queryable;

use super::SyncError;
use crate::config::MirrorPlan;

/// What the mirror does in its database: its tables and sync state, the BI views and
/// their time-zone function.
const ON_DATABASE: [&str; 13] = [
    "SELECT",
    "INSERT",
    "UPDATE",
    "DELETE",
    "CREATE",
    "DROP",
    "ALTER",
    "INDEX",
    "CREATE VIEW",
    "SHOW VIEW",
    "CREATE ROUTINE",
    "ALTER ROUTINE",
    "EXECUTE",
];

/// Connect as the sync account and compare its grants with what the mirror needs (and,
/// when the BI account is managed, what creating it and granting it the views takes).
pub async fn check_account(cfg: &MirrorPlan) -> Result<String, SyncError> {
    let mut conn = super::connect::open(cfg).await?;
    let sql = "SHOW GRANTS FOR CURRENT_USER()";
    let grants: Vec<String> = conn
        .query(sql)
        .await
        .map_err(|e| SyncError::mysql(sql, e))?;
    let _ = conn.disconnect().await;
    let grants: Vec<Grant> = grants.iter().filter_map(|g| Grant::parse(g)).collect();
    let db = &cfg.database;
    let mut missing: Vec<String> = ON_DATABASE
        .iter()
        .filter(|p| !grants.iter().any(|g| g.covers(db) && g.has(p)))
        .map(|p| format!("{p} on `{db}`.*"))
        .collect();
    let bi = cfg
        .bi_user
        .as_ref()
        .filter(|_| std::env::var(&cfg.bi_password_env).is_ok());
    if let Some(bi) = bi {
        if !grants.iter().any(|g| g.covers("*") && g.has("CREATE USER")) {
            missing.push(format!("CREATE USER on *.* (to manage BI account '{bi}')"));
        }
        if !grants.iter().any(|g| g.covers(db) && g.grant_option) {
            missing.push(format!(
                "GRANT OPTION on `{db}`.* (to let '{bi}' read the views)"
            ));
        }
    }
    let address = format!("{}:{}", cfg.host, cfg.port);
    if !missing.is_empty() {
        return Err(SyncError::Refused {
            address,
            user: cfg.user.clone(),
            reason: format!("the account lacks {}", missing.join(", ")),
            hint: "grant them (scripts/mysql-accounts.sh does; docs/operations.md#the-mysql-accounts lists them)".into(),
        });
    }
    let managed = match bi {
        Some(bi) => format!(" and manage the read-only BI account '{bi}'"),
        None => String::new(),
    };
    Ok(format!(
        "'{}' at {address} may write database '{db}'{managed}",
        cfg.user
    ))
}

/// One line of SHOW GRANTS: `GRANT <privileges> ON <db>.<table> TO ... [WITH GRANT OPTION]`.
#[derive(Debug, PartialEq, Eq)]
struct Grant {
    privileges: Vec<String>,
    /// The database (`*`: all).
    database: String,
    grant_option: bool,
}

impl Grant {
    fn parse(line: &str) -> Option<Self> {
        let rest = line.strip_prefix("GRANT ")?;
        let (privileges, rest) = rest.split_once(" ON ")?;
        let (scope, tail) = rest.split_once(" TO ")?;
        let (database, table) = scope.rsplit_once('.')?;
        if table != "*" {
            return None; // table or routine grants: not what the mirror relies on
        }
        let database = database
            .trim_matches('`')
            .replace("\\_", "_")
            .replace("\\%", "%");
        Some(Self {
            privileges: privileges
                .split(',')
                .map(|p| p.trim().to_ascii_uppercase())
                .collect(),
            database,
            grant_option: tail.contains("WITH GRANT OPTION"),
        })
    }

    fn covers(&self, database: &str) -> bool {
        self.database == "*" || self.database == database
    }

    fn has(&self, privilege: &str) -> bool {
        self.privileges
            .iter()
            .any(|p| p == privilege || p == "ALL PRIVILEGES" || p == "ALL")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grants_read_back() {
        let g = Grant::parse(
            "GRANT SELECT, INSERT, CREATE VIEW ON `lake\\_db`.* TO `sync`@`localhost` WITH GRANT OPTION",
        )
        .unwrap();
        assert!(g.covers("lake_db") && g.has("CREATE VIEW") && g.grant_option);
        assert!(!g.has("DROP"));
        let all = Grant::parse("GRANT ALL PRIVILEGES ON *.* TO `root`@`localhost`").unwrap();
        assert!(all.covers("anything") && all.has("SHOW VIEW") && !all.grant_option);
        assert_eq!(Grant::parse("GRANT `role` TO `sync`@`%`"), None);
        assert_eq!(Grant::parse("GRANT SELECT ON `db`.`t` TO `x`@`%`"), None);
    }
}
