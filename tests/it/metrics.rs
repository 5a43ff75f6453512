//! Every metric `/metrics` exports moves when its event happens: one `run` with a
//! stateful pipeline, a dead letter, a late event, compaction and vacuum on a short
//! schedule, and a MySQL mirror where one table cannot sync. The metrics whose events
//! need a second writer or a recreated topic are listed with where those happen, so a
//! metric no test accounts for cannot be added silently.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;

use crate::common::http::{get, parse_prometheus, status_port};
use crate::common::mariadb::MariaDb;
use crate::common::{sigterm, tail, wait_until, RawRecord, TestEnv};

const DB: &str = "lakestream_metrics";

/// Metrics whose events this test does not cause, and the test that checks them.
const MOVED_ELSEWHERE: [(&str, &str); 4] = [
    (
        "lakestream_refused_topics",
        "changes::a_renamed_shared_table_pipeline_and_colliding_topics_are_refused",
    ),
    (
        "lakestream_data_loss_events",
        "edges::a_resume_offset_past_the_end_is_data_loss (the summary's dataLossEvents reads the same counter)",
    ),
    (
        "lakestream_commit_conflicts",
        "scale_out: members committing to one table (timing-dependent: printed, not asserted)",
    ),
    (
        "lakestream_replayed_rows",
        "scale_out: a batch another member committed first (timing-dependent: not asserted)",
    ),
];

fn sum(m: &BTreeMap<String, f64>, prefix: &str) -> f64 {
    m.iter()
        .filter(|(k, _)| k.starts_with(prefix))
        .map(|(_, v)| *v)
        .sum()
}

/// A call whose event time is long behind every watermark.
fn late_call() -> String {
    r#"{"crime_id":"late-1","original_crime_type_name":"Traffic Stop","call_date":"2001-01-01T00:00:00.000","call_date_time":"2001-01-01T00:00:00.000","disposition":"HAN"}"#.into()
}

