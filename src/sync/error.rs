//! What can go wrong in the mirror, and what each failure says about retrying.

use deltalake::DeltaTableError;

use crate::retry::{Retry, RetryHint};

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("MySQL at {address} is unreachable (is it running? check mysql.host/port)")]
    Unreachable {
        address: String,
        #[source]
        cause: Box<mysql_async::Error>,
    },
    #[error("MySQL at {address} did not answer within {seconds}s (is it running? check mysql.host/port)")]
    NoAnswer { address: String, seconds: u64 },
    /// The server answered and said no: a retry gets the same answer.
    #[error("MySQL at {address} refused account '{user}': {reason}. What to do: {hint}")]
    Refused {
        address: String,
        user: String,
        reason: String,
        hint: String,
    },
    #[error("MySQL error in `{statement}`{}", privilege_hint(cause))]
    Mysql {
        statement: String,
        #[source]
        cause: Box<mysql_async::Error>,
    },
    #[error("{file}: {message}")]
    BiSql { file: String, message: String },
    #[error("'{0}' cannot be a MySQL name: it must match [A-Za-z_][A-Za-z0-9_]{{0,63}}")]
    Name(String),
    #[error("mirror of '{table}': another sync moved it first; retrying")]
    Conflict { table: String },
    #[error("{message}")]
    Setup { message: String },
    #[error("table '{table}'")]
    Delta {
        table: String,
        #[source]
        cause: Box<DeltaTableError>,
    },
    #[error(transparent)]
    Storage(#[from] crate::storage::StorageError),
}

/// What to do when the server refused a statement for lack of a privilege.
fn privilege_hint(cause: &mysql_async::Error) -> &'static str {
    match cause {
        mysql_async::Error::Server(e) if matches!(e.code, 1044 | 1142 | 1143 | 1227 | 1410) => {
            " (the sync account lacks a privilege: grant what \
             docs/operations.md#the-mysql-accounts lists, as scripts/mysql-accounts.sh does)"
        }
        _ => "",
    }
}

impl RetryHint for SyncError {
    /// Worth another pass: the connection, or another sync in the way. Anything else
    /// (a table MySQL refuses, a bad setup) will fail the same way again.
    fn retry(&self) -> Retry {
        match self {
            Self::Conflict { .. } => Retry::Conflict,
            _ if self.is_connection() => Retry::Later,
            _ => Retry::Never,
        }
    }
}

impl SyncError {
    /// The connection itself is gone (or never came): every table fails alike, so the
    /// pass stops and the task reconnects with backoff.
    pub(super) fn is_connection(&self) -> bool {
        match self {
            Self::Unreachable { .. } | Self::NoAnswer { .. } => true,
            Self::Mysql { cause, .. } => !matches!(**cause, mysql_async::Error::Server(_)),
            _ => false,
        }
    }

    /// The server refused the account or one of its statements for lack of a
    /// privilege.
    pub fn is_refusal(&self) -> bool {
        match self {
            Self::Refused { .. } => true,
            // ER_DBACCESS_DENIED, ER_ACCESS_DENIED, ER_TABLEACCESS_DENIED,
            // ER_COLUMNACCESS_DENIED, ER_SPECIFIC_ACCESS_DENIED, ER_PROCACCESS_DENIED,
            // ER_NONEXISTING_GRANT
            Self::Mysql { cause, .. } => matches!(
                **cause,
                mysql_async::Error::Server(ref e)
                    if matches!(e.code, 1044 | 1045 | 1142 | 1143 | 1227 | 1370 | 1410)
            ),
            _ => false,
        }
    }

    pub(super) fn delta(table: &str, cause: DeltaTableError) -> Self {
        Self::Delta {
            table: table.to_string(),
            cause: Box::new(cause),
        }
    }

    pub(super) fn mysql(statement: &str, cause: mysql_async::Error) -> Self {
        let mut short: String = statement.chars().take(120).collect();
        if short.len() < statement.len() {
            short.push_str("...");
        }
        Self::Mysql {
            statement: short,
            cause: Box::new(cause),
        }
    }
}
