//! The real SF dataset (or, where it is absent, as many synthetic calls) replayed in
//! event-time order through all four pipelines, with kill -9 at random moments: the
//! tables equal an uninterrupted run's, and the statistics of one batch query over the
//! raw calls.

use std::path::PathBuf;
use std::time::Duration;

use rand::Rng;

use crate::common::{row_strings, RawRecord, TestEnv};

const PIPELINES: [&str; 4] = [
    "calls",
    "crime_type_windows",
    "crime_type_hourly",
    "disposition_summary",
];

fn dataset() -> Option<PathBuf> {
    let path = std::env::var_os("LAKESTREAM_SF_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../shared/data/sf-calls/police-department-calls-for-service.json.bz2")
        });
    path.exists().then_some(path)
}

fn env(name: &str) -> TestEnv {
    let mut env = TestEnv::new(name);
    env.pipelines = PIPELINES.iter().map(|p| p.to_string()).collect();
    for p in PIPELINES {
        env.overrides
            .push(format!("pipelines.{p}.max_offsets_per_trigger=20000"));
    }
    env
}

/// One call per partition far in the future: the watermark passes every real window.
fn close_all_windows(env: &TestEnv) {
    let payloads: Vec<String> = (0..4)
        .map(|p| {
            format!(
                r#"{{"crime_id":"sentinel-{p}","original_crime_type_name":"Watermark","call_date":"2030-01-01","call_date_time":"2030-01-01T00:00:00","disposition":"HAN"}}"#
            )
        })
        .collect();
    let records: Vec<RawRecord<'_>> = payloads
        .iter()
        .enumerate()
        .map(|(p, s)| (p as i32, None, s.as_bytes()))
        .collect();
    env.produce_raw(&records);
}

pub(crate) async fn dump(env: &TestEnv, table: &str) -> Vec<String> {
    let query = match table {
        "calls" => "SELECT kafka_partition, kafka_offset, crime_id FROM t",
        "disposition_summary" => "SELECT disposition, description, calls FROM t",
        _ => "SELECT window_start, window_end, original_crime_type_name, calls FROM t",
    };
    row_strings(&env.sql(table, query).await)
}

#[tokio::test(flavor = "multi_thread")]
async fn replay_with_kill_9_equals_uninterrupted_run_and_batch_query() {
    let killed = env("replay-killed");
    let mut producer = killed.command(&[
        "produce",
        "--partitions",
        "4",
        "--rate",
        "3000",
        "--no-progress",
    ]);
    let expected_calls: i64 = match dataset() {
        Some(path) => {
            producer
                .arg("--file")
                .arg(path)
                .args(["--order", "event-time"]);
            199_999
        }
        None => {
            eprintln!("SF dataset not found: replaying 200,000 synthetic calls instead");
            producer.args(["--synthetic", "200000", "--seed", "7"]);
            200_000
        }
    };
    let mut producer = killed.spawn_command(producer);

    let mut rng = rand::thread_rng();
    for round in 0..10 {
        let mut run = killed.spawn(&["run"], &format!("run-{round}.log"));
        // Longer than the 6 s session a killed member holds its partitions for, so every
        // run gets to work before it is killed.
        tokio::time::sleep(Duration::from_millis(rng.gen_range(5_000..10_000))).await;
        run.kill().expect("kill -9");
        run.wait().expect("reap");
    }
    assert!(
        producer.wait().expect("producer").success(),
        "producer failed"
    );
    close_all_windows(&killed);
    // No waiting: the last killed member still holds its partitions for its 6 s
    // session, and the one catch-up must wait for them itself.
    killed.catch_up();

    let mut clean = env("replay-clean");
    clean.topic = killed.topic.clone();
    clean.catch_up();

    let calls = expected_calls + 4;
    // The SF export repeats 4 crime_ids: (partition, offset) is the record's identity.
    clean.assert_each_offset_once(calls).await;
    killed.assert_each_offset_once(calls).await;
    for table in PIPELINES {
        let (a, b) = (dump(&clean, table).await, dump(&killed, table).await);
        assert_eq!(a.len(), b.len(), "{table}: row count after kills");
        assert!(a == b, "{table}: differs from the uninterrupted run");
    }
    check_against_batch_query(&clean).await;
}

/// The same statistics, computed in one batch query over the raw calls table.
pub(crate) async fn check_against_batch_query(env: &TestEnv) {
    let raw = |q: &str| {
        let q = q.to_string();
        async move { row_strings(&env.sql("calls", &q).await) }
    };
    // Every window a call falls in (10 minutes, every 5), closed by the final watermark.
    let windows = raw(
        "WITH w AS ( \
           SELECT date_bin(INTERVAL '5 minutes', call_date_time) AS s, original_crime_type_name AS c FROM t \
           UNION ALL \
           SELECT date_bin(INTERVAL '5 minutes', call_date_time) - INTERVAL '5 minutes', original_crime_type_name FROM t), \
         wm AS (SELECT min(m) - INTERVAL '60 minutes' AS w FROM \
           (SELECT max(call_date_time) AS m FROM t GROUP BY kafka_partition)) \
         SELECT s, s + INTERVAL '10 minutes', c, count(*) FROM w \
         WHERE s + INTERVAL '10 minutes' <= (SELECT w FROM wm) GROUP BY s, c",
    )
    .await;
    let got = dump(env, "crime_type_windows").await;
    assert!(windows.len() > 1000, "too few windows to prove anything");
    assert_eq!(got.len(), windows.len(), "closed windows");
    assert!(got == windows, "window counts differ from the batch query");

    let hourly = raw("SELECT date_bin(INTERVAL '1 hour', call_date_time) AS s, \
         date_bin(INTERVAL '1 hour', call_date_time) + INTERVAL '1 hour', \
         original_crime_type_name, count(*) FROM t GROUP BY 1, 3")
    .await;
    let got = dump(env, "crime_type_hourly").await;
    assert_eq!(got.len(), hourly.len(), "hourly rows");
    assert!(got == hourly, "hourly counts differ from the batch query");

    let per_disposition = raw("SELECT disposition, count(*) FROM t GROUP BY 1").await;
    let got = row_strings(
        &env.sql("disposition_summary", "SELECT disposition, calls FROM t")
            .await,
    );
    assert_eq!(got, per_disposition, "calls per disposition");
    let unknown = env
        .scalar(
            "disposition_summary",
            "SELECT count(*) FROM t WHERE description = 'No radio code'",
        )
        .await;
    assert!(
        unknown > 0,
        "dispositions without a code must keep their calls"
    );
}
