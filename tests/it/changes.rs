//! When the topic changes under a pipeline: a topic deleted and recreated (as long as the
//! old one, so offsets alone cannot tell) while lakestream is down and while it runs,
//! with a kill -9 in the middle of the reset; every record of the new topic lands once in
//! every table of the shared reader, dead letters included.

use std::time::Duration;

use crate::broker::{fails, recreate, tool};
use crate::common::{sigterm, tail, wait_until, RawRecord, TestEnv};
use crate::many_topics::produce as produce_to;

const PATIENCE: Duration = Duration::from_secs(120);

/// Two append pipelines on one reader: `calls` and `copy` (into `calls_copy`).
fn env(name: &str) -> TestEnv {
    let mut env = TestEnv::new(name);
    env.pipelines = vec!["calls".into(), "copy".into()];
    env.overrides.extend([
        "pipelines.copy.source=police_calls".to_string(),
        "pipelines.copy.table=calls_copy".to_string(),
        "pipelines.copy.trigger_interval=300ms".to_string(),
    ]);
    env
}

/// `per_partition` good records (`TAG-P-I`) and one malformed record in each of the four
/// partitions.
fn produce(env: &TestEnv, tag: &str, per_partition: usize) {
    let mut payloads: Vec<(i32, String)> = Vec::new();
    for p in 0..4 {
        for i in 0..per_partition {
            payloads.push((
                p,
                format!(
                    r#"{{"crime_id":"{tag}-{p}-{i}","call_date":"2018-10-01","call_date_time":"2018-10-01T10:00:00"}}"#
                ),
            ));
        }
        payloads.push((p, format!("{{{tag} is not json")));
    }
    let records: Vec<RawRecord<'_>> = payloads
        .iter()
        .map(|(p, json)| (*p, None, json.as_bytes()))
        .collect();
    env.produce_raw(&records);
}

async fn tagged(env: &TestEnv, table: &str, tag: &str) -> (i64, i64) {
    let filter = format!("crime_id LIKE '{tag}-%'");
    let rows = env
        .scalar(table, &format!("SELECT count(*) FROM t WHERE {filter}"))
        .await;
    let distinct = env
        .scalar(
            table,
            &format!(
                "SELECT count(*) FROM (SELECT DISTINCT kafka_partition, kafka_offset FROM t \
                 WHERE {filter})"
            ),
        )
        .await;
    (rows, distinct)
}

async fn dead_letters(env: &TestEnv, tag: &str) -> i64 {
    env.scalar(
        "calls_dead_letters",
        &format!(
            "SELECT count(DISTINCT kafka_partition * 1000000 + kafka_offset) FROM t \
             WHERE pipeline = 'calls' AND CAST(payload AS VARCHAR) LIKE '%{tag} is not json%'"
        ),
    )
    .await
}

/// Every table of the reader holds the new topic's records once, and the old ones stay.
async fn assert_new_topic_once(env: &TestEnv, old: usize, new: usize) {
    for table in ["calls", "calls_copy"] {
        let old_rows = (4 * old) as i64;
        let new_rows = (4 * new) as i64;
        assert_eq!(
            tagged(env, table, "old").await,
            (old_rows, old_rows),
            "{table}"
        );
        assert_eq!(
            tagged(env, table, "new").await,
            (new_rows, new_rows),
            "{table}: every record of the new topic once"
        );
    }
    assert_eq!(
        dead_letters(env, "new").await,
        4,
        "the new topic's bad records"
    );
    assert_eq!(dead_letters(env, "old").await, 4);
}

