//! Catalog registration in AWS Glue (moto_server's Glue API, beside its S3 where the
//! tables live): entries created with the tables, updated when columns are added, read
//! back with boto3; a Glue outage delays registration, never ingestion.

use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::common::s3::{free_port, S3Server, ACCESS_KEY, SECRET_KEY};
use crate::common::{sigterm, tail, wait_until, TestEnv};

/// The Glue table `database.name` as boto3 reads it (`null` when there is none).
fn glue_table(endpoint: &str, database: &str, name: &str) -> Value {
    let script = "import boto3, json, sys; \
        g = boto3.client('glue', endpoint_url=sys.argv[1], region_name='us-east-1', \
            aws_access_key_id=sys.argv[4], aws_secret_access_key=sys.argv[5]); \
        t = None\n\
try:\n    t = g.get_table(DatabaseName=sys.argv[2], Name=sys.argv[3])['Table']\n\
except g.exceptions.EntityNotFoundException:\n    pass\n\
print(json.dumps(t, default=str))";
    let out =
        Command::new(std::env::var("LAKESTREAM_TEST_PYTHON").unwrap_or_else(|_| "python3".into()))
            .args([
                "-c", script, endpoint, database, name, ACCESS_KEY, SECRET_KEY,
            ])
            .output()
            .expect("python3");
    assert!(out.status.success(), "boto3: {}", tail(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("json")
}

/// `name type` of each column of a Glue table.
fn columns(table: &Value) -> Vec<String> {
    table["StorageDescriptor"]["Columns"]
        .as_array()
        .expect("columns")
        .iter()
        .map(|c| {
            format!(
                "{} {}",
                c["Name"].as_str().unwrap_or(""),
                c["Type"].as_str().unwrap_or("")
            )
        })
        .collect()
}

fn produce(env: &TestEnv, tag: &str, extra: &str) {
    let payloads: Vec<(i32, String)> = (0..4)
        .flat_map(|p| (0..25).map(move |i| (p, i)))
        .map(|(p, i)| {
            (p, format!(
                r#"{{"crime_id":"{tag}-{p}-{i}","original_crime_type_name":"Noise","call_date":"2018-10-01","call_date_time":"2018-10-01T10:00:00"{extra}}}"#
            ))
        })
        .collect();
    env.produce_json(&payloads);
}

#[tokio::test(flavor = "multi_thread")]
async fn glue_entries_follow_the_tables_and_an_outage_delays_only_registration() {
    let mut env = TestEnv::new("glue");
    let server = S3Server::start(env.dir.path());
    env.use_s3(&server);
    env.pipelines = vec!["calls".into(), "crime_type_hourly".into()];
    env.overrides.extend([
        "sources.police_calls.schema_evolution=add_columns".to_string(),
        "catalog.kind=glue".into(),
        "catalog.region=us-east-1".into(),
        "catalog.max_backoff=2s".into(),
        "pipelines.calls.catalog_table=sf.police_calls".into(),
        "pipelines.crime_type_hourly.catalog_table=sf.crime_type_hourly".into(),
    ]);
    lakestream::source::ensure_topic(&crate::common::connection(), &env.topic, 4)
        .await
        .expect("create topic");

    // Glue unreachable: every record is ingested, registration waits and says why.
    produce(&env, "old", "");
    let mut outage = env.command(&["run", "--until-caught-up"]);
    outage.args(["--set", "catalog.endpoint=http://127.0.0.1:9"]);
    let out = outage.output().expect("run");
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "ingestion failed with Glue down: {}",
        tail(&out.stderr)
    );
    assert!(
        log.contains("ingestion goes on, retrying"),
        "{}",
        tail(&out.stderr)
    );
    assert!(
        log.contains("not registered in the catalog before exit"),
        "{}",
        tail(&out.stderr)
    );
    env.assert_each_offset_once(100).await;
    assert!(glue_table(&server.endpoint, "sf", "police_calls").is_null());

    // Glue back: `check` sees it, the next run registers both tables (database too).
    env.overrides
        .push(format!("catalog.endpoint={}", server.endpoint));
    let check = env.run_ok(&["check"]);
    let text = String::from_utf8_lossy(&check.stdout);
    assert!(text.contains("catalog") && text.contains("'sf'"), "{text}");
    env.catch_up();
    let calls = glue_table(&server.endpoint, "sf", "police_calls");
    assert_eq!(calls["Parameters"]["table_type"], "DELTA", "{calls}");
    assert_eq!(calls["Parameters"]["spark.sql.sources.provider"], "delta");
    assert_eq!(
        calls["StorageDescriptor"]["Location"].as_str(),
        Some(env.table_url("calls").as_str().trim_end_matches('/'))
    );
    let before = columns(&calls);
    for column in [
        "crime_id string",
        "call_date date",
        "call_date_time timestamp",
        "kafka_partition int",
        "kafka_offset bigint",
    ] {
        assert!(before.iter().any(|c| c == column), "{column} in {before:?}");
    }
    let hourly = glue_table(&server.endpoint, "sf", "crime_type_hourly");
    assert_eq!(
        columns(&hourly),
        [
            "window_start timestamp",
            "window_end timestamp",
            "original_crime_type_name string",
            "calls bigint"
        ]
    );

    // New fields become columns: the entry follows, the other one is left alone.
    produce(
        &env,
        "new",
        r#","priority":3,"unit":{"id":"U1","crew":[1,2]}"#,
    );
    env.catch_up();
    let after = columns(&glue_table(&server.endpoint, "sf", "police_calls"));
    assert_eq!(
        after[..before.len()],
        before[..],
        "existing columns kept in order"
    );
    assert_eq!(
        after[before.len()..],
        // Schema evolution keeps a nested object as its JSON text.
        ["priority bigint", "unit string"]
    );
    let hourly_again = glue_table(&server.endpoint, "sf", "crime_type_hourly");
    assert_eq!(
        hourly_again["UpdateTime"], hourly["UpdateTime"],
        "untouched entry rewritten"
    );
    env.assert_each_offset_once(200).await;
    drop(server);
}

/// Glue down when `run` starts and back while it runs: the entry appears without a
/// restart, and ingestion never waited for it.
#[tokio::test(flavor = "multi_thread")]
async fn a_registration_retried_in_a_running_service_lands_when_glue_returns() {
    let mut env = TestEnv::new("glue-retry");
    let port = free_port();
    env.overrides.extend([
        "catalog.kind=glue".to_string(),
        "catalog.region=us-east-1".into(),
        "catalog.max_backoff=2s".into(),
        format!("catalog.endpoint=http://127.0.0.1:{port}"),
        "pipelines.calls.catalog_table=sf.police_calls".into(),
    ]);
    env.env_vars.extend([
        ("AWS_ACCESS_KEY_ID".to_string(), ACCESS_KEY.to_string()),
        ("AWS_SECRET_ACCESS_KEY".into(), SECRET_KEY.into()),
    ]);
    lakestream::source::ensure_topic(&crate::common::connection(), &env.topic, 4)
        .await
        .expect("create topic");
    produce(&env, "early", "");
    let mut run = env.spawn(&["run"], "run.log");
    let log = env.dir.path().join("run.log");
    let read_log = || std::fs::read_to_string(&log).unwrap_or_default();
    wait_until(
        Duration::from_secs(60),
        "ingestion while Glue is down",
        || async { crate::registry::rows(&env).await == 100 },
    )
    .await;
    wait_until(Duration::from_secs(60), "a failed registration", || async {
        read_log().contains("ingestion goes on, retrying")
    })
    .await;
    let glue = S3Server::start_on(env.dir.path(), port);
    wait_until(
        Duration::from_secs(30),
        "the entry once Glue is back",
        || async { !glue_table(&glue.endpoint, "sf", "police_calls").is_null() },
    )
    .await;
    sigterm(&run);
    assert!(run.wait().expect("run").success(), "{}", read_log());
    assert!(
        read_log().contains("registered in the catalog (Created)"),
        "{}",
        read_log()
    );
    drop(glue);
}
