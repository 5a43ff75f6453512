//! Maintenance beside live ingestion: compaction every few seconds, vacuum and
//! checkpoints while four pipelines commit, on a local folder and on S3; and what
//! checkpoints do for opening a table after thousands of commits.

use std::process::Child;
use std::time::{Duration, Instant};

use deltalake::logstore::object_store::ObjectStore as _;
use futures::TryStreamExt as _;
use serde_json::Value;

use crate::common::s3::S3Server;
use crate::common::{python_count, sigterm, tail, TestEnv, FLAGSHIP};
use crate::replay::check_against_batch_query;
use crate::sink::{open_table, rows};
use lakestream::maintenance::{compact, CompactOptions};
use lakestream::sink::{writer_properties, Write};
use lakestream::storage::Storage;

const RATE: u64 = 300;

/// How long the ingestion runs (LAKESTREAM_SOAK_SECS, default 5 minutes; 600 for the long soak).
fn soak_secs() -> u64 {
    std::env::var("LAKESTREAM_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(300)
}

#[tokio::test(flavor = "multi_thread")]
async fn compaction_and_vacuum_beside_ingestion_local() {
    soak(TestEnv::new("soak-local")).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn compaction_and_vacuum_beside_ingestion_on_s3() {
    let mut env = TestEnv::new("soak-s3");
    let server = S3Server::start(env.dir.path());
    env.use_s3(&server);
    soak(env).await;
    drop(server);
}

/// Files (live in the table, and stored) of `table`.
async fn file_counts(env: &TestEnv, table: &str) -> (usize, usize) {
    let t = env.open_table(table).await;
    let live = t.snapshot().expect("snapshot").log_data().num_files();
    let stored: Vec<_> = t
        .object_store()
        .list(None)
        .try_collect()
        .await
        .expect("list table");
    let data = stored
        .iter()
        .filter(|m| {
            let p = m.location.as_ref();
            p.ends_with(".parquet") && !p.starts_with("_delta_log") && !p.starts_with("_lakestream")
        })
        .count();
    (live, data)
}

async fn soak(mut env: TestEnv) {
    let secs = soak_secs();
    env.pipelines = FLAGSHIP.map(String::from).to_vec();
    env.overrides.extend(
        [
            // One folder: "bounded" is then a plain number of files.
            "pipelines.calls.partition_by=[]",
            // One commit a second per table: two of these tests share 2 cores.
            "pipelines.calls.trigger_interval=1s",
            "pipelines.crime_type_windows.trigger_interval=1s",
            "pipelines.crime_type_hourly.trigger_interval=1s",
            "pipelines.disposition_summary.trigger_interval=1s",
            "maintenance.compact.schedule=3s",
            "maintenance.compact.min_small_files=4",
            // The MERGE table less often: on a loaded 2-core machine a MERGE commit
            // over S3 takes seconds, and each compaction (its claim, then its rewrite)
            // makes the MERGE in flight conflict and start again.
            "maintenance.tables.crime_type_hourly.compact=10s",
            "maintenance.vacuum.schedule=15s",
            "maintenance.vacuum.retention=40s",
            // A vacuum retention must outlast the longest commit retry.
            "pipelines.calls.commit_retry_timeout=30s",
            "pipelines.crime_type_windows.commit_retry_timeout=30s",
            "pipelines.crime_type_hourly.commit_retry_timeout=30s",
            "pipelines.disposition_summary.commit_retry_timeout=30s",
            "maintenance.vacuum.min_retention=10s",
            "maintenance.checkpoint_interval=25",
        ]
        .map(String::from),
    );
    let calls = RATE * secs;
    env.produce_synthetic(1, 50); // the topic, before anyone subscribes
    let mut producer = env.spawn_producer(calls, 51, RATE as u32);
    let mut run = env.spawn(&["run"], "run.log");

    let started = Instant::now();
    let (mut max_live, mut max_stored, mut samples) = (0, 0, 0);
    loop {
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_running(&mut run, &env);
        if started.elapsed() > Duration::from_secs(60) {
            let (live, stored) = file_counts(&env, "calls").await;
            max_live = max_live.max(live);
            max_stored = max_stored.max(stored);
            samples += 1;
        }
        if producer.try_wait().expect("producer").is_some() {
            break;
        }
    }
    assert!(
        producer.wait().expect("producer").success(),
        "producer failed"
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    sigterm(&run);
    let status = run.wait().expect("run");
    let log = std::fs::read_to_string(env.dir.path().join("run.log")).unwrap_or_default();
    assert!(status.success(), "run failed: {}", tail(log.as_bytes()));
    // Conflicts with compaction are retried silently; a failed commit logs this warning.
    assert_eq!(
        log.matches("commit failed").count(),
        0,
        "{}",
        tail(log.as_bytes())
    );
    let compactions = log.matches("compacted").count();
    let vacuums = log.matches("vacuumed").count();
    assert!(
        compactions >= secs as usize / 20,
        "only {compactions} compactions"
    );
    assert!(vacuums >= secs as usize / 30, "only {vacuums} vacuums");

    env.catch_up();
    // The producer is at-least-once: under load its retries can store a call twice, at
    // two offsets (seen: ~15 of 180,000). Exactly once means each (partition, offset)
    // once and no call missing. (The topic's own record count cannot serve as the
    // reference: tansu can answer a fetch from the middle of a record batch with the
    // next batch, so a plain reader may undercount.)
    let records = env.count("calls").await;
    env.assert_each_offset_once(records).await;
    let ids = env
        .scalar("calls", "SELECT count(DISTINCT crime_id) FROM t")
        .await;
    assert_eq!(ids, calls as i64 + 1, "distinct calls");
    let repeated = records - ids;
    assert!(
        repeated * 1000 <= records,
        "{repeated} calls stored twice by the producer"
    );
    eprintln!("producer stored {repeated} calls twice (at two offsets each)");
    assert_eq!(
        python_count(&env, "calls", None),
        records as u64,
        "Python deltalake"
    );
    check_against_batch_query(&env).await;

    let history: Vec<Value> = String::from_utf8_lossy(
        &env.run_ok(&["history", "calls", "--limit", "100000", "--format", "json"])
            .stdout,
    )
    .lines()
    .map(|l| serde_json::from_str(l).expect("json"))
    .collect();
    let added: u64 = history
        .iter()
        .filter(|e| e["operation"] != "OPTIMIZE")
        .map(|e| e["files_added"].as_u64().unwrap_or(0))
        .sum();
    let optimize: Vec<&Value> = history
        .iter()
        .filter(|e| e["operation"] == "OPTIMIZE")
        .collect();
    assert!(!optimize.is_empty());
    for e in &optimize {
        assert_eq!(
            e["rows_added"], e["rows_removed"],
            "compaction changed data: {e}"
        );
    }
    let checkpoints = history.len() / 25;
    eprintln!(
        "soak {secs}s: {calls} calls, {} commits on calls ({} compactions, ~{checkpoints} \
         checkpoints), {added} files written by ingestion; at most {max_live} live and \
         {max_stored} stored data files over {samples} samples",
        history.len(),
        optimize.len()
    );
    assert!(max_live <= 40, "live files not bounded: {max_live}");
    assert!(max_stored <= 400, "stored files not bounded: {max_stored}");
    // Stored files are bounded by the vacuum retention, files written grow with time:
    // 3x over the 10-minute soak, in proportion over a shorter one.
    assert!(
        added as usize * 600 > 3 * max_stored * secs as usize,
        "too few files written to prove a bound"
    );
}

fn assert_running(run: &mut Child, env: &TestEnv) {
    if let Some(status) = run.try_wait().expect("try_wait") {
        let log = std::fs::read(env.dir.path().join("run.log")).unwrap_or_default();
        panic!("run exited early ({status}): {}", tail(&log));
    }
}

/// Median wall time of opening `table` at its latest version.
async fn open_time(env: &TestEnv, table: &str) -> Duration {
    let mut times = Vec::new();
    for _ in 0..7 {
        let t = Instant::now();
        let opened = env.open_table(table).await;
        times.push(t.elapsed());
        assert!(opened.version().is_some());
    }
    times.sort();
    times[times.len() / 2]
}

fn local_storage(env: &TestEnv) -> Storage {
    Storage {
        root: env.root().display().to_string(),
        options: Default::default(),
    }
}

/// Compaction of any partition with two small files, redone up to `max_retries` times.
fn small_file_compaction(max_retries: u32) -> CompactOptions {
    CompactOptions {
        target_file_size: 1 << 27,
        min_small_files: 2,
        zorder_by: Vec::new(),
        max_retries,
        writer_properties: writer_properties(1, &[]),
    }
}

/// `commits` micro-batch commits of 10 rows each through the real sink, compacted every
/// 100 commits as `run` does on its schedule. Log entries older than a second are
/// dropped behind each checkpoint: that keeps *building* the table fast (every commit
/// lists the log folder), and opening it still reads a checkpoint plus up to 99 entries.
async fn commit_many(env: &TestEnv, table: &str, commits: i64) {
    let storage = local_storage(env);
    let compaction = small_file_compaction(3);
    let mut sink = open_table(env, table, 100, Duration::from_secs(1)).await;
    for i in 0..commits {
        let (batch, info) = rows(0, i * 10, i * 10 + 9);
        sink.commit(&batch, &info, Write::Append)
            .await
            .expect("commit");
        if i % 100 == 99 {
            compact(&storage, table, &compaction)
                .await
                .expect("compact");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn checkpoints_keep_opening_a_5000_commit_table_fast() {
    let env = TestEnv::new("checkpoints");
    commit_many(&env, "few", 50).await;
    commit_many(&env, "many", 5_000).await;
    let few = open_time(&env, "few").await;
    let many = open_time(&env, "many").await;
    eprintln!(
        "open time: 50 commits {few:?}; 5,000 commits with checkpoints {many:?} ({:.2}x)",
        many.as_secs_f64() / few.as_secs_f64(),
    );
    assert!(
        many.as_secs_f64() <= 2.0 * few.as_secs_f64(),
        "5,000 commits with checkpoints open in {many:?}, 50 commits in {few:?}"
    );
    let log = std::fs::read_dir(env.table_path("many").join("_delta_log"))
        .expect("log")
        .count();
    assert!(
        log < 400,
        "log entries were not cleaned up behind checkpoints: {log}"
    );
    let version = env.open_table("many").await.version();
    assert!(version >= Some(5_000), "{version:?}");
}

/// Three compactions of one table at once (two members' schedules and a `lakestream
/// compact`, say) plan the same small files: one rewrites them, the others lose to it and
/// plan again from its snapshot. delta-rs alone would let them all commit (two removes
/// of one file with `dataChange = false` do not conflict there since 1.1.3) and each
/// file's rows would be in the table once per compaction.
#[tokio::test(flavor = "multi_thread")]
async fn compactions_at_once_rewrite_each_file_once() {
    let env = TestEnv::new("compact-race");
    let storage = local_storage(&env);
    let compaction = small_file_compaction(5);
    let mut sink = open_table(&env, "events", 1_000, Duration::from_secs(3600)).await;
    let (mut next, mut raced) = (0i64, false);
    for round in 0..5 {
        for _ in 0..40 {
            let (batch, info) = rows((next % 4) as i32, next * 10, next * 10 + 9);
            sink.commit(&batch, &info, Write::Append)
                .await
                .expect("commit");
            next += 1;
        }
        let (a, b, c) = tokio::join!(
            compact(&storage, "events", &compaction),
            compact(&storage, "events", &compaction),
            compact(&storage, "events", &compaction),
        );
        let reports = [a, b, c].map(|r| r.expect("compaction"));
        let rewrote = reports.iter().filter(|r| r.version.is_some()).count();
        assert!(
            rewrote >= 1,
            "round {round}: no compaction ran: {reports:?}"
        );
        raced |= reports.iter().any(|r| {
            r.attempts > 1
                || r.skipped
                    .as_deref()
                    .is_some_and(|s| s.contains("another compaction"))
        });
        let rows = env.count("events").await;
        assert_eq!(rows, next * 10, "round {round}: {reports:?}");
        assert_eq!(env.distinct_offsets("events").await, rows, "round {round}");
        if raced && round > 0 {
            break;
        }
    }
    assert!(
        raced,
        "the compactions never overlapped, so nothing was tested"
    );
}
