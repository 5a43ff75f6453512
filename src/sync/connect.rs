//! Connecting to MySQL as the sync account: its password, TLS, and a refusal told apart
//! from a server that is not there.

use std::time::Duration;

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, OptsBuilder, SslOpts};

use super::freshness;
use super::layout::{ident, STATE_TABLE};
use super::mysql::run;
use super::SyncError;
use crate::config::{MirrorPlan, MysqlTls};

/// The password: the environment variable when it is set (containers pass secrets
/// that way), else the file named in config (`~/` is the home folder), else none.
pub(super) fn password(cfg: &MirrorPlan) -> Result<Option<String>, SyncError> {
    if let Ok(password) = std::env::var(&cfg.password_env) {
        return Ok(Some(password));
    }
    let Some(path) = cfg.password_file.as_deref().filter(|p| !p.is_empty()) else {
        return Ok(None); // `mysql.password_file=` (empty) turns the default file off
    };
    let path = crate::config::expand_home(path);
    let text = std::fs::read_to_string(&path).map_err(|e| SyncError::Refused {
        address: format!("{}:{}", cfg.host, cfg.port),
        user: cfg.user.clone(),
        reason: format!("cannot read mysql.password_file {} ({e})", path.display()),
        hint: format!(
            "create the sync account and its password file with scripts/mysql-accounts.sh, \
             or set ${} to the account's password",
            cfg.password_env
        ),
    })?;
    Ok(Some(text.lines().next().unwrap_or_default().to_string()))
}

/// Why a connection failed: refused for good (the account, its password or privileges,
/// TLS), or unreachable for now (retried).
fn refused(cfg: &MirrorPlan, address: &str, cause: mysql_async::Error) -> SyncError {
    let password = match &cfg.password_file {
        Some(file) => format!("the password in mysql.password_file ({file})"),
        None => format!("the password in ${}", cfg.password_env),
    };
    let user = &cfg.user;
    let hint = match &cause {
        mysql_async::Error::Server(e) => match e.code {
            // ER_ACCESS_DENIED_ERROR, ER_ACCESS_DENIED_NO_PASSWORD_ERROR (an account
            // that only logs in through the unix socket, as Debian's root).
            1045 | 1698 => format!(
                "check mysql.user ('{user}') and {password}; as shipped, Debian's MariaDB lets \
                 root in only through its unix socket: create the sync account with \
                 scripts/mysql-accounts.sh (see docs/operations.md#the-mysql-accounts)"
            ),
            // ER_DBACCESS_DENIED_ERROR, ER_BAD_DB_ERROR
            1044 | 1049 => format!(
                "grant '{user}' its privileges on database '{}' (scripts/mysql-accounts.sh \
                 does), or set mysql.database",
                cfg.database
            ),
            // ER_HOST_NOT_PRIVILEGED, ER_HOST_IS_BLOCKED
            1130 | 1129 => format!(
                "the server does not let '{user}' in from this host: create the account for \
                 it (or run `mariadb-admin flush-hosts`)"
            ),
            _ => return unreachable(address, cause),
        },
        mysql_async::Error::Io(mysql_async::IoError::Tls(_)) => {
            "the TLS handshake failed: check mysql.tls and mysql.tls_ca_file (the CA that \
             signed the server's certificate) and that the certificate names mysql.host"
                .to_string()
        }
        _ => return unreachable(address, cause),
    };
    SyncError::Refused {
        address: address.to_string(),
        user: user.clone(),
        reason: cause.to_string(),
        hint,
    }
}

fn unreachable(address: &str, cause: mysql_async::Error) -> SyncError {
    SyncError::Unreachable {
        address: address.to_string(),
        cause: Box::new(cause),
    }
}

/// A server that accepts the TCP connection but never answers must not hang a pass.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Connect (nothing else); a refused account or TLS setup is [`SyncError::Refused`].
pub(super) async fn open(cfg: &MirrorPlan) -> Result<Conn, SyncError> {
    let opts = OptsBuilder::default()
        .ip_or_hostname(cfg.host.clone())
        .tcp_port(cfg.port)
        .user(Some(cfg.user.clone()))
        .pass(password(cfg)?)
        .ssl_opts(ssl_opts(cfg))
        .init(vec!["SET time_zone = '+00:00'", "SET NAMES utf8mb4"]);
    let connecting = Conn::new(opts);
    let address = format!("{}:{}", cfg.host, cfg.port);
    tokio::time::timeout(CONNECT_TIMEOUT, connecting)
        .await
        .map_err(|_| SyncError::NoAnswer {
            address: address.clone(),
            seconds: CONNECT_TIMEOUT.as_secs(),
        })?
        .map_err(|cause| refused(cfg, &address, cause))
}

/// Connect, create the database if needed and select it. The session runs in UTC, so
/// DATETIME columns hold the same instants as the Delta timestamps.
pub(super) async fn connect(cfg: &MirrorPlan) -> Result<Conn, SyncError> {
    let mut conn = open(cfg).await?;
    let db = ident(&cfg.database)?;
    run(
        &mut conn,
        &format!("CREATE DATABASE IF NOT EXISTS {db} CHARACTER SET utf8mb4"),
    )
    .await?;
    run(&mut conn, &format!("USE {db}")).await?;
    run(
        &mut conn,
        &format!(
            "CREATE TABLE IF NOT EXISTS {STATE_TABLE} (\
               table_name VARCHAR(64) NOT NULL PRIMARY KEY, \
               delta_version BIGINT NOT NULL, \
               rows_written BIGINT NOT NULL, \
               synced_at DATETIME(6) NOT NULL, \
               delta_table_id VARCHAR(64) NULL) ENGINE=InnoDB"
        ),
    )
    .await?;
    // State tables made by older versions lack the later columns (MySQL has no ADD
    // COLUMN IF NOT EXISTS).
    let sql = "SELECT COLUMN_NAME FROM information_schema.COLUMNS \
               WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ?";
    let has: Vec<String> = conn
        .exec(sql, (STATE_TABLE,))
        .await
        .map_err(|e| SyncError::mysql("reading the sync state's columns", e))?;
    let later = [("delta_table_id", "VARCHAR(64) NULL")]
        .into_iter()
        .chain(freshness::STATE_COLUMNS);
    for (column, ty) in later.filter(|(c, _)| !has.iter().any(|h| h == c)) {
        run(
            &mut conn,
            &format!("ALTER TABLE {STATE_TABLE} ADD COLUMN {column} {ty}"),
        )
        .await?;
    }
    Ok(conn)
}

/// TLS settings: with `mysql.tls = "required"` the connection fails unless the server
/// speaks TLS with a certificate that verifies (never a silent fall-back to plain TCP).
fn ssl_opts(cfg: &MirrorPlan) -> Option<SslOpts> {
    if cfg.tls == MysqlTls::Off {
        return None;
    }
    // rustls needs one process-wide crypto provider; deltalake's HTTP stack links two.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut opts = SslOpts::default();
    if let Some(ca) = &cfg.tls_ca_file {
        opts = opts.with_root_certs(vec![std::path::PathBuf::from(ca).into()]);
    }
    Some(opts)
}
