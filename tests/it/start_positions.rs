//! Where a pipeline starts: a time (OffsetsForTimes), a per-partition map, and a
//! deliberate `run --reset-to` that ingests again from a time.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::ClientConfig;

use crate::common::{brokers, TestEnv};

const PARTITIONS: i32 = 4;
/// 2024-01-01T00:00:00Z and 2024-06-01T00:00:00Z, in ms.
const OLD: i64 = 1_704_067_200_000;
const NEW: i64 = 1_717_200_000_000;

/// `n` calls to each partition, with Kafka timestamps `from + i` ms.
fn produce_at(topic: &str, from: i64, n: i64, tag: &str) {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("enable.idempotence", "true")
        .create()
        .expect("producer");
    for p in 0..PARTITIONS {
        for i in 0..n {
            let payload = format!(
                r#"{{"crime_id":"{tag}-{p}-{i}","call_date":"2018-10-01","call_date_time":"2018-10-01T10:00:00"}}"#
            );
            let record = BaseRecord::<[u8], [u8]>::to(topic)
                .partition(p)
                .payload(payload.as_bytes())
                .timestamp(from + i);
            producer.send(record).map_err(|(e, _)| e).expect("send");
        }
    }
    producer.flush(Duration::from_secs(30)).expect("flush");
}