#[tokio::test(flavor = "multi_thread")]
async fn every_exported_metric_moves_when_its_event_happens() {
    let mut env = TestEnv::new("metrics");
    let db = MariaDb::start(env.dir.path());
    env.pipelines = ["calls", "crime_type_hourly", "disposition_summary"]
        .map(String::from)
        .to_vec();
    env.overrides.extend(db.overrides(DB));
    env.overrides.extend(
        [
            r#"mysql.mirror=["crime_type_hourly","disposition_summary"]"#,
            "pipelines.calls.partition_by=[]",
            "maintenance.compact.schedule=2s",
            "maintenance.compact.min_small_files=2",
            "maintenance.vacuum.schedule=2s",
            "maintenance.vacuum.retention=11s",
            "maintenance.vacuum.min_retention=1s",
            // A vacuum retention must outlast the longest commit retry.
            "pipelines.calls.commit_retry_timeout=1s",
            "pipelines.crime_type_windows.commit_retry_timeout=1s",
            "pipelines.crime_type_hourly.commit_retry_timeout=1s",
            "pipelines.disposition_summary.commit_retry_timeout=1s",
        ]
        .map(String::from),
    );
    env.without_bi_views();

    // A table MySQL already has with other columns: that one mirror fails.
    let mut conn = db.conn("root", None, "mysql").await.expect("connect");
    conn.query_drop(format!("CREATE DATABASE {DB}"))
        .await
        .expect("db");
    conn.query_drop(format!("CREATE TABLE {DB}.disposition_summary (x INT)"))
        .await
        .expect("table");

    env.produce_synthetic(2_000, 70);
    let mut run = env.spawn(&["run"], "run.log");
    let port = status_port(&env, "run.log").await;
    let scrape = || {
        let (code, text) = get(port, "/metrics");
        assert_eq!(code, 200);
        parse_prometheus(&text)
    };
    wait_until(
        Duration::from_secs(120),
        "the first calls committed",
        || {
            std::future::ready(
                sum(
                    &scrape(),
                    "lakestream_input_records_total{pipeline=\"calls\"",
                ) >= 2_000.0,
            )
        },
    )
    .await;
    // More small commits for compaction, a dead letter and a late event.
    for seed in 71..74 {
        env.produce_synthetic(200, seed);
    }
    let late = late_call();
    let records: Vec<RawRecord<'_>> = vec![(0, None, b"{not json"), (1, None, late.as_bytes())];
    env.produce_raw(&records);

    let moved_here = [
        "lakestream_batches_total",
        "lakestream_input_records_total",
        "lakestream_input_bytes_total",
        "lakestream_output_rows_total",
        "lakestream_dead_letters_total",
        "lakestream_late_rows_total",
        "lakestream_state_rows",
        "lakestream_pipeline_up",
        "lakestream_batch_duration_seconds_count",
        "lakestream_table_version",
        "lakestream_table_files",
        "lakestream_mysql_sync_passes_total",
        "lakestream_mysql_sync_rows_total",
        "lakestream_mysql_sync_errors_total",
        "lakestream_mysql_sync_table_failing",
        "lakestream_mysql_sync_seconds_behind",
        "lakestream_maintenance_runs_total{task=\"compact\",result=\"ok\"}",
        "lakestream_maintenance_runs_total{task=\"vacuum\",result=\"ok\"}",
        "lakestream_vacuum_files_deleted_total",
        "lakestream_log_events_total",
    ];
    // Gauges that may rightly read 0 once caught up: exported with a series is enough.
    let present = [
        "lakestream_consumer_lag_records{pipeline=\"calls\"",
        "lakestream_mysql_sync_versions_behind{table=\"crime_type_hourly\"}",
    ];
    let deadline = Instant::now() + Duration::from_secs(150);
    let m = loop {
        let m = scrape();
        let mut still: Vec<&str> = moved_here
            .iter()
            .filter(|n| sum(&m, n) == 0.0)
            .copied()
            .collect();
        still.extend(
            present
                .iter()
                .filter(|n| !m.keys().any(|k| k.starts_with(**n))),
        );
        if still.is_empty() {
            break m;
        }
        let log = std::fs::read_to_string(env.dir.path().join("run.log")).unwrap_or_default();
        assert!(
            Instant::now() < deadline,
            "not moved after 150 s: {still:?}\n{}",
            tail(log.as_bytes())
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    // Exact where the event count is known.
    assert_eq!(m["lakestream_dead_letters_total{pipeline=\"calls\"}"], 1.0);
    // Later synthetic rounds start over in event time: late too, so at least one.
    assert!(m["lakestream_late_rows_total{pipeline=\"crime_type_hourly\"}"] >= 1.0);
    assert_eq!(
        m["lakestream_mysql_sync_table_failing{table=\"disposition_summary\"}"],
        1.0
    );
    assert_eq!(
        m["lakestream_mysql_sync_table_failing{table=\"crime_type_hourly\"}"],
        0.0
    );
    assert_eq!(m["lakestream_pipeline_up{pipeline=\"calls\"}"], 1.0);
    assert_eq!(
        m["lakestream_consumer_lag_records{pipeline=\"calls\",partition=\"0\"}"],
        0.0
    );

    // `/status` reads the same values.
    let (_, body) = get(port, "/status");
    let status: serde_json::Value = serde_json::from_str(&body).expect("status JSON");
    let calls = &status["pipelines"][0];
    assert_eq!(calls["deadLetters"].as_f64(), Some(1.0));
    assert_eq!(
        calls["records"].as_f64(),
        Some(m["lakestream_input_records_total{pipeline=\"calls\"}"])
    );
    let maintenance = &status["maintenance"];
    assert!(maintenance["vacuums"].as_u64() > Some(0), "{maintenance}");
    assert_eq!(
        maintenance["filesDeleted"].as_f64(),
        Some(m["lakestream_vacuum_files_deleted_total"])
    );

    // Every exported family is moved here or checked where its event happens.
    let exported: BTreeSet<String> = m
        .keys()
        .map(|k| k.split('{').next().unwrap_or(k).to_string())
        .map(|k| {
            ["_bucket", "_sum", "_count", "_total"]
                .iter()
                .find_map(|s| k.strip_suffix(s))
                .unwrap_or(&k)
                .to_string()
        })
        .collect();
    let covered: BTreeSet<String> = moved_here
        .iter()
        .map(|n| n.split('{').next().unwrap_or(n))
        .map(|n| {
            ["_count", "_total"]
                .iter()
                .find_map(|s| n.strip_suffix(s))
                .unwrap_or(n)
                .to_string()
        })
        .chain(
            present
                .iter()
                .map(|n| n.split('{').next().unwrap_or(n).to_string()),
        )
        .chain(MOVED_ELSEWHERE.iter().map(|(n, _)| n.to_string()))
        .collect();
    let uncovered: Vec<&String> = exported.difference(&covered).collect();
    assert!(uncovered.is_empty(), "metrics no test moves: {uncovered:?}");

    sigterm(&run);
    let status = run.wait().expect("run");
    let log = std::fs::read_to_string(env.dir.path().join("run.log")).unwrap_or_default();
    assert!(status.success(), "run: {}", tail(log.as_bytes()));
}