/// The new topic has more records per partition than the old one: every offset the tables
/// hold exists in it, so only the topic's id tells that it is another topic.
#[tokio::test(flavor = "multi_thread")]
async fn a_topic_recreated_while_down_is_data_loss_then_read_from_its_start_in_every_table() {
    let env = env("recreated-down");
    tool(&["create-topic", &env.topic, "4"]);
    produce(&env, "old", 10);
    env.catch_up();
    recreate(&env.topic);
    produce(&env, "new", 12);

    let err = fails(&env, &[]);
    assert!(err.contains("recreated"), "{}", tail(err.as_bytes()));
    assert_eq!(tagged(&env, "calls", "new").await, (0, 0));

    // Killed between the tables' reset commits: the restart finishes the reset.
    let mut cmd = env.command(&[
        "--set",
        "kafka.fail_on_data_loss=false",
        "run",
        "--until-caught-up",
    ]);
    cmd.env("LAKESTREAM_FAILPOINT", "during_reset:2");
    let out = cmd.output().expect("spawn");
    assert!(
        !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("failpoint"),
        "expected an abort in the reset: {}",
        tail(&out.stderr)
    );
    env.catch_up_skipping_data_loss();
    assert_new_topic_once(&env, 10, 12).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_topic_recreated_under_a_running_pipeline_is_read_from_its_start() {
    let mut env = env("recreated-live");
    env.overrides
        .push("kafka.fail_on_data_loss=false".to_string());
    tool(&["create-topic", &env.topic, "4"]);
    produce(&env, "old", 10);
    let mut run = env.spawn(&["run"], "run.log");
    let log = env.dir.path().join("run.log");
    wait_until(PATIENCE, "the old topic ingested", || async {
        env.table_path("calls_copy").join("_delta_log").exists()
            && tagged(&env, "calls", "old").await.0 == 40
            && tagged(&env, "calls_copy", "old").await.0 == 40
    })
    .await;
    recreate(&env.topic);
    produce(&env, "new", 12);
    let ingested = async {
        loop {
            if tagged(&env, "calls", "new").await.0 >= 48
                && tagged(&env, "calls_copy", "new").await.0 >= 48
                && dead_letters(&env, "new").await >= 4
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    };
    let done = tokio::time::timeout(PATIENCE, ingested).await.is_ok();
    sigterm(&run);
    let status = run.wait().expect("reap");
    let log = std::fs::read(&log).unwrap_or_default();
    assert!(done, "the new topic was not ingested:\n{}", tail(&log));
    assert!(status.success(), "{status}: {}", tail(&log));
    assert!(
        String::from_utf8_lossy(&log).contains("recreated"),
        "the loss is reported: {}",
        tail(&log)
    );
    assert_new_topic_once(&env, 10, 12).await;
}

/// The many-topics example (copied, to be edited) on topics under this test's prefix.
fn many_topics(name: &str) -> TestEnv {
    let mut env = TestEnv::new(name);
    let shipped = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/config/examples/many-topics.toml"
    ))
    .expect("example config");
    let path = env.dir.path().join("many-topics.toml");
    std::fs::write(&path, shipped).expect("config");
    env.config = Some((path.display().to_string(), String::new()));
    env.pipelines = Vec::new();
    let prefix = regex::escape(&env.topic);
    env.overrides.extend([
        format!("sources.feeds.topic_pattern={prefix}\\..*"),
        "sources.feeds.topic_refresh_interval=1s".to_string(),
        "pipelines.per_topic.trigger_interval=300ms".to_string(),
    ]);
    env
}