/// Rows per crime-id prefix ("old"/"new") and how often each offset is held.
async fn held(env: &TestEnv) -> (BTreeMap<String, i64>, BTreeMap<i64, i64>) {
    let by_tag = env
        .sql(
            "calls",
            "SELECT split_part(crime_id, '-', 1), count(*) FROM t GROUP BY 1",
        )
        .await;
    let tags = crate::common::row_strings(&by_tag)
        .into_iter()
        .map(|l| {
            let (t, n) = l.split_once('|').expect("two columns");
            (t.to_string(), n.parse().expect("count"))
        })
        .collect();
    let copies = env
        .sql(
            "calls",
            "SELECT c, count(*) FROM (SELECT count(*) AS c FROM t \
             GROUP BY kafka_partition, kafka_offset) GROUP BY c",
        )
        .await;
    let copies = crate::common::row_strings(&copies)
        .into_iter()
        .map(|l| {
            let (c, n) = l.split_once('|').expect("two columns");
            (c.parse().expect("copies"), n.parse().expect("count"))
        })
        .collect();
    (tags, copies)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_start_time_skips_older_records_and_reset_to_ingests_again() {
    let mut env = TestEnv::new("start-time");
    lakestream::source::ensure_topic(&crate::common::connection(), &env.topic, PARTITIONS)
        .await
        .expect("create topic");
    produce_at(&env.topic, OLD, 10, "old");
    produce_at(&env.topic, NEW, 10, "new");
    env.overrides
        .push("kafka.starting_offsets=2024-03-01T00:00:00Z".into());
    let out = env.run_ok(&["run", "--until-caught-up"]);
    // The broker's OffsetsForTimes answer passed the check: no partition was scanned.
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        log.contains("starting at the first record of the configured time")
            && !log.contains("answered OffsetsForTimes wrongly"),
        "{log}"
    );
    let (tags, copies) = held(&env).await;
    assert_eq!(
        tags,
        BTreeMap::from([("new".to_string(), 40)]),
        "only records at or after the start time"
    );
    assert_eq!(copies, BTreeMap::from([(1, 40)]));

    // A stateful aggregate refuses to rewind: it would count the records twice.
    let out = env
        .command(&[
            "run",
            "--until-caught-up",
            "--pipeline",
            "crime_type_hourly",
            "--reset-to",
            "2024-01-01T00:00:00Z",
        ])
        .output()
        .expect("spawn");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("--reset-to refused"),
        "{stderr}"
    );

    // Rewound to the first new record: the append table gets the new records again.
    let out = env.run_ok(&[
        "run",
        "--until-caught-up",
        "--reset-to",
        "2024-06-01T00:00:00Z",
    ]);
    assert!(!String::from_utf8_lossy(&out.stderr).contains("answered OffsetsForTimes wrongly"));
    let (tags, copies) = held(&env).await;
    assert_eq!(tags, BTreeMap::from([("new".to_string(), 80)]));
    assert_eq!(
        copies,
        BTreeMap::from([(2, 40)]),
        "each new offset exactly twice"
    );

    // Rewound before everything: the old records come in for the first time.
    env.run_ok(&[
        "run",
        "--until-caught-up",
        "--reset-to",
        "2023-12-31T00:00:00Z",
    ]);
    let (tags, _) = held(&env).await;
    assert_eq!(
        tags,
        BTreeMap::from([("new".to_string(), 120), ("old".to_string(), 40)])
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_per_partition_map_starts_each_partition_where_it_says_and_keeps_it() {
    let mut env = TestEnv::new("start-map");
    lakestream::source::ensure_topic(&crate::common::connection(), &env.topic, PARTITIONS)
        .await
        .expect("create topic");
    produce_at(&env.topic, OLD, 10, "old");
    env.overrides
        .push(r#"kafka.starting_offsets={ "0" = 3, "1" = "latest", "*" = "earliest" }"#.into());
    env.catch_up();
    let per_partition = env
        .sql(
            "calls",
            "SELECT kafka_partition, min(kafka_offset), count(*) FROM t GROUP BY 1",
        )
        .await;
    assert_eq!(
        crate::common::row_strings(&per_partition),
        ["0|3|7", "2|0|10", "3|0|10"],
        "partition 0 from offset 3, partition 1 from its end, the rest from the start"
    );
    // The start of partition 1 was recorded: records produced later are read, the
    // earlier ones stay skipped.
    produce_at(&env.topic, NEW, 2, "new");
    env.catch_up();
    let per_partition = env
        .sql(
            "calls",
            "SELECT kafka_partition, min(kafka_offset), count(*) FROM t GROUP BY 1",
        )
        .await;
    assert_eq!(
        crate::common::row_strings(&per_partition),
        ["0|3|9", "1|10|2", "2|0|12", "3|0|12"]
    );
}

/// Committed, aborted and committed transactions: only the committed records land
/// (read_committed). tansu 0.6 refuses EndTxn; Apache Kafka runs it.
#[tokio::test(flavor = "multi_thread")]
async fn transactions_aborted_writes_never_land() {
    let env = TestEnv::new("txn");
    lakestream::source::ensure_topic(&crate::common::connection(), &env.topic, PARTITIONS)
        .await
        .expect("create topic");
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("transactional.id", format!("{}-tx", env.topic))
        .create()
        .expect("producer");
    let timeout = Duration::from_secs(30);
    producer
        .init_transactions(timeout)
        .expect("init transactions");
    for (round, commit) in [("kept1", true), ("aborted", false), ("kept2", true)] {
        producer.begin_transaction().expect("begin");
        for i in 0..10 {
            let payload = format!(
                r#"{{"crime_id":"{round}-{i}","call_date":"2018-10-01","call_date_time":"2018-10-01T10:00:00"}}"#
            );
            let record = BaseRecord::<[u8], [u8]>::to(&env.topic)
                .partition(i % PARTITIONS)
                .payload(payload.as_bytes());
            producer.send(record).map_err(|(e, _)| e).expect("send");
        }
        producer.flush(timeout).expect("flush");
        match commit {
            true => producer.commit_transaction(timeout).expect("commit"),
            false => producer.abort_transaction(timeout).expect("abort"),
        }
    }
    env.catch_up();
    let (tags, _) = held(&env).await;
    assert_eq!(
        tags,
        BTreeMap::from([("kept1".to_string(), 10), ("kept2".to_string(), 10)]),
        "aborted records never land"
    );
}
