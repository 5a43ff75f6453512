//! Protobuf and JSON Schema through a Schema Registry (the suite's Apicurio), records
//! written by independent serializers (confluent-kafka's ProtobufSerializer and
//! JSONSerializer): versions that add fields, one that changes a type, kill -9 while
//! the columns change; every record lands exactly once with its values and types, and
//! bad frames are dead letters with their reason.

use std::path::Path;
use std::process::Command;

use rand::{rngs::StdRng, SeedableRng};

use super::registry::kill_during;
use crate::common::{brokers, row_strings, tail, TestEnv};

/// The registry `scripts/services.sh` starts.
fn registry_url() -> String {
    std::env::var("LAKESTREAM_TEST_REGISTRY")
        .unwrap_or_else(|_| "http://127.0.0.1:8081/apis/ccompat/v7".into())
}

/// `registry_formats.py FORMAT COMMAND TOPIC ARGS...`: its stdout.
fn fixture(topic: &str, format: &str, args: &[&str]) -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/registry_formats.py");
    let out =
        Command::new(std::env::var("LAKESTREAM_TEST_PYTHON").unwrap_or_else(|_| "python3".into()))
            .arg(script)
            .args([brokers(), registry_url()])
            .args([format, args[0], topic])
            .args(&args[1..])
            .output()
            .expect("python3");
    assert!(
        out.status.success(),
        "registry_formats {format} {args:?}: {}",
        tail(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn tool(env: &TestEnv, format: &str, args: &[&str]) {
    fixture(&env.topic, format, args);
}

async fn registry_env(name: &str, format: &str) -> TestEnv {
    let mut env = TestEnv::new(name);
    let example = format!("config/examples/{format}-registry.toml");
    env.config = Some((example, "calls".into()));
    env.pipelines = vec!["calls".into(), "calls_by_state".into()];
    env.overrides.extend([
        format!("schema_registry.url={}", registry_url()),
        "pipelines.calls.trigger_interval=300ms".to_string(),
        "pipelines.calls_by_state.trigger_interval=300ms".to_string(),
    ]);
    lakestream::source::ensure_topic(&crate::common::connection(), &env.topic, 4)
        .await
        .expect("create topic");
    env
}

fn assert_columns(env: &TestEnv, columns: &[&str]) {
    let schema = env.run_ok(&["schema", "calls", "--format", "csv"]);
    let schema = String::from_utf8_lossy(&schema.stdout).to_string();
    for column in columns {
        assert!(schema.contains(column), "{column} in\n{schema}");
    }
}

/// The dead letters' reasons by Kafka key.
async fn dead_letters(env: &TestEnv) -> Vec<String> {
    row_strings(
        &env.sql(
            "calls_dead_letters",
            "SELECT CAST(kafka_key_bytes AS VARCHAR), reason FROM t",
        )
        .await,
    )
}

fn reason_of<'a>(dead: &'a [String], key: &str) -> &'a str {
    dead.iter()
        .find(|d| d.starts_with(&format!("{key}|")))
        .unwrap_or_else(|| panic!("no dead letter {key}: {dead:#?}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn protobuf_versions_imports_and_kill_9_land_exactly_once_with_their_types() {
    let env = registry_env("protobuf", "protobuf").await;
    let mut rng = StdRng::seed_from_u64(341);
    tool(&env, "protobuf", &["produce", "v1", "0", "200"]);
    env.catch_up();
    assert_eq!(env.count("calls").await, 200);
    assert_columns(
        &env,
        &[
            "id,long",
            "at,timestamp",
            "state,string",
            "note,string",
            "place,\"struct<lat: double, district: string>\"",
            "tags,array<string>",
            "counts,\"map<string, integer>\"",
            "phone,string",
            "took,long",
            "big,\"decimal(20,0)\"",
            "blob,binary",
            "inner,struct<level: integer>",
            "maybe,integer",
        ],
    );

    // v2 adds two fields: a run killed while it adds the columns.
    tool(&env, "protobuf", &["produce", "v2", "200", "200"]);
    kill_during(&env, "run-v2.log", &mut rng);
    // v3 changes `id` to a string; `other` is the file's second message (index path [1]).
    tool(&env, "protobuf", &["produce", "v3", "400", "20"]);
    tool(&env, "protobuf", &["produce", "other", "420", "10"]);
    tool(&env, "protobuf", &["hostile"]);
    env.catch_up();
    env.assert_each_offset_once(400).await;

    let n = 0..400i64;
    let sum: i64 = n.clone().sum();
    let units: i64 = (200..400).map(|n| n % 7).sum();
    let took: i64 = n.clone().map(|n| n * 1500).sum();
    let notes = n.clone().filter(|n| n % 3 == 0).count();
    let inner = n.clone().filter(|n| n % 5 != 0).count();
    let want = format!(
        "400|{sum}|{units}|200|{notes}|200|200|{inner}|100|0|{took}|{sum}|9223372036854775808|9223372036854776207"
    );
    let got = row_strings(
        &env.sql(
            "calls",
            "SELECT count(*), sum(id), sum(units), count(extra), count(note), count(phone), \
             count(email), count(inner), count(maybe), sum(maybe), sum(took), \
             CAST(sum(amount) * 4 AS BIGINT), CAST(min(big) AS VARCHAR), \
             CAST(max(big) AS VARCHAR) FROM t",
        )
        .await,
    );
    assert_eq!(got, [want], "values of every version");
    let sample = row_strings(
        &env.sql(
            "calls",
            "SELECT id, state, place['district'], CAST(at AS VARCHAR), array_length(tags), \
             counts['k1'], phone, email, note, inner['level'], maybe, units, extra, \
             encode(blob, 'hex') FROM t WHERE id IN (5, 202) ORDER BY id",
        )
        .await,
    );
    assert_eq!(
        sample,
        [
            "202|CLOSED|D1|2024-01-01T00:03:22.000250Z|1|||c202@example.org||2||6|x202|ca01",
            "5|OPEN|D2|2024-01-01T00:00:05.000250Z|2|6|555-5|||||||0501",
        ],
        "v1 lacks what v2 added; presence kept (oneof, optional, wrappers)"
    );

    let dead = dead_letters(&env).await;
    assert_eq!(dead.len(), 32, "{dead:#?}");
    assert!(
        reason_of(&dead, "400").contains("changes field 'id'"),
        "{dead:#?}"
    );
    assert!(
        reason_of(&dead, "420")
            .contains("sf.Other (index path [1]) is not the table's message sf.Call"),
        "{dead:#?}"
    );
    assert!(
        reason_of(&dead, "bad-index").contains("index path [7]"),
        "{dead:#?}"
    );
    assert!(
        reason_of(&dead, "bad-body").contains("does not decode"),
        "{dead:#?}"
    );
    let by_state = env
        .scalar("calls_by_state", "SELECT CAST(sum(calls) AS BIGINT) FROM t")
        .await;
    assert_eq!(
        by_state, 400,
        "the SQL pipeline reads an enum and an imported message"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn json_schema_versions_land_exactly_once_with_their_types() {
    let env = registry_env("json-schema", "json-schema").await;
    tool(&env, "json", &["produce", "v1", "0", "100"]);
    tool(&env, "json", &["produce", "v2", "100", "100"]);
    env.catch_up();
    tool(&env, "json", &["produce", "v3", "200", "10"]);
    tool(&env, "json", &["hostile"]);
    env.catch_up();
    env.assert_each_offset_once(200).await;
    assert_columns(
        &env,
        &[
            "id,long",
            "at,timestamp",
            "counts,\"map<string, long>\"",
            "day,date",
            "note,string",
            "ok,boolean",
            "place,\"struct<district: string, lat: double>\"",
            "tags,array<string>",
            "units,long",
            "extra,string",
        ],
    );
    let n = 0..200i64;
    let sum: i64 = n.clone().sum();
    let units: i64 = (100..200).map(|n| n % 7).sum();
    let notes = n.clone().filter(|n| n % 3 == 0).count();
    let want = format!("200|{sum}|{units}|100|{notes}|100|{sum}");
    let got = row_strings(
        &env.sql(
            "calls",
            "SELECT count(*), sum(id), sum(units), count(extra), count(note), \
             sum(CASE WHEN ok THEN 1 ELSE 0 END), CAST(sum(amount) * 4 AS BIGINT) FROM t",
        )
        .await,
    );
    assert_eq!(got, [want], "values of both versions");
    let sample = row_strings(
        &env.sql(
            "calls",
            "SELECT id, state, place['district'], CAST(at AS VARCHAR), CAST(day AS VARCHAR), \
             counts['k1'], units FROM t WHERE id IN (5, 101) ORDER BY id",
        )
        .await,
    );
    assert_eq!(
        sample,
        [
            "101|OPEN|D2|2024-01-01T00:01:41.000250Z|2024-01-18|102|3",
            "5|OPEN|D2|2024-01-01T00:00:05.000250Z|2024-01-06|6|",
        ]
    );
    let dead = dead_letters(&env).await;
    assert_eq!(dead.len(), 13, "{dead:#?}");
    assert!(
        reason_of(&dead, "200").contains("changes field 'id'"),
        "{dead:#?}"
    );
    assert!(
        reason_of(&dead, "not-object").contains("not a JSON object"),
        "{dead:#?}"
    );
    assert!(
        reason_of(&dead, "wrong-type").contains("field 'id'"),
        "{dead:#?}"
    );
    assert!(
        reason_of(&dead, "cut-short").contains("truncated"),
        "{dead:#?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn produce_avro_is_read_alike_by_an_independent_reader_and_an_avro_source() {
    // `produce` types the synthetic calls by the shipped config's declared fields.
    let mut producer = TestEnv::new("produce-avro");
    producer
        .overrides
        .push(format!("schema_registry.url={}", registry_url()));
    let calls = 300;
    producer.run_ok(&[
        "produce",
        "--synthetic",
        &calls.to_string(),
        "--format",
        "avro",
        "--no-progress",
    ]);
    let read = fixture(&producer.topic, "avro", &["read", &calls.to_string()]);
    let mut python: Vec<String> = read
        .lines()
        .map(|l| {
            let r: serde_json::Value = serde_json::from_str(l).expect("a JSON line");
            let v = &r["value"];
            let at = v["call_date_time"].as_str().unwrap_or_default();
            format!(
                "{}|{}|{}|{}|{}",
                r["partition"],
                r["offset"],
                v["crime_id"].as_str().unwrap_or_default(),
                v["call_date"].as_str().unwrap_or_default(),
                at.trim_end_matches("+00:00").replace(' ', "T")
            )
        })
        .collect();
    python.sort();
    assert_eq!(python.len(), calls);

    let mut env = registry_env("produce-avro-read", "avro").await;
    env.topic = producer.topic.clone();
    env.pipelines = vec!["calls".into()];
    env.catch_up();
    env.assert_each_offset_once(calls as i64).await;
    let ours = row_strings(
        &env.sql(
            "calls",
            "SELECT kafka_partition, kafka_offset, crime_id, CAST(call_date AS VARCHAR), \
             regexp_replace(CAST(call_date_time AS VARCHAR), 'Z$', '') FROM t",
        )
        .await,
    );
    let mut ours = ours;
    ours.sort();
    assert_eq!(ours, python, "the same calls, the same instants");
}

#[tokio::test(flavor = "multi_thread")]
async fn avro_keyed_tombstones_delete_in_an_upsert_pipeline() {
    let mut env = registry_env("avro-keys", "avro").await;
    env.pipelines = vec!["calls".into()];
    env.overrides.extend([
        "pipelines.calls.mode=upsert".to_string(),
        r#"pipelines.calls.keys=["id"]"#.to_string(),
    ]);
    tool(&env, "avro", &["upsert", "0", "50"]);
    env.catch_up();
    assert_eq!(env.count("calls").await, 50);
    // Deletes in a later batch, and one in the same batch as its key's new value.
    tool(&env, "avro", &["tombstones", "3", "7", "11"]);
    tool(&env, "avro", &["upsert", "50", "2"]);
    tool(&env, "avro", &["tombstones", "50"]);
    env.catch_up();
    let sum: i64 = (0..52).filter(|n| ![3, 7, 11, 50].contains(n)).sum();
    let got = row_strings(&env.sql("calls", "SELECT count(*), sum(id) FROM t").await);
    assert_eq!(
        got,
        [format!("48|{sum}")],
        "the tombstones' Avro keys deleted their rows"
    );
}