/// Renaming the pipeline that writes a table shared by every topic is refused (it would
/// ingest every topic again); a topic whose per-topic table is another topic's is refused
/// with a warning while the others go on, while running and after a restart.
#[tokio::test(flavor = "multi_thread")]
async fn a_renamed_shared_table_pipeline_and_colliding_topics_are_refused() {
    let mut env = many_topics("collide");
    let first = format!("{}.x-y", env.topic);
    let twin = format!("{}.x_y", env.topic);
    let connection = crate::common::connection();
    lakestream::source::ensure_topic(&connection, &first, 2)
        .await
        .expect("topic");
    produce_to(&first, "first", 40);
    env.overrides.extend([
        "pipelines.all.trigger_interval=300ms".to_string(),
        "http.enabled=true".to_string(),
    ]);
    let mut run = env.spawn(&["run"], "run.log");
    let per_topic = format!("calls_{}", first.replace(['.', '-'], "_"));
    wait_until(PATIENCE, "the first topic ingested", || async {
        env.table_path(&per_topic).join("_delta_log").exists()
            && env.table_path("calls_all").join("_delta_log").exists()
            && env.count(&per_topic).await == 40
            && env.count("calls_all").await == 40
    })
    .await;
    // A topic that names the same per-topic table appears: refused, the first goes on.
    lakestream::source::ensure_topic(&connection, &twin, 2)
        .await
        .expect("topic");
    produce_to(&twin, "twin", 10);
    let log = env.dir.path().join("run.log");
    wait_until(PATIENCE, "the twin topic refused", || async {
        String::from_utf8_lossy(&std::fs::read(&log).unwrap_or_default()).contains("topic refused")
    })
    .await;
    let port = crate::common::http::status_port(&env, "run.log").await;
    let (_, text) = crate::common::http::get(port, "/metrics");
    let metrics = crate::common::http::parse_prometheus(&text);
    assert_eq!(
        metrics.get(r#"lakestream_refused_topics_total{pipeline="per_topic"}"#),
        Some(&1.0),
        "{text}"
    );
    produce_to(&first, "more", 10);
    wait_until(PATIENCE, "the first topic still ingested", || async {
        env.count(&per_topic).await == 50 && env.count("calls_all").await == 50
    })
    .await;
    assert!(run.try_wait().expect("status").is_none(), "the run goes on");
    sigterm(&run);
    assert!(
        run.wait().expect("reap").success(),
        "{}",
        tail(&std::fs::read(&log).unwrap_or_default())
    );

    // After a restart the topic that has been writing the table keeps it.
    let out = env.run_ok(&["run", "--until-caught-up"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("topic refused"),
        "{}",
        tail(&out.stderr)
    );
    assert_eq!(env.count(&per_topic).await, 50);
    assert_eq!(env.count("calls_all").await, 50, "no twin record anywhere");

    // The shared table's pipeline renamed: refused, nothing ingested twice.
    let config = env.dir.path().join("many-topics.toml");
    let text = std::fs::read_to_string(&config).expect("config");
    std::fs::write(
        &config,
        text.replace("[pipelines.all]", "[pipelines.all_topics]"),
    )
    .expect("renamed");
    env.overrides.retain(|o| !o.starts_with("pipelines.all."));
    let out = env
        .command(&["run", "--until-caught-up"])
        .output()
        .expect("spawn");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("calls_all") && stderr.contains("adopt"),
        "{}",
        tail(&out.stderr)
    );
    assert_eq!(env.count("calls_all").await, 50);
}

/// A call with extra JSON fields `extra` (`"alpha":1,...`).
fn call_with(tag: &str, i: usize, extra: &str) -> String {
    format!(
        r#"{{"crime_id":"{tag}-{i}","call_date":"2018-10-01","call_date_time":"2018-10-01T10:00:00",{extra}}}"#
    )
}

fn produce_fields(topic: &str, partition: i32, tag: &str, extra: &str) {
    let payloads: Vec<String> = (0..10).map(|i| call_with(tag, i, extra)).collect();
    let records: Vec<RawRecord<'_>> = payloads
        .iter()
        .map(|json| (partition, None, json.as_bytes()))
        .collect();
    crate::common::produce_raw_to(topic, &records);
}

/// Schema evolution with two writers that learned the same two columns in opposite
/// orders: two topics into one shared table, and two members on one topic. Each batch
/// is written by column name, whatever order its writer learned them in.
#[tokio::test(flavor = "multi_thread")]
async fn writers_that_learned_columns_in_opposite_orders_write_by_name() {
    // Two topics, one shared table.
    let mut env = many_topics("evolve-topics");
    env.overrides.extend([
        "sources.feeds.schema_evolution=add_columns".to_string(),
        "pipelines.all.trigger_interval=300ms".to_string(),
    ]);
    let [a, b] = ["a", "b"].map(|t| format!("{}.{t}", env.topic));
    for t in [&a, &b] {
        lakestream::source::ensure_topic(&crate::common::connection(), t, 1)
            .await
            .expect("topic");
    }
    let mut run = env.spawn(&["run"], "run.log");
    let log = env.dir.path().join("run.log");
    let rows = |n: i64| {
        let env = &env;
        move || async move {
            env.table_path("calls_all").join("_delta_log").exists()
                && env.count("calls_all").await == n
        }
    };
    produce_fields(&a, 0, "a1", r#""alpha":1"#);
    wait_until(PATIENCE, "a1", rows(10)).await;
    produce_fields(&b, 0, "b1", r#""beta":"x""#);
    wait_until(PATIENCE, "b1", rows(20)).await;
    // a learns beta after alpha, b alpha after beta: b's batches are [beta, alpha].
    produce_fields(&a, 0, "a2", r#""alpha":2,"beta":"y""#);
    produce_fields(&b, 0, "b2", r#""beta":"z","alpha":3"#);
    let ingested = tokio::time::timeout(PATIENCE, async {
        while !rows(40)().await {
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    })
    .await
    .is_ok();
    sigterm(&run);
    let status = run.wait().expect("reap");
    let text = std::fs::read(&log).unwrap_or_default();
    assert!(ingested && status.success(), "{status}: {}", tail(&text));
    let sums = crate::common::row_strings(
        &env.sql(
            "calls_all",
            "SELECT sum(alpha), count(beta), count(DISTINCT beta) FROM t",
        )
        .await,
    );
    assert_eq!(sums, ["60|30|3"], "values in their own columns");

    // Two members of one group on a two-partition topic.
    let mut env = TestEnv::new("evolve-members");
    env.overrides
        .push("sources.police_calls.schema_evolution=add_columns".to_string());
    lakestream::source::ensure_topic(&crate::common::connection(), &env.topic, 2)
        .await
        .expect("topic");
    let members: Vec<_> = (0..2)
        .map(|i| env.spawn(&["run"], &format!("member-{i}.log")))
        .collect();
    let logs: Vec<_> = (0..2)
        .map(|i| env.dir.path().join(format!("member-{i}.log")))
        .collect();
    wait_until(PATIENCE, "both members hold a partition", || async {
        logs.iter().all(|l| assigned(l) == Some(1))
    })
    .await;
    produce_fields(&env.topic, 0, "p0", r#""alpha":1"#);
    produce_fields(&env.topic, 1, "p1", r#""beta":"x""#);
    wait_until(PATIENCE, "first fields", || async {
        env.table_path("calls").join("_delta_log").exists() && env.count("calls").await == 20
    })
    .await;
    produce_fields(&env.topic, 0, "p0b", r#""alpha":2,"beta":"y""#);
    produce_fields(&env.topic, 1, "p1b", r#""beta":"z","alpha":3"#);
    let ingested = tokio::time::timeout(PATIENCE, async {
        while env.count("calls").await != 40 {
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    })
    .await
    .is_ok();
    for m in &members {
        sigterm(m);
    }
    for (mut m, log) in members.into_iter().zip(&logs) {
        let status = m.wait().expect("reap");
        assert!(
            ingested && status.success(),
            "{status}: {}",
            tail(&std::fs::read(log).unwrap_or_default())
        );
    }
    let sums = crate::common::row_strings(
        &env.sql(
            "calls",
            "SELECT sum(alpha), count(beta), count(DISTINCT beta) FROM t",
        )
        .await,
    );
    assert_eq!(sums, ["60|30|3"]);
    env.assert_each_offset_once(40).await;
}

/// How many partitions a member's log says it was assigned last.
fn assigned(log: &std::path::Path) -> Option<usize> {
    let text = String::from_utf8_lossy(&std::fs::read(log).ok()?).to_string();
    let line = text
        .lines()
        .rev()
        .find(|l| l.contains("partitions assigned"))?;
    // `starts={0: 0}` (with colour codes around `=`).
    let starts = line.rsplit('{').next()?.split('}').next()?;
    Some(starts.split(',').filter(|s| !s.trim().is_empty()).count())
}
