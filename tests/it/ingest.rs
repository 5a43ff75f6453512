//! Good and bad records in, exactly the good ones in the table, the bad ones dead-lettered.

use crate::common::{python_count, strings, RawRecord, TestEnv};

const GOOD: &[u8] = br#"{"crime_id":"999000001","original_crime_type_name":"Passing Call","report_date":"2018-12-31T00:00:00.000","call_date":"2018-12-31T00:00:00.000","offense_date":"2018-12-31T00:00:00.000","call_time":"23:57","call_date_time":"2018-12-31T23:57:00.000","disposition":"HAN","address":"100 Blk Howard St","city":"San Francisco","state":"CA","agency_id":"1","address_type":"Premise Address","common_location":""}"#;

#[tokio::test(flavor = "multi_thread")]
async fn synthetic_calls_and_bad_records_land_exactly_once() {
    let mut env = TestEnv::new("ingest");
    env.overrides
        .push("sources.police_calls.max_message_bytes=65536".into());
    env.produce_synthetic(20_000, 11);
    let huge = format!(r#"{{"crime_id":"1","pad":"{}"}}"#, "x".repeat(100_000));
    let bad: Vec<(&[u8], &str)> = vec![
        (b"definitely not json", "not a JSON object"),
        (b"", "empty message"),
        (b"[1, 2, 3]", "not a JSON object"),
        (b"{\"crime_id\": \"7\", ", "truncated"),
        (b"\xc3\x28{\"a\":1}", "invalid UTF-8"),
        (br#"{"crime_id": 12345, "call_date": "2018-10-01", "call_date_time": "2018-10-01T10:00:00"}"#, "wrong type"),
        (br#"{"original_crime_type_name": "Theft", "call_date": "2018-10-01", "call_date_time": "2018-10-01T10:00:00"}"#, "missing required field(s): crime_id"),
        (br#"{"crime_id": "8", "call_date": "2018-10-01", "call_date_time": "not a time"}"#, "wrong type"),
        (huge.as_bytes(), "exceeds max_message_bytes"),
    ];
    let mut records: Vec<RawRecord<'_>> = Vec::new();
    for (i, (payload, _)) in bad.iter().enumerate() {
        records.push((i as i32 % 4, Some(b"bad"), payload));
        // A good record right behind each bad one must survive its neighbour.
        records.push((i as i32 % 4, None, GOOD));
    }
    env.produce_raw(&records);

    let summary = env.catch_up();
    let produced_good = 20_000 + bad.len() as i64;
    assert_eq!(summary["records"], produced_good + bad.len() as i64);
    assert_eq!(summary["deadLetters"], bad.len() as i64);

    // The GOOD record was sent once per bad one: same crime_id, distinct offsets.
    assert_eq!(env.count("calls").await, produced_good);
    let distinct = env.distinct_offsets("calls").await;
    assert_eq!(distinct, produced_good);
    let ids = env
        .scalar("calls", "SELECT count(DISTINCT crime_id) FROM t")
        .await;
    assert_eq!(ids, 20_001);

    let dead = env
        .sql(
            "calls_dead_letters",
            "SELECT kafka_partition, reason FROM t ORDER BY kafka_partition, kafka_offset",
        )
        .await;
    let reasons = strings(&dead, 1);
    assert_eq!(reasons.len(), bad.len());
    for (_, expected) in &bad {
        assert!(
            reasons.iter().any(|r| r.contains(expected)),
            "no dead letter says '{expected}': {reasons:?}"
        );
    }

    // Typed columns and partitioning as declared.
    let days = env
        .scalar("calls", "SELECT count(DISTINCT call_date) FROM t")
        .await;
    assert!(days > 3, "partitioned by call date: {days} days");
    let late = env
        .scalar(
            "calls",
            "SELECT count(*) FROM t WHERE call_date_time < TIMESTAMP '2018-10-01T00:00:00Z'",
        )
        .await;
    assert_eq!(late, 0);

    // An independent reader sees the same tables.
    assert_eq!(python_count(&env, "calls", None) as i64, produced_good);
    assert_eq!(
        python_count(&env, "calls_dead_letters", None) as i64,
        bad.len() as i64
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn restart_resumes_after_the_committed_offsets() {
    let env = TestEnv::new("restart");
    env.produce_synthetic(5_000, 21);
    let first = env.catch_up();
    assert_eq!(first["records"], 5_000);

    env.produce_synthetic(3_000, 22);
    let second = env.catch_up();
    // Only the new records are read: nothing committed is fetched or skipped again.
    assert_eq!(second["records"], 3_000);
    assert_eq!(second["skipped"], 0);

    let third = env.catch_up();
    assert_eq!(third["records"], 0);
    env.assert_exactly_once(8_000).await;
    let batches = env.scalar("calls", "SELECT count(*) FROM t").await;
    assert_eq!(batches, 8_000);
}

#[tokio::test(flavor = "multi_thread")]
async fn dataset_file_replays_in_event_time_with_fresh_ids() {
    let env = TestEnv::new("file");
    let fixture = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/calls-sample.json.bz2"
    );
    // One partition, so offsets are the order the producer sent.
    env.run_ok(&[
        "produce",
        "--file",
        fixture,
        "--repeat",
        "2",
        "--partitions",
        "1",
        "--no-progress",
    ]);
    let summary = env.catch_up();
    assert_eq!(summary["rows"], 600);
    env.assert_exactly_once(600).await;
    // The file is newest first; the replay must be oldest first within each round.
    let backwards = env
        .scalar(
            "calls",
            "SELECT count(*) FROM (SELECT call_date_time, lag(call_date_time) OVER (ORDER BY kafka_offset) AS prev \
             FROM t WHERE kafka_offset < 300) WHERE prev > call_date_time",
        )
        .await;
    assert_eq!(backwards, 0);
    let second_round = env
        .scalar(
            "calls",
            "SELECT count(*) FROM t WHERE kafka_offset >= 300 AND crime_id LIKE '1183%'",
        )
        .await;
    assert_eq!(second_round, 300, "round 2 carries fresh crime_ids");
}
