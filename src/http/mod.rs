//! The status page (`/`), `/status` (JSON), `/metrics` (OpenMetrics text) and `/health`,
//! served by `run` with axum. Everything (page, script, charts) is served from the binary.

mod status;

pub use status::{Observed, ObservedPipeline};

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::limit::ConcurrencyLimitLayer;
use tower::ServiceBuilder;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;
use tracing::{info, warn};

const PAGE: &str = include_str!("page.html");
/// Ready (200) or not (503, with the reasons): a readiness probe.
pub const HEALTH_PATH: &str = "/health";
/// Prometheus's scrape; answers while the process serves at all (a liveness probe).
pub const METRICS_PATH: &str = "/metrics";
/// Scrapers and browsers of one process: a few at a time; more wait their turn.
const MAX_CONCURRENT: usize = 32;
/// No route takes a body; anything larger than a header's worth is refused.
const MAX_BODY: usize = 8 * 1024;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Debug, thiserror::Error)]
#[error("http.listen '{listen}': cannot listen")]
pub struct HttpError {
    listen: String,
    #[source]
    cause: std::io::Error,
}

/// A bound listener and what it serves; [`Server::run`] serves until shutdown.
pub struct Server {
    listener: TcpListener,
    observed: Arc<Observed>,
}

impl Server {
    /// Bind `listen` (errors name the key, so the user knows what to change).
    pub async fn bind(listen: &str, observed: Arc<Observed>) -> Result<Self, HttpError> {
        let listener = TcpListener::bind(listen).await.map_err(|cause| HttpError {
            listen: listen.to_string(),
            cause,
        })?;
        Ok(Self { listener, observed })
    }

    pub fn local_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.listener.local_addr()
    }

    /// Serve until `shutdown`, then let requests in flight finish.
    pub async fn run(self, shutdown: CancellationToken) {
        if let Ok(addr) = self.local_addr() {
            info!(%addr, "status page on http://{addr}/ (also /status, /metrics, /health)");
        }
        let served = axum::serve(self.listener, router(self.observed))
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await;
        if let Err(e) = served {
            warn!(error = %crate::report::Report(&e), "status page stopped");
        }
    }
}

/// The routes, with a concurrency cap, a request timeout and a body limit. GET routes
/// answer HEAD too; other methods get 405.
pub fn router(observed: Arc<Observed>) -> Router {
    // Outermost first: the body limit answers 413 before anything else runs.
    let layers = ServiceBuilder::new()
        .layer(RequestBodyLimitLayer::new(MAX_BODY))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            REQUEST_TIMEOUT,
        ))
        .layer(ConcurrencyLimitLayer::new(MAX_CONCURRENT));
    Router::new()
        .route("/", get(|| async { Html(PAGE) }))
        .route("/status", get(status))
        .route(METRICS_PATH, get(metrics))
        .route(HEALTH_PATH, get(health))
        .fallback(|| async {
            (
                StatusCode::NOT_FOUND,
                "not found: try /, /status, /metrics or /health\n",
            )
        })
        .layer(layers)
        .with_state(observed)
}

fn no_store(content_type: &'static str, body: String) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response()
}

async fn status(State(observed): State<Arc<Observed>>) -> Response {
    no_store("application/json", observed.status_json())
}

async fn metrics(State(observed): State<Arc<Observed>>) -> Response {
    observed.export_gauges();
    no_store(OPENMETRICS, crate::metrics::metrics().encode())
}

async fn health(State(observed): State<Arc<Observed>>) -> Response {
    let (ready, body) = observed.health_json();
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, no_store("application/json", body)).into_response()
}
