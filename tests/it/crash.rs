//! kill -9 at random moments while a producer writes: still exactly once.

use std::time::Duration;

use rand::Rng;

use crate::common::{produce_raw_to, tail, RawRecord, TestEnv};

const BAD_ROUNDS: usize = 30;

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_at_random_moments_loses_and_duplicates_nothing() {
    let env = TestEnv::new("crash");
    const CALLS: u64 = 60_000;
    // Create the topic first so every run below finds its 4 partitions.
    env.produce_synthetic(1, 30);
    let mut producer = env.spawn_producer(CALLS - 1, 31, 1200);

    // Bad records arrive throughout, so kills also land between a dead-letter commit and
    // the row commit of the same batch.
    let topic = env.topic.clone();
    let bad_sender = std::thread::spawn(move || {
        for round in 0..BAD_ROUNDS {
            let payloads: Vec<String> = (0..4).map(|p| format!("not json {round}/{p}")).collect();
            let records: Vec<RawRecord<'_>> = payloads
                .iter()
                .enumerate()
                .map(|(p, text)| (p as i32, None, text.as_bytes()))
                .collect();
            produce_raw_to(&topic, &records);
            std::thread::sleep(Duration::from_millis(1_000));
        }
    });

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
    bad_sender.join().expect("bad-record sender");
    // No waiting: the last killed member keeps its partitions until its session (6 s)
    // expires, and the catch-up must wait for them itself.

    let summary = env.catch_up();
    let rows = env.count("calls").await;
    if rows != CALLS as i64 {
        let log = std::fs::read(env.dir.path().join("run-11.log")).unwrap_or_default();
        eprintln!("last killed run's log:\n{}", tail(&log));
    }
    eprintln!("final catch-up: {summary}");
    env.assert_exactly_once(CALLS as i64).await;
    let dead = env.count("calls_dead_letters").await;
    let dead_distinct = env.distinct_offsets("calls_dead_letters").await;
    assert_eq!(dead_distinct, dead, "duplicate dead letters");
    assert_eq!(
        dead,
        4 * BAD_ROUNDS as i64,
        "dead letters vs bad records produced"
    );
    // Killed runs must have committed something, or the test proved nothing.
    let committed_before_final = CALLS as i64 - summary["rows"].as_i64().unwrap_or(0);
    assert!(
        committed_before_final > 0,
        "the killed runs committed nothing"
    );
}
