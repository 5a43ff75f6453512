//! Progress records, `/metrics`, `/status`, `/health` and the status page in headless
//! Chromium, against a running `lakestream run`.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::common::http::{get, parse_prometheus, request, status_port};
use crate::common::{sigterm, tail, wait_until, TestEnv};

const CALLS: u64 = 3_000;

#[tokio::test(flavor = "multi_thread")]
async fn metrics_status_health_and_the_page_in_chromium() {
    let mut env = TestEnv::new("status");
    env.pipelines = vec!["calls".into(), "crime_type_hourly".into()];
    env.overrides
        .push("pipelines.calls.max_offsets_per_trigger=500".into());
    env.produce_synthetic(CALLS, 60);
    let mut cmd = env.command(&["run", "--progress", "json"]);
    let log = std::fs::File::create(env.dir.path().join("run.log")).expect("log");
    cmd.stdout(std::process::Stdio::null()).stderr(log);
    let mut run = env.spawn_command(cmd);

    let port = status_port(&env, "run.log").await;
    wait_until(Duration::from_secs(120), "all calls ingested", || {
        let (_, body) = get(port, "/status");
        let status: Value = serde_json::from_str(&body).expect("status JSON");
        let done = status["pipelines"]
            .as_array()
            .expect("pipelines")
            .iter()
            .all(|p| p["records"].as_u64() == Some(CALLS));
        std::future::ready(done)
    })
    .await;
    // Table versions and file counts are refreshed every 10 s.
    tokio::time::sleep(Duration::from_secs(11)).await;

    let (code, text) = get(port, "/metrics");
    assert_eq!(code, 200);
    let m = parse_prometheus(&text);
    let rows = env.count("calls").await as f64;
    assert_eq!(
        m["lakestream_input_records_total{pipeline=\"calls\"}"],
        CALLS as f64
    );
    assert_eq!(m["lakestream_output_rows_total{pipeline=\"calls\"}"], rows);
    assert_eq!(rows, CALLS as f64);
    let batches = m["lakestream_batches_total{pipeline=\"calls\"}"];
    assert!(batches >= 6.0, "{batches} batches");
    assert_eq!(
        m["lakestream_batch_duration_seconds_count{pipeline=\"calls\"}"],
        batches
    );
    assert_eq!(
        m["lakestream_batch_duration_seconds_bucket{le=\"+Inf\",pipeline=\"calls\"}"],
        batches
    );
    assert_eq!(m["lakestream_pipeline_up{pipeline=\"calls\"}"], 1.0);
    let lag: Vec<f64> = m
        .iter()
        .filter(|(k, _)| k.starts_with("lakestream_consumer_lag_records{pipeline=\"calls\""))
        .map(|(_, v)| *v)
        .collect();
    assert_eq!(lag, vec![0.0; 4], "caught up on 4 partitions, so no lag");
    let version = env.open_table("calls").await.version().expect("version") as f64;
    assert_eq!(m["lakestream_table_version{table=\"calls\"}"], version);

    let (code, body) = get(port, "/health");
    assert_eq!(code, 200, "{body}");
    let health: Value = serde_json::from_str(&body).expect("health JSON");
    assert_eq!(health["ready"], true);

    let (_, body) = get(port, "/status");
    let status: Value = serde_json::from_str(&body).expect("status JSON");
    let calls = &status["pipelines"][0];
    assert_eq!(calls["name"], "calls");
    let last = &calls["last"];
    for field in [
        "batchId",
        "numInputRows",
        "inputRowsPerSecond",
        "processedRowsPerSecond",
        "durationMs",
        "sources",
        "sink",
    ] {
        assert!(
            !last[field].is_null(),
            "progress record lacks {field}: {last}"
        );
    }
    assert_eq!(last["sink"]["version"], version as i64);

    // One JSON progress line per batch on stderr, with Spark's field names.
    let log = std::fs::read_to_string(env.dir.path().join("run.log")).expect("log");
    let records: Vec<Value> = log
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).expect("progress JSON"))
        .filter(|p: &Value| p["name"] == "calls")
        .collect();
    let input: u64 = records
        .iter()
        .map(|p| p["numInputRows"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(input, CALLS, "progress records' input rows");

    // What a proxy or a curious client may send.
    let (code, body) = request(port, "HEAD", "/", "");
    assert_eq!(
        (code, body.as_str()),
        (200, ""),
        "HEAD answers like GET, without a body"
    );
    assert_eq!(request(port, "POST", "/status", "{}").0, 405);
    assert_eq!(get(port, "/nope").0, 404);
    let huge = "x".repeat(64 * 1024);
    assert_eq!(request(port, "POST", "/status", &huge).0, 413);

    page_in_chromium(port);
    sigterm(&run);
    let status = run.wait().expect("run");
    assert!(status.success(), "run: {}", tail(log.as_bytes()));
}

/// Load the page headless: no script errors, the pipelines shown, charts drawn; save a
/// screenshot under the target's test artifacts.
fn page_in_chromium(port: u16) {
    let url = format!("http://127.0.0.1:{port}/");
    let chromium = std::env::var("LAKESTREAM_TEST_CHROMIUM").unwrap_or_else(|_| "chromium".into());
    let base = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--virtual-time-budget=5000",
        "--enable-logging=stderr",
        "--v=0",
    ];
    let out = Command::new(&chromium)
        .args(base)
        .arg("--dump-dom")
        .arg(&url)
        .output()
        .expect("chromium (install it: scripts/install-deps.sh)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dom = String::from_utf8_lossy(&out.stdout);
    let console = String::from_utf8_lossy(&out.stderr);
    let script_errors: Vec<&str> = console
        .lines()
        .filter(|l| l.contains("CONSOLE") && (l.contains("Uncaught") || l.contains("rror")))
        .collect();
    assert!(
        script_errors.is_empty(),
        "console errors: {script_errors:?}"
    );
    assert!(
        dom.contains("<pre id=\"js-errors\" class=\"bad\"></pre>"),
        "script errors on the page"
    );
    assert!(
        dom.contains("<td>calls</td>") && dom.contains("<td>crime_type_hourly</td>"),
        "pipelines missing"
    );
    assert!(dom.contains(">running<"), "pipeline state missing");
    let drawn = dom.matches("<path d=\"M").count();
    assert!(drawn >= 4, "charts not drawn ({drawn} paths)");
    assert!(dom.contains(" L"), "charts have a single point");

    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("artifacts");
    std::fs::create_dir_all(&dir).expect("artifacts dir");
    let shot = dir.join("status-page.png");
    let out = Command::new(&chromium)
        .args(base)
        .arg("--window-size=1280,1600")
        .arg(format!("--screenshot={}", shot.display()))
        .arg(&url)
        .output()
        .expect("chromium");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let size = std::fs::metadata(&shot).map(|m| m.len()).unwrap_or(0);
    assert!(size > 10_000, "screenshot too small: {size} bytes");
    eprintln!("status page screenshot: {}", shot.display());
}
