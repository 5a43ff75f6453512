//! The status page (`/`), `/status` (JSON), `/metrics` (Prometheus text) and `/health`,
//! served by `run`. A deliberately small HTTP/1.1 server: GET only, one response per
//! connection, everything (page, script, charts) served from the binary.

mod prometheus;
mod status;

pub use status::{Observed, ObservedPipeline};

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

const PAGE: &str = include_str!("page.html");
const MAX_REQUEST: usize = 8192;

#[derive(Debug, thiserror::Error)]
#[error("http.listen '{listen}': cannot listen: {cause}")]
pub struct HttpError {
    listen: String,
    cause: std::io::Error,
}

/// Bind `listen` and serve `observed` until `shutdown`; returns the bound address.
pub async fn start(
    listen: &str,
    observed: Arc<Observed>,
    shutdown: CancellationToken,
) -> Result<std::net::SocketAddr, HttpError> {
    let listener = TcpListener::bind(listen).await.map_err(|cause| HttpError {
        listen: listen.to_string(),
        cause,
    })?;
    let addr = listener.local_addr().map_err(|cause| HttpError {
        listen: listen.to_string(),
        cause,
    })?;
    info!(%addr, "status page on http://{addr}/ (also /status, /metrics, /health)");
    tokio::spawn(observed.clone().refresh_tables(shutdown.clone()));
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                a = listener.accept() => a,
                () = shutdown.cancelled() => return,
            };
            match accepted {
                Ok((stream, _)) => {
                    tokio::spawn(handle(stream, observed.clone()));
                }
                Err(e) => warn!(error = %e, "status page: accept failed"),
            }
        }
    });
    Ok(addr)
}

async fn handle(mut stream: TcpStream, observed: Arc<Observed>) {
    let mut buf = Vec::with_capacity(1024);
    let read = tokio::time::timeout(Duration::from_secs(5), async {
        let mut chunk = [0u8; 1024];
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < MAX_REQUEST {
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        Ok::<_, std::io::Error>(())
    })
    .await;
    if !matches!(read, Ok(Ok(()))) {
        return;
    }
    let request = String::from_utf8_lossy(&buf);
    let mut parts = request.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    let (code, content_type, body) = match (method, path) {
        ("GET", "/") => (200, "text/html; charset=utf-8", PAGE.to_string()),
        ("GET", "/status") => (200, "application/json", observed.status_json()),
        ("GET", "/metrics") => (
            200,
            "text/plain; version=0.0.4; charset=utf-8",
            prometheus::render(&observed),
        ),
        ("GET", "/health") => {
            let (ready, body) = observed.health_json();
            (if ready { 200 } else { 503 }, "application/json", body)
        }
        ("GET", _) => (
            404,
            "text/plain",
            "not found: try /, /status, /metrics or /health\n".into(),
        ),
        _ => (405, "text/plain", "only GET\n".into()),
    };
    let reason = match code {
        200 => "OK",
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "Service Unavailable",
    };
    let head = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Cache-Control: no-store\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let written = async {
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(body.as_bytes()).await?;
        stream.shutdown().await
    };
    if let Err(e) = written.await {
        debug!(error = %e, "status page: client went away");
    }
}
