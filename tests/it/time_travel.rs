//! `query` at versions and times, `history`, and the maintenance commands on a table
//! whose every version is known from the offsets its commits carried.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::common::{python_count, row_strings, TestEnv};

const CALLS: u64 = 3_000;

fn json_lines(stdout: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect()
}

/// `query --format json` with extra arguments; the rows as JSON objects.
fn query(env: &TestEnv, sql: &str, extra: &[&str]) -> Vec<Value> {
    let mut args = vec!["query", "--format", "json", sql];
    args.extend_from_slice(extra);
    json_lines(&env.run_ok(&args).stdout)
}

fn query_fails(env: &TestEnv, args: &[&str]) -> String {
    let out = env.command(args).output().expect("spawn");
    assert!(!out.status.success(), "{args:?} should fail");
    String::from_utf8_lossy(&out.stderr).to_string()
}

fn count_at(env: &TestEnv, version: u64) -> u64 {
    let rows = query(
        env,
        "SELECT count(*) AS n FROM calls",
        &["--version", &version.to_string()],
    );
    rows[0]["n"].as_u64().expect("count")
}

#[tokio::test(flavor = "multi_thread")]
async fn versions_times_history_compaction_and_vacuum() {
    let mut env = TestEnv::new("travel");
    env.overrides.extend([
        "pipelines.calls.max_offsets_per_trigger=400".to_string(),
        "maintenance.compact.min_small_files=2".to_string(),
    ]);
    env.produce_synthetic(CALLS, 40);
    env.catch_up();
    env.assert_exactly_once(CALLS as i64).await;

    // History: every ingestion commit, its batch id and offsets; oldest last.
    let history = json_lines(&env.run_ok(&["history", "calls", "--limit", "1000"]).stdout);
    let mut batches: Vec<&Value> = history.iter().filter(|e| e["batch_id"].is_i64()).collect();
    batches.reverse();
    assert!(batches.len() >= 6, "too few batches to test: {history:?}");
    assert_eq!(history.last().expect("first commit")["version"], 0);

    // Rows at each version = rows the commits up to it added; the offsets they carried
    // tell which (partition, max offset) the table holds.
    let mut total = 0;
    let mut max_offset: BTreeMap<String, u64> = BTreeMap::new();
    for (i, entry) in batches.iter().enumerate() {
        assert_eq!(entry["batch_id"], i as i64, "batch ids count up");
        let version = entry["version"].as_u64().expect("version");
        total += entry["rows_added"].as_u64().expect("rows");
        for range in entry["offsets"].as_str().expect("offsets").split(' ') {
            let (p, r) = range.split_once(':').expect("p:first-last");
            let last = r.split_once('-').expect("first-last").1.parse().expect("n");
            max_offset.insert(p.to_string(), last);
        }
        assert_eq!(count_at(&env, version), total, "rows at version {version}");
        if i % 3 == 0 {
            let sql = format!(
                "SELECT kafka_partition AS p, max(kafka_offset) AS o FROM calls@v{version} GROUP BY 1 ORDER BY 1"
            );
            let got: BTreeMap<String, u64> = query(&env, &sql, &[])
                .iter()
                .map(|r| (r["p"].to_string(), r["o"].as_u64().expect("offset")))
                .collect();
            assert_eq!(got, max_offset, "offsets held at version {version}");
            let python = python_count(&env, "calls", Some(version));
            assert_eq!(python, total, "python deltalake at version {version}");
        }
    }
    assert_eq!(total, CALLS);

    // --as-of: a commit's own time picks it; a millisecond earlier picks the one before.
    for pair in batches.windows(2).skip(1).step_by(2) {
        let (before, entry) = (pair[0], pair[1]);
        let ts = entry["timestamp"].as_str().expect("timestamp");
        let t = chrono::DateTime::parse_from_rfc3339(ts).expect("rfc3339");
        let prev = chrono::DateTime::parse_from_rfc3339(before["timestamp"].as_str().expect("ts"))
            .expect("rfc3339");
        let at = |t: chrono::DateTime<chrono::FixedOffset>| {
            let rows = query(
                &env,
                "SELECT count(*) AS n FROM calls",
                &["--as-of", &t.to_rfc3339()],
            );
            rows[0]["n"].as_u64().expect("count")
        };
        let version = entry["version"].as_u64().expect("version");
        assert_eq!(at(t), count_at(&env, version), "as of {ts}");
        if prev < t - chrono::Duration::milliseconds(1) {
            let earlier = t - chrono::Duration::milliseconds(1);
            assert_eq!(at(earlier), count_at(&env, version - 1), "as of {earlier}");
        }
    }

    // One query, two versions of the same table.
    let first = batches[0]["version"].as_u64().expect("v");
    let rows = query(
        &env,
        &format!("SELECT (SELECT count(*) FROM calls@v{first}) AS then, (SELECT count(*) FROM calls) AS now"),
        &[],
    );
    assert_eq!(rows[0]["then"], batches[0]["rows_added"]);
    assert_eq!(rows[0]["now"], CALLS);

    // Clear errors.
    let e = query_fails(&env, &["query", "SELECT 1 FROM calls", "--version", "999"]);
    assert!(e.contains("has no version 999"), "{e}");
    let e = query_fails(
        &env,
        &["query", "SELECT 1 FROM calls", "--as-of", "2001-01-01"],
    );
    assert!(e.contains("did not exist yet at 2001-01-01"), "{e}");
    let e = query_fails(&env, &["query", "SELECT 1 FROM nope"]);
    assert!(
        e.contains("unknown table 'nope'") && e.contains("calls_dead_letters"),
        "{e}"
    );
    let e = query_fails(&env, &["history", "nope"]);
    assert!(e.contains("unknown table 'nope'"), "{e}");

    // Compaction rewrites files, never data.
    let dump = "SELECT kafka_partition, kafka_offset, crime_id, call_date_time FROM t";
    let before = row_strings(&env.sql("calls", dump).await);
    let files_before = env
        .open_table("calls")
        .await
        .snapshot()
        .expect("s")
        .log_data()
        .num_files();
    let report = json_lines(&env.run_ok(&["compact", "calls"]).stdout);
    let compacted = report[0]["version"].as_u64().expect("a compaction commit");
    assert!(
        report[0]["after"]["files"].as_u64() < Some(files_before as u64),
        "{report:?}"
    );
    assert_eq!(report[0]["before"]["rows"], report[0]["after"]["rows"]);
    assert_eq!(
        row_strings(&env.sql("calls", dump).await),
        before,
        "data changed"
    );
    let again = json_lines(&env.run_ok(&["compact", "calls"]).stdout);
    assert!(
        again[0]["skipped"].is_string(),
        "second compaction should skip: {again:?}"
    );
    let history = json_lines(&env.run_ok(&["history", "calls", "--limit", "1"]).stdout);
    assert_eq!(history[0]["operation"], "OPTIMIZE");
    assert_eq!(history[0]["version"], compacted);
    assert_eq!(history[0]["rows_added"], history[0]["rows_removed"]);

    // Vacuum: a short retention needs --force; a dry run deletes nothing.
    let e = query_fails(&env, &["vacuum", "calls", "--retention", "0s"]);
    assert!(e.contains("--force") && e.contains("min_retention"), "{e}");
    let dry = json_lines(
        &env.run_ok(&[
            "vacuum",
            "calls",
            "--retention",
            "0s",
            "--force",
            "--dry-run",
        ])
        .stdout,
    );
    let listed = dry[0]["files"].as_array().expect("files").len();
    assert!(
        listed >= files_before - 1,
        "dry run listed {listed} of {files_before} files"
    );
    assert_eq!(
        count_at(&env, first),
        batches[0]["rows_added"].as_u64().expect("n")
    );
    let done = json_lines(
        &env.run_ok(&["vacuum", "calls", "--retention", "0s", "--force"])
            .stdout,
    );
    assert_eq!(done[0]["files"].as_array().expect("files").len(), listed);
    let e = query_fails(
        &env,
        &[
            "query",
            "SELECT count(*) FROM calls",
            "--version",
            &first.to_string(),
        ],
    );
    assert!(e.contains("VACUUM deleted"), "{e}");
    assert_eq!(env.count("calls").await, CALLS as i64);

    let ckpt = json_lines(&env.run_ok(&["checkpoint", "calls"]).stdout);
    assert!(ckpt[0]["version"].as_u64() > Some(compacted), "{ckpt:?}");
    let checkpoint_file = env.table_path("calls").join(format!(
        "_delta_log/{:020}.checkpoint.parquet",
        ckpt[0]["version"].as_u64().unwrap_or(0)
    ));
    assert!(checkpoint_file.exists(), "no {}", checkpoint_file.display());
    assert_eq!(python_count(&env, "calls", None), CALLS);
}
