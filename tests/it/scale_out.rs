//! Two `run` processes share a 4-partition topic; one stops halfway.

use std::time::Duration;

use crate::common::{parse_summary, sigterm, wait_until, TestEnv};

#[tokio::test(flavor = "multi_thread")]
async fn two_processes_one_stopped_halfway_stay_exactly_once() {
    let env = TestEnv::new("scale");
    const CALLS: u64 = 40_000;
    env.produce_synthetic(1, 40);
    let mut producer = env.spawn_producer(CALLS - 1, 41, 3000);
    let a = env.spawn(&["run", "--summary", "json"], "a.log");
    let b = env.spawn(&["run", "--summary", "json"], "b.log");

    // Stop A gracefully once both have had time to share the partitions and commit.
    tokio::time::sleep(Duration::from_secs(9)).await;
    sigterm(&a);
    let a_out = a.wait_with_output().expect("a");
    assert!(a_out.status.success(), "A did not stop cleanly");
    let a_summary = parse_summary(&a_out.stdout);

    assert!(producer.wait().expect("producer").success());
    wait_until(
        Duration::from_secs(120),
        "B to ingest everything",
        || async { env.count("calls").await >= CALLS as i64 },
    )
    .await;
    sigterm(&b);
    let b_out = b.wait_with_output().expect("b");
    assert!(b_out.status.success(), "B did not stop cleanly");
    let b_summary = parse_summary(&b_out.stdout);

    env.assert_exactly_once(CALLS as i64).await;
    let a_rows = a_summary["rows"].as_i64().unwrap_or(0);
    let b_rows = b_summary["rows"].as_i64().unwrap_or(0);
    assert!(
        a_rows > 0,
        "A committed nothing: partitions were not shared"
    );
    assert!(b_rows > 0, "B committed nothing");
    assert_eq!(a_rows + b_rows, CALLS as i64);
}
