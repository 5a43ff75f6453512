//! Tables every engine reads: the four flagship tables (the calls table after schema
//! evolution, with a checkpoint), and an upsert table, read by Apache Spark with Delta
//! Lake and by Polars, latest and by version and timestamp (time travel), give the rows
//! `lakestream query` gives; the protocol is one Spark, Fabric and Databricks read, with
//! UTC TIMESTAMP columns (never TIMESTAMP_NTZ) read as the same instants.

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::{json, Value};

use crate::common::{tail, TestEnv, FLAGSHIP};

const CALL_COLUMNS: [&str; 9] = [
    "crime_id",
    "kafka_partition",
    "kafka_offset",
    "kafka_timestamp",
    "call_date",
    "call_date_time",
    "report_date",
    "original_crime_type_name",
    "disposition",
];
const WINDOW_COLUMNS: [&str; 4] = [
    "window_start",
    "window_end",
    "original_crime_type_name",
    "calls",
];

/// One table read the three ways: its name in the result, the table, the columns, and
/// the version or time it is read at.
struct Read {
    name: &'static str,
    table: &'static str,
    columns: Vec<&'static str>,
    version: Option<i64>,
    timestamp: Option<String>,
}

fn read(name: &'static str, table: &'static str, columns: &[&'static str]) -> Read {
    Read {
        name,
        table,
        columns: columns.to_vec(),
        version: None,
        timestamp: None,
    }
}

/// Calls that carry two fields the source does not declare yet (schema evolution).
fn evolved_calls(env: &TestEnv) {
    let payloads: Vec<(i32, String)> = (0..4)
        .flat_map(|p| (0..40).map(move |i| (p, i)))
        .map(|(p, i)| {
            (
                p,
                format!(
                    r#"{{"crime_id":"new-{p}-{i}","original_crime_type_name":"Noise","call_date":"2018-10-01","call_date_time":"2018-10-01T10:{:02}:00","disposition":"HAN","priority":{i},"unit":{{"id":"U{}","crew":[1,2]}}}}"#,
                    i % 60,
                    i % 3
                ),
            )
        })
        .collect();
    env.produce_json(&payloads);
}

/// The last commit's (version, timestamp in RFC 3339) of `table`.
fn last_commit(env: &TestEnv, table: &str) -> (i64, String) {
    let out = env.run_ok(&["history", table, "--limit", "1", "--format", "json"]);
    let entry: Value = serde_json::from_slice(
        out.stdout
            .split(|b| *b == b'\n')
            .next()
            .expect("a history line"),
    )
    .expect("history json");
    let version = entry["version"].as_i64().expect("version");
    let at = entry["timestamp"].as_str().expect("timestamp");
    (version, at.to_string())
}

/// `lakestream query` of `r` as JSON lines.
fn lakestream_rows(env: &TestEnv, r: &Read) -> Vec<String> {
    let sql = format!("SELECT {} FROM {}", r.columns.join(", "), r.table);
    let mut args = vec!["query".to_string(), sql, "--format".into(), "json".into()];
    if let Some(v) = r.version {
        args.extend(["--version".into(), v.to_string()]);
    }
    if let Some(t) = &r.timestamp {
        args.extend(["--as-of".into(), t.clone()]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = env.run_ok(&args);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(String::from)
        .collect()
}

/// Spark and Polars read `reads` (see tests/fixtures/engines_read.py).
fn engines_read(reads: &[(&TestEnv, Read)]) -> Value {
    let spec = json!({
        "reads": reads.iter().map(|(env, r)| json!({
            "name": r.name,
            "url": env.table_path(r.table).display().to_string(),
            "columns": r.columns,
            "version": r.version,
            "timestamp": r.timestamp,
            "lakestream": lakestream_rows(env, r),
        })).collect::<Vec<_>>(),
    });
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/engines_read.py");
    let mut child =
        Command::new(std::env::var("LAKESTREAM_TEST_PYTHON").unwrap_or_else(|_| "python3".into()))
            .arg(script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("python3");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(spec.to_string().as_bytes())
        .expect("spec");
    let out = child.wait_with_output().expect("engines_read.py");
    assert!(
        out.status.success(),
        "engines_read.py (pyspark, delta-spark, polars: scripts/install-deps.sh): {}",
        tail(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("engines_read.py output")
}

#[tokio::test(flavor = "multi_thread")]
async fn spark_and_polars_read_every_table_as_lakestream_does() {
    let mut env = TestEnv::new("engines");
    env.pipelines = FLAGSHIP.map(String::from).to_vec();
    env.overrides
        .push("sources.police_calls.schema_evolution=add_columns".into());
    env.produce_synthetic(3_000, 90);
    env.catch_up();
    let (before, _) = last_commit(&env, "calls");
    // A time strictly between two commits: Spark resolves a time by the log entries' file
    // times, delta-rs by their commitInfo timestamps (written a few ms earlier).
    std::thread::sleep(std::time::Duration::from_secs(2));
    let before_at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    std::thread::sleep(std::time::Duration::from_secs(1));
    evolved_calls(&env);
    env.catch_up();
    env.run_ok(&["checkpoint", "calls"]);

    let mut upsert = TestEnv::new("engines-upsert");
    upsert.config = Some((
        "config/examples/cdc-json-upsert.toml".into(),
        "inventory".into(),
    ));
    upsert.pipelines = vec!["inventory".into()];
    let first: Vec<(i32, String)> = (0..40)
        .map(|i| {
            (
                0,
                format!(r#"{{"sku":"A-{i}","stock":{i},"price":{i}.25,"op":"c"}}"#),
            )
        })
        .collect();
    upsert.produce_json(&first);
    upsert.run_ok(&["run", "--until-caught-up"]);
    let (inventory_before, _) = last_commit(&upsert, "inventory");
    let changes: Vec<(i32, String)> = (0..40)
        .map(|i| match i % 4 {
            0 => (0, format!(r#"{{"sku":"A-{i}","op":"d"}}"#)),
            _ => (
                0,
                format!(
                    r#"{{"sku":"A-{i}","stock":{},"price":1.5,"op":"u"}}"#,
                    i * 10
                ),
            ),
        })
        .collect();
    upsert.produce_json(&changes);
    upsert.run_ok(&["run", "--until-caught-up"]);

    let mut evolved = CALL_COLUMNS.to_vec();
    evolved.extend(["priority", "unit"]);
    let reads = vec![
        (&env, read("calls", "calls", &evolved)),
        (
            &env,
            Read {
                version: Some(before),
                ..read("calls_by_version", "calls", &CALL_COLUMNS)
            },
        ),
        (
            &env,
            Read {
                timestamp: Some(before_at.clone()),
                ..read("calls_by_timestamp", "calls", &CALL_COLUMNS)
            },
        ),
        (&env, read("windows", "crime_type_windows", &WINDOW_COLUMNS)),
        (&env, read("hourly", "crime_type_hourly", &WINDOW_COLUMNS)),
        (
            &env,
            read(
                "dispositions",
                "disposition_summary",
                &["disposition", "description", "calls"],
            ),
        ),
        (
            &upsert,
            read("inventory", "inventory", &["sku", "stock", "price"]),
        ),
        (
            &upsert,
            Read {
                version: Some(inventory_before),
                ..read(
                    "inventory_by_version",
                    "inventory",
                    &["sku", "stock", "price"],
                )
            },
        ),
    ];
    let result = engines_read(&reads);

    let expected_rows = [
        ("calls", 3_160),
        ("calls_by_version", 3_000),
        ("calls_by_timestamp", 3_000),
        ("inventory", 30),
        ("inventory_by_version", 40),
    ];
    for (_, r) in &reads {
        let got = &result["reads"][r.name];
        let lake = got["lakestream"].as_array().expect("rows");
        assert!(!lake.is_empty(), "{}: lakestream read nothing", r.name);
        if let Some((_, n)) = expected_rows.iter().find(|(name, _)| *name == r.name) {
            assert_eq!(lake.len(), *n, "{}: rows", r.name);
        }
        for engine in ["spark", "polars"] {
            let theirs = got[engine].as_array().expect("rows");
            assert_eq!(theirs.len(), lake.len(), "{}: {engine} rows", r.name);
            let first_difference = theirs.iter().zip(lake).find(|(a, b)| a != b);
            assert!(
                first_difference.is_none(),
                "{}: {engine} reads {:?}",
                r.name,
                first_difference
            );
        }
        eprintln!(
            "{}: {} rows, the same in Spark and Polars",
            r.name,
            lake.len()
        );
    }
    for (url, table) in result["tables"].as_object().expect("tables") {
        // Reader version 1: every Delta reader (Spark 2.4+, Fabric / Direct Lake,
        // Databricks, Trino, DuckDB) reads it. Writer 2, or 4 where the change data feed
        // is on (aggregates the mirror follows); a writer version binds writers only.
        assert_eq!(table["reader"], 1, "{url}: reader version {table}");
        assert!(
            table["writer"] == 2 || table["writer"] == 4,
            "{url}: writer version {table}"
        );
        assert!(
            !table["features"].to_string().contains("timestampNtz"),
            "{url}: {table}"
        );
        eprintln!("{url}: {table}");
        for (column, kind) in table["timestamp_types"].as_object().expect("types") {
            assert_eq!(
                kind, "timestamp",
                "{url}: {column} is {kind}, not a UTC TIMESTAMP"
            );
        }
    }
    let calls = &result["tables"][env.table_path("calls").display().to_string()];
    assert!(
        calls["timestamp_types"]
            .as_object()
            .is_some_and(|t| t.len() >= 4),
        "the calls table's timestamp columns: {calls}"
    );
}
