//! kill -9 at random moments while a producer writes: still exactly once.

use std::time::Duration;

use rand::Rng;

use crate::common::{tail, TestEnv};

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_at_random_moments_loses_and_duplicates_nothing() {
    let env = TestEnv::new("crash");
    const CALLS: u64 = 60_000;
    // Create the topic first so every run below finds its 4 partitions.
    env.produce_synthetic(1, 30);
    let mut cmd = env.command(&[
        "produce",
        "--synthetic",
        &(CALLS - 1).to_string(),
        "--seed",
        "31",
        "--rate",
        "1200",
        "--no-progress",
    ]);
    cmd.stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let mut producer = env.spawn_command(cmd);

    let mut rng = rand::thread_rng();
    for round in 0..12 {
        let mut run = env.spawn(&["run"], &format!("run-{round}.log"));
        let delay = rng.gen_range(1_500..7_000);
        tokio::time::sleep(Duration::from_millis(delay)).await;
        run.kill().expect("kill -9"); // Child::kill sends SIGKILL
        run.wait().expect("reap");
    }
    let status = producer.wait().expect("producer");
    assert!(status.success(), "producer failed");
    // The last killed member keeps its partitions until its session (6 s) expires; a
    // catch-up that joins before then is handed only the rest.
    tokio::time::sleep(Duration::from_secs(7)).await;

    let summary = env.catch_up();
    let rows = env.count("calls").await;
    if rows != CALLS as i64 {
        let log = std::fs::read(env.dir.path().join("run-11.log")).unwrap_or_default();
        eprintln!("last killed run's log:\n{}", tail(&log));
    }
    eprintln!("final catch-up: {summary}");
    env.assert_exactly_once(CALLS as i64).await;
    // Killed runs must have committed something, or the test proved nothing.
    let committed_before_final = CALLS as i64 - summary["rows"].as_i64().unwrap_or(0);
    assert!(
        committed_before_final > 0,
        "the killed runs committed nothing"
    );
}
