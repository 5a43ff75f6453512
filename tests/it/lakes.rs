//! Tables in Azure (Azurite) and GCS (fake-gcs-server), the servers scripts/services.sh
//! starts: two members of one group race to commit all four pipelines' tables while one of
//! them is killed with -9 over and over (first inside commits, by failpoints, then at
//! random) and compaction and vacuum run beside them; then
//! every call is in the tables once (read in-process and by Python deltalake, an
//! independent reader) and every aggregate equals a batch query.

use std::time::Duration;

use rand::Rng;

use crate::common::lakes::RemoteRoot;
use crate::common::{python_count, sigterm, tail, TestEnv, FLAGSHIP};
use crate::replay::check_against_batch_query;

const CALLS: u64 = 24_000;

#[tokio::test(flavor = "multi_thread")]
async fn azure_adls_gen2_two_writers_kill_9_compaction_and_vacuum() {
    let env = TestEnv::new("azure");
    let remote = RemoteRoot::azurite("abfss", &env.group);
    storm(env, remote).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn gcs_two_writers_kill_9_compaction_and_vacuum() {
    let env = TestEnv::new("gcs");
    let remote = RemoteRoot::fake_gcs(env.dir.path(), &env.group);
    storm(env, remote).await;
}

/// `lakestream check` on `az://` and `gs://` roots: the write probe and the conditional
/// create concurrent commits rely on.
#[tokio::test(flavor = "multi_thread")]
async fn check_probes_conditional_creates_on_azure_and_gcs() {
    let mut env = TestEnv::new("lake-check");
    env.produce_synthetic(1, 80); // the topic `check` probes
    for remote in [
        RemoteRoot::azurite("az", &env.group),
        RemoteRoot::fake_gcs(env.dir.path(), &env.group),
    ] {
        let root = remote.root.clone();
        env.use_remote(remote);
        let out = env.run_ok(&["check"]);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            text.contains("concurrent commits are safe"),
            "{root}: {}",
            tail(text.as_bytes())
        );
    }
}

async fn storm(mut env: TestEnv, remote: RemoteRoot) {
    env.use_remote(remote);
    env.pipelines = FLAGSHIP.map(String::from).to_vec();
    env.overrides.extend(
        [
            "maintenance.compact.schedule=4s",
            "maintenance.compact.min_small_files=4",
            "maintenance.tables.crime_type_hourly.compact=4s",
            "maintenance.vacuum.schedule=10s",
            "maintenance.vacuum.retention=20s",
            // A vacuum retention must outlast the longest commit retry.
            "maintenance.vacuum.min_retention=10s",
            "maintenance.checkpoint_interval=20",
        ]
        .map(String::from),
    );
    for p in FLAGSHIP {
        env.overrides
            .push(format!("pipelines.{p}.commit_retry_timeout=10s"));
    }
    env.produce_synthetic(1, 70); // the topic, before anyone subscribes
    let mut producer = env.spawn_producer(CALLS - 1, 71, 1_000);
    let mut steady = env.spawn(&["run"], "steady.log");
    let mut rng = rand::thread_rng();
    let mut round = 0;
    // The first kills land deterministically inside a commit: a state snapshot written
    // but not its commit, a table committed but not the group's offsets.
    let failpoints = [
        "after_state_write@crime_type_windows:2",
        "after_commit@crime_type_hourly:2",
        "after_commit@calls:3",
    ];
    while producer.try_wait().expect("producer").is_none() {
        let log =
            std::fs::File::create(env.dir.path().join(format!("member-{round}.log"))).expect("log");
        let mut cmd = env.command(&["run"]);
        cmd.stdout(std::process::Stdio::null()).stderr(log);
        if let Some(point) = failpoints.get(round) {
            cmd.env("LAKESTREAM_FAILPOINT", point);
        }
        let mut member = env.spawn_command(cmd);
        tokio::time::sleep(Duration::from_millis(rng.gen_range(2_000..6_000))).await;
        member.kill().expect("kill -9");
        member.wait().expect("reap");
        if let Some(status) = steady.try_wait().expect("steady member") {
            let log = std::fs::read(env.dir.path().join("steady.log")).unwrap_or_default();
            panic!("the steady member exited ({status}): {}", tail(&log));
        }
        round += 1;
    }
    assert!(producer.wait().expect("producer").success(), "producer");
    assert!(round >= 3, "only {round} kills");
    // Let the steady member commit, compact and vacuum a little on its own, then stop it.
    tokio::time::sleep(Duration::from_secs(12)).await;
    sigterm(&steady);
    let status = steady.wait().expect("steady member");
    let log = std::fs::read_to_string(env.dir.path().join("steady.log")).unwrap_or_default();
    assert!(status.success(), "steady member: {}", tail(log.as_bytes()));
    assert_eq!(
        log.matches("commit failed").count(),
        0,
        "{}",
        tail(log.as_bytes())
    );
    assert!(log.contains("compacted"), "no compaction ran");
    // A vacuum ran; how much it found past the 20 s retention depends on the machine's
    // speed (19-23 files on a quiet one, none under a loaded CI), so it is reported.
    assert!(log.contains("vacuumed"), "no vacuum ran");
    let deleted = files_vacuumed(&log);

    env.catch_up();
    env.assert_exactly_once(CALLS as i64).await;
    assert_eq!(
        python_count(&env, "calls", None),
        CALLS,
        "Python deltalake reads the same table"
    );
    check_against_batch_query(&env).await;
    // The CLI's own maintenance on the store, then the same answers.
    env.run_ok(&["compact"]);
    env.run_ok(&["checkpoint"]);
    env.assert_exactly_once(CALLS as i64).await;
    assert_eq!(python_count(&env, "calls", None), CALLS, "after compaction");
    eprintln!("{round} kills of the second member; the steady one vacuumed {deleted} files");
}

/// Files the log's `vacuumed` lines say were deleted (the log may be coloured).
fn files_vacuumed(log: &str) -> usize {
    let plain = regex::Regex::new("\x1b\\[[0-9;]*m")
        .expect("regex")
        .replace_all(log, "");
    let deleted = regex::Regex::new("vacuumed.*files_deleted=([0-9]+)").expect("regex");
    plain
        .lines()
        .filter_map(|l| deleted.captures(l))
        .filter_map(|c| c[1].parse::<usize>().ok())
        .sum()
}
