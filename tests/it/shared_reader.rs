//! One reader (one consumer, one decode) feeds all four shipped pipelines. A crash in the
//! middle of one pipeline's batch, the others wherever they are in theirs, and kill -9
//! at random moments lose and duplicate nothing in any table, and every aggregate equals
//! what the calls table says it must be.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use deltalake::arrow::array::{Array, AsArray};
use deltalake::arrow::datatypes::Int64Type;
use rand::Rng;

use crate::common::{row_strings, summary_of, tail, RawRecord, TestEnv};

const CALLS: u64 = 24_000;

/// Crash points inside one pipeline's batch: its state written but not committed, its
/// dead letters committed but not its rows, its commit done but not reported.
const CRASHES: [&str; 4] = [
    "after_state_write@crime_type_hourly:3",
    "after_dead_letters@calls:1",
    "after_commit@disposition_summary:2",
    "after_state_write@crime_type_windows:2",
];

#[tokio::test(flavor = "multi_thread")]
async fn four_pipelines_on_one_reader_survive_crashes_mid_batch() {
    let mut env = TestEnv::new("shared");
    env.pipelines = vec![
        "calls".into(),
        "crime_type_windows".into(),
        "crime_type_hourly".into(),
        "disposition_summary".into(),
    ];
    env.produce_synthetic(1, 70);
    let mut producer = env.spawn_producer(CALLS - 1, 71, 2_000);

    let mut bad = 0;
    for (round, point) in CRASHES.iter().enumerate() {
        // A bad record per partition, so the dead-letter path is in every batch mix.
        let payload = format!("not json {round}");
        let records: Vec<RawRecord<'_>> = (0..4).map(|p| (p, None, payload.as_bytes())).collect();
        env.produce_raw(&records);
        bad += 4;
        let log = format!("crash-{round}.log");
        let mut cmd = env.command(&["run"]);
        cmd.env("LAKESTREAM_FAILPOINT", point)
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(env.dir.path().join(&log)).expect("log"));
        let mut run = env.spawn_command(cmd);
        let started = Instant::now();
        let status = loop {
            if let Some(status) = run.try_wait().expect("wait") {
                break status;
            }
            if started.elapsed() > Duration::from_secs(90) {
                let _ = run.kill();
                panic!("{point}: the failpoint never fired");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let text = std::fs::read(env.dir.path().join(&log)).unwrap_or_default();
        assert!(!status.success(), "{point}: the run did not crash");
        let (name, _) = point.split_once(':').unwrap_or((point, ""));
        let (name, pipeline) = name.split_once('@').unwrap_or((name, ""));
        assert!(
            String::from_utf8_lossy(&text)
                .contains(&format!("failpoint {name} in pipeline {pipeline}")),
            "{point}: {}",
            tail(&text)
        );
        if round == 0 {
            assert!(
                String::from_utf8_lossy(&text).contains("reading the source once"),
                "the four pipelines did not share a reader: {}",
                tail(&text)
            );
        }
    }
    let mut rng = rand::thread_rng();
    for round in 0..3 {
        let mut run = env.spawn(&["run"], &format!("kill-{round}.log"));
        tokio::time::sleep(Duration::from_millis(rng.gen_range(2_000..6_000))).await;
        run.kill().expect("kill -9");
        run.wait().expect("reap");
    }
    assert!(
        producer.wait().expect("producer").success(),
        "producer failed"
    );

    let out = env.run_ok(&["run", "--until-caught-up", "--summary", "json"]);
    env.assert_exactly_once(CALLS as i64).await;
    assert_eq!(env.count("calls_dead_letters").await, bad, "dead letters");
    assert_eq!(env.distinct_offsets("calls_dead_letters").await, bad);
    // Synthetic calls arrive in event-time order: nothing is late, so every aggregate
    // must count every call exactly once.
    for p in ["crime_type_windows", "crime_type_hourly"] {
        let s = summary_of(&out.stdout, p);
        assert_eq!(s["lateRows"], 0, "{p}: {s}");
    }

    let by_disposition = "SELECT disposition, count(*) FROM t GROUP BY disposition";
    let expected = row_strings(&env.sql("calls", by_disposition).await);
    let summary = "SELECT disposition, calls FROM t";
    let got = row_strings(&env.sql("disposition_summary", summary).await);
    assert_eq!(got, expected, "disposition_summary vs the calls table");

    let hourly = "SELECT original_crime_type_name, to_unixtime(date_trunc('hour', \
                  call_date_time)), count(*) FROM t GROUP BY 1, 2";
    let expected = row_strings(&env.sql("calls", hourly).await);
    let table = "SELECT original_crime_type_name, to_unixtime(window_start), calls FROM t";
    let got = row_strings(&env.sql("crime_type_hourly", table).await);
    assert_eq!(got, expected, "crime_type_hourly vs the calls table");

    // Append-mode windows (10 minutes, sliding by 5): each closed window once, with the
    // count of calls inside it.
    let calls = env
        .sql(
            "calls",
            "SELECT original_crime_type_name, to_unixtime(call_date_time) FROM t",
        )
        .await;
    let mut per_slot: BTreeMap<(String, i64), i64> = BTreeMap::new();
    for b in &calls {
        let names = crate::common::strings(std::slice::from_ref(b), 0);
        let secs = b.column(1).as_primitive::<Int64Type>();
        for (i, name) in names.into_iter().enumerate() {
            *per_slot.entry((name, secs.value(i) / 300)).or_default() += 1;
        }
    }
    let windows = env
        .sql(
            "crime_type_windows",
            "SELECT original_crime_type_name, to_unixtime(window_start), calls FROM t",
        )
        .await;
    let mut seen = std::collections::HashSet::new();
    for b in &windows {
        let names = crate::common::strings(std::slice::from_ref(b), 0);
        let starts = b.column(1).as_primitive::<Int64Type>();
        let counts = b.column(2).as_primitive::<Int64Type>();
        assert_eq!(counts.null_count(), 0);
        for (i, name) in names.into_iter().enumerate() {
            let slot = starts.value(i) / 300;
            let expected: i64 = (0..2)
                .filter_map(|k| per_slot.get(&(name.clone(), slot + k)))
                .sum();
            assert_eq!(counts.value(i), expected, "window {name} at slot {slot}");
            assert!(seen.insert((name, slot)), "window written twice");
        }
    }
    assert!(seen.len() > 100, "too few closed windows to prove anything");
}
