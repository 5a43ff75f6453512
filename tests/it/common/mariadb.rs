//! A private MariaDB server per test (its own data folder and port), so a test can stop
//! and restart it without touching anyone else's database.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, OptsBuilder};

pub(crate) struct MariaDb {
    pub port: u16,
    dir: PathBuf,
    server: Option<Child>,
    /// Extra server options (TLS).
    args: Vec<String>,
    /// The CA of a TLS-only server, for the test's own connections.
    pub tls_ca: Option<PathBuf>,
}

/// A CA and a server certificate for 127.0.0.1 it signed, in `dir`; returns `ca.pem`.
pub(crate) fn test_ca(dir: &Path) -> PathBuf {
    std::fs::create_dir_all(dir).expect("tls dir");
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let subject = |cn: &str| format!("/CN={cn}");
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        &subject("lakestream test CA"),
        "-keyout",
        "ca-key.pem",
        "-out",
        "ca.pem",
    ]);
    openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        &subject("127.0.0.1"),
        "-keyout",
        "server-key.pem",
        "-out",
        "server.csr",
    ]);
    std::fs::write(
        dir.join("san.ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
    )
    .expect("ext");
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca-key.pem",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "san.ext",
        "-out",
        "server.pem",
    ]);
    dir.join("ca.pem")
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

fn server_binary() -> String {
    std::env::var("LAKESTREAM_TEST_MARIADBD").unwrap_or_else(|_| "/usr/sbin/mariadbd".into())
}

impl MariaDb {
    /// Initialise a data folder under `parent` and start a server on a free port.
    pub(crate) fn start(parent: &Path) -> Self {
        Self::start_with(parent, Vec::new())
    }

    /// A server that accepts only TLS connections, with a certificate for 127.0.0.1
    /// signed by a fresh CA (its PEM file is `tls_ca`).
    pub(crate) fn start_with_tls(parent: &Path) -> Self {
        let ca = test_ca(&parent.join("tls"));
        let path = |f: &str| ca.with_file_name(f).display().to_string();
        let args = vec![
            format!("--ssl-ca={}", path("ca.pem")),
            format!("--ssl-cert={}", path("server.pem")),
            format!("--ssl-key={}", path("server-key.pem")),
            "--require-secure-transport=ON".to_string(),
        ];
        let mut db = Self::start_with(parent, args);
        db.tls_ca = Some(ca);
        db
    }

    /// A server initialised the way Debian's package does it: root logs in only through
    /// the unix socket (as the OS user root), with no password; nothing else exists.
    pub(crate) fn start_as_debian_ships(parent: &Path) -> Self {
        Self::init(parent, "socket", Vec::new())
    }

    /// The server's unix socket.
    pub(crate) fn socket(&self) -> PathBuf {
        self.dir.join("sock")
    }

    fn start_with(parent: &Path, args: Vec<String>) -> Self {
        Self::init(parent, "normal", args)
    }

    fn init(parent: &Path, root_auth: &str, args: Vec<String>) -> Self {
        let dir = parent.join("mariadb");
        // Its own tmpdir: two bootstraps sharing /tmp collide on temporary table names.
        let tmp = dir.join("tmp");
        std::fs::create_dir_all(&tmp).expect("tmpdir");
        let out = Command::new("mariadb-install-db")
            .args(["--no-defaults", "--user=root", "--skip-test-db"])
            .arg(format!("--auth-root-authentication-method={root_auth}"))
            .arg(format!("--datadir={}", dir.join("data").display()))
            .arg(format!("--tmpdir={}", tmp.display()))
            .output()
            .expect("mariadb-install-db (install MariaDB: scripts/install-deps.sh)");
        assert!(
            out.status.success(),
            "mariadb-install-db failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut db = Self {
            port: free_port(),
            dir,
            server: None,
            args,
            tls_ca: None,
        };
        db.resume();
        db
    }

    /// Start the server on the existing data folder and wait until it answers.
    pub(crate) fn resume(&mut self) {
        let d = &self.dir;
        let child = Command::new(server_binary())
            .arg("--no-defaults")
            .arg(format!("--datadir={}", d.join("data").display()))
            .arg(format!("--socket={}", d.join("sock").display()))
            .arg(format!("--pid-file={}", d.join("pid").display()))
            .arg(format!("--log-error={}", d.join("error.log").display()))
            .arg(format!("--tmpdir={}", d.join("tmp").display()))
            .arg(format!("--port={}", self.port))
            .args(["--bind-address=127.0.0.1", "--user=root"])
            .arg("--innodb-buffer-pool-size=64M")
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start mariadbd");
        self.server = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "MariaDB did not start: see {}",
                d.join("error.log").display()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stop the server abruptly (as a crash or a pulled cable would).
    pub(crate) fn kill(&mut self) {
        if let Some(mut child) = self.server.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// `--set` overrides pointing lakestream at this server and database `database`.
    pub(crate) fn overrides(&self, database: &str) -> Vec<String> {
        vec![
            "mysql.enabled=true".into(),
            "mysql.host=127.0.0.1".into(),
            format!("mysql.port={}", self.port),
            // The private server's root has no password (no password file either).
            "mysql.user=root".into(),
            "mysql.password_file=".into(),
            format!("mysql.database={database}"),
            "mysql.interval=300ms".into(),
        ]
    }

    pub(crate) async fn conn(
        &self,
        user: &str,
        password: Option<&str>,
        database: &str,
    ) -> mysql_async::Result<Conn> {
        let opts = OptsBuilder::default()
            .ip_or_hostname("127.0.0.1")
            .tcp_port(self.port)
            .user(Some(user))
            .pass(password)
            .db_name(Some(database))
            .ssl_opts(self.tls_ca.as_ref().map(|ca| {
                let _ = rustls::crypto::ring::default_provider().install_default();
                mysql_async::SslOpts::default().with_root_certs(vec![ca.clone().into()])
            }))
            .init(vec!["SET time_zone = '+00:00'"]);
        Conn::new(opts).await
    }

    /// Every row of `query` as one `a|b|c` string, sorted (NULL as empty).
    pub(crate) async fn rows(&self, database: &str, query: &str) -> Vec<String> {
        let mut conn = self.conn("root", None, database).await.expect("connect");
        let rows: Vec<mysql_async::Row> = conn.query(query).await.expect("query");
        let mut out: Vec<String> = rows
            .into_iter()
            .map(|row| {
                (0..row.len())
                    .map(|i| match row.as_ref(i) {
                        Some(mysql_async::Value::NULL) | None => String::new(),
                        Some(mysql_async::Value::Bytes(b)) => {
                            String::from_utf8_lossy(b).to_string()
                        }
                        Some(mysql_async::Value::Int(v)) => v.to_string(),
                        Some(mysql_async::Value::UInt(v)) => v.to_string(),
                        Some(v) => v.as_sql(true),
                    })
                    .collect::<Vec<_>>()
                    .join("|")
            })
            .collect();
        out.sort();
        out
    }
}

impl Drop for MariaDb {
    fn drop(&mut self) {
        self.kill();
    }
}
