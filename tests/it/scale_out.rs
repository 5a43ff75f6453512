//! Two `run` processes share a 4-partition topic; one stops halfway.

use std::time::Duration;

use crate::common::{parse_summary, sigterm, summary_of, wait_until, TestEnv};

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

/// A member's batch is still filling (a 20 s trigger) when a second member joins and
/// the rebalance takes partitions away from it mid-batch: the records it held of those
/// are dropped, the new owner reads them from the table's offsets, and every record
/// lands once.
#[tokio::test(flavor = "multi_thread")]
async fn partitions_revoked_mid_batch_are_read_once_by_their_new_owner() {
    let mut env = TestEnv::new("revoke");
    const CALLS: u64 = 30_000;
    for set in [
        "pipelines.calls.trigger_interval=20s",
        "pipelines.calls.max_offsets_per_trigger=1000000",
    ] {
        env.overrides.push(set.into());
    }
    env.produce_synthetic(1, 50);
    let a = env.spawn(&["run", "--summary", "json"], "a.log");
    let mut producer = env.spawn_producer(CALLS - 1, 51, 2000);
    // A is assigned every partition and fills its first batch; B joins halfway.
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(
        env.count("calls").await,
        0,
        "A committed before the rebalance"
    );
    let b = env.spawn(&["run", "--summary", "json"], "b.log");
    assert!(producer.wait().expect("producer").success());
    wait_until(
        Duration::from_secs(120),
        "both members to commit everything",
        || async { env.count("calls").await >= CALLS as i64 },
    )
    .await;
    sigterm(&a);
    sigterm(&b);
    let a_out = a.wait_with_output().expect("a");
    let b_out = b.wait_with_output().expect("b");
    assert!(a_out.status.success() && b_out.status.success());
    env.assert_exactly_once(CALLS as i64).await;
    let a_rows = summary_of(&a_out.stdout, "calls")["rows"]
        .as_i64()
        .unwrap_or(0);
    let b_rows = summary_of(&b_out.stdout, "calls")["rows"]
        .as_i64()
        .unwrap_or(0);
    assert!(
        a_rows > 0 && b_rows > 0,
        "A {a_rows}, B {b_rows}: not shared"
    );
    assert_eq!(a_rows + b_rows, CALLS as i64);
}

/// All four pipelines (three of them stateful) on several members, one killed -9 and
/// one stopped while the others run: exactly once, aggregates exact, and no livelock
/// (members keep committing; conflicts per batch are reported). Two members by
/// default; `LAKESTREAM_LONG_TESTS=1` also runs four.
#[tokio::test(flavor = "multi_thread")]
async fn stateful_pipelines_scale_out_and_survive_member_loss() {
    let mut sizes = vec![2];
    if std::env::var_os("LAKESTREAM_LONG_TESTS").is_some() {
        sizes.push(4);
    }
    for members in sizes {
        stateful_scale_out(members).await;
    }
}

async fn stateful_scale_out(members: usize) {
    let mut env = TestEnv::new(&format!("scale-state{members}"));
    env.pipelines = ["calls", "crime_type_hourly", "disposition_summary"]
        .map(String::from)
        .to_vec();
    const CALLS: u64 = 24_000;
    env.produce_synthetic(1, 60);
    let mut producer = env.spawn_producer(CALLS - 1, 61, 2_000);
    let mut runs: Vec<_> = (0..members)
        .map(|i| env.spawn(&["run", "--summary", "json"], &format!("member-{i}.log")))
        .collect();
    tokio::time::sleep(Duration::from_secs(6)).await;
    let mut killed = runs.remove(0);
    killed.kill().expect("kill -9");
    killed.wait().expect("reap");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let stopped = runs.remove(0);
    sigterm(&stopped);
    let out = stopped.wait_with_output().expect("stopped member");
    assert!(out.status.success(), "a member did not stop cleanly");
    let mut summaries = vec![out.stdout];
    assert!(producer.wait().expect("producer").success());
    for run in runs {
        sigterm(&run);
        let out = run.wait_with_output().expect("member");
        assert!(out.status.success(), "a member did not stop cleanly");
        summaries.push(out.stdout);
    }
    env.catch_up();

    env.assert_exactly_once(CALLS as i64).await;
    let calls = CALLS as i64;
    let summed = env
        .scalar("disposition_summary", "SELECT sum(calls) FROM t")
        .await;
    assert_eq!(summed, calls, "{members} members: disposition_summary");
    for pipeline in ["crime_type_hourly", "disposition_summary"] {
        for (i, stdout) in summaries.iter().enumerate() {
            let s = summary_of(stdout, pipeline);
            let (batches, conflicts) = (
                s["batches"].as_u64().unwrap_or(0),
                s["commitConflicts"].as_u64().unwrap_or(0),
            );
            eprintln!("{members} members, {pipeline}, member {i}: {batches} batches, {conflicts} conflicts ({:.2} per batch)", conflicts as f64 / batches.max(1) as f64);
            assert!(
                batches > 0,
                "{pipeline}: a member committed nothing (livelock?)"
            );
        }
    }
}
