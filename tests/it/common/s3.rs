//! A private S3-compatible server per test: `moto_server` (PyPI) on a free port, with
//! one bucket.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub(crate) const ACCESS_KEY: &str = "lakestream-test";
pub(crate) const SECRET_KEY: &str = "lakestream-test-secret";
pub(crate) const BUCKET: &str = "lake";

pub(crate) struct S3Server {
    pub endpoint: String,
    server: Child,
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.server.kill();
        let _ = self.server.wait();
    }
}

impl S3Server {
    /// Start `moto_server` (log under `dir`) and create the bucket.
    pub(crate) fn start(dir: &Path) -> Self {
        Self::start_on(dir, free_port())
    }

    /// As `start`, on `port`.
    pub(crate) fn start_on(dir: &Path, port: u16) -> Self {
        let log = std::fs::File::create(dir.join("moto.log")).expect("log");
        let server = Command::new(
            std::env::var("LAKESTREAM_TEST_MOTO").unwrap_or_else(|_| "moto_server".into()),
        )
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("moto_server (install it: scripts/install-deps.sh)");
        let server = Self {
            endpoint: format!("http://127.0.0.1:{port}"),
            server,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while http(port, "PUT", &format!("/{BUCKET}")).is_err() {
            assert!(Instant::now() < deadline, "moto_server did not start");
            std::thread::sleep(Duration::from_millis(200));
        }
        server
    }

    /// Object store options of a table root on this server (credentials included).
    pub(crate) fn options(&self) -> Vec<(String, String)> {
        [
            ("aws_endpoint_url", self.endpoint.as_str()),
            ("aws_region", "us-east-1"),
            ("aws_allow_http", "true"),
            ("aws_access_key_id", ACCESS_KEY),
            ("aws_secret_access_key", SECRET_KEY),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }
}

/// A port nothing listens on now.
pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// One bare HTTP/1.1 request (moto does not check signatures); Ok when it answers 2xx.
fn http(port: u16, method: &str, path: &str) -> std::io::Result<()> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )?;
    let mut reply = String::new();
    stream.read_to_string(&mut reply)?;
    if reply.starts_with("HTTP/1.1 2") || reply.starts_with("HTTP/1.0 2") {
        Ok(())
    } else {
        Err(std::io::Error::other(
            reply.lines().next().unwrap_or("").to_string(),
        ))
    }
}
