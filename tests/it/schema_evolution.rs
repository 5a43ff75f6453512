//! Schema evolution: later messages carry two new fields; with kill -9 just before and
//! just after the first commit that adds them, the columns appear once, old rows are
//! NULL there, Python deltalake and the MySQL mirror read both, and a value of another
//! type is a dead letter.

use std::process::Command;

use crate::common::mariadb::MariaDb;
use crate::common::{row_strings, tail, TestEnv};

const DB: &str = "lakestream_evolve_it";

fn call(tag: &str, p: i32, i: usize, extra: &str) -> String {
    format!(
        r#"{{"crime_id":"{tag}-{p}-{i}","original_crime_type_name":"Noise","call_date":"2018-10-01","call_date_time":"2018-10-01T10:00:00"{extra}}}"#
    )
}

fn produce(env: &TestEnv, tag: &str, extra: impl Fn(usize) -> String) {
    let payloads: Vec<(i32, String)> = (0..4)
        .flat_map(|p| (0..25).map(move |i| (p, i)))
        .map(|(p, i)| (p, call(tag, p, i, &extra(i))))
        .collect();
    env.produce_json(&payloads);
}

/// A run that must die at `failpoint`.
fn run_until_failpoint(env: &TestEnv, failpoint: &str) {
    let mut cmd = env.command(&["run", "--until-caught-up"]);
    cmd.env("LAKESTREAM_FAILPOINT", failpoint);
    let out = cmd.output().expect("spawn");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && stderr.contains(&format!(
                "failpoint {}",
                failpoint.split('@').next().unwrap_or_default()
            )),
        "expected an abort at {failpoint}: {}\n{}",
        out.status,
        tail(&out.stderr)
    );
}

fn python_columns(env: &TestEnv) -> String {
    // os._exit: the reader's runtime can abort while Python tears it down.
    let script = "import os, sys; from deltalake import DeltaTable; \
        t = DeltaTable(sys.argv[1]).to_pyarrow_table(); \
        print(t.num_rows, t.column('priority').null_count, t.column('unit').null_count, \
              sorted(set(x for x in t.column('unit').to_pylist() if x)), flush=True); os._exit(0)";
    let out =
        Command::new(std::env::var("LAKESTREAM_TEST_PYTHON").unwrap_or_else(|_| "python3".into()))
            .args(["-c", script, env.table_url("calls").as_str()])
            .output()
            .expect("python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn new_fields_become_columns_once_across_kill_9_and_reach_python_and_mysql() {
    let mut env = TestEnv::new("evolve");
    let db = MariaDb::start(env.dir.path());
    env.overrides.extend(db.overrides(DB));
    env.overrides.extend([
        "sources.police_calls.schema_evolution=add_columns".to_string(),
        r#"mysql.mirror=["calls"]"#.to_string(),
    ]);
    env.without_bi_views();
    lakestream::source::ensure_topic(&crate::common::connection(), &env.topic, 4)
        .await
        .expect("create topic");

    produce(&env, "old", |_| String::new());
    env.catch_up();
    env.run_ok(&["sync", "--once"]);
    let before = env.open_table("calls").await.version().expect("version");

    produce(&env, "new", |i| {
        format!(
            r#","priority":{i},"unit":{{"id":"U{}","crew":[1,2]}}"#,
            i % 3
        )
    });
    // Killed with the new columns' data files written but not committed, then right
    // after the commit that adds them.
    run_until_failpoint(&env, "before_schema_change@calls");
    run_until_failpoint(&env, "after_commit@calls");
    env.catch_up();
    env.assert_each_offset_once(200).await;

    let columns = row_strings(
        &env.sql(
            "calls",
            "SELECT count(*), count(priority), count(unit), \
             sum(CASE WHEN crime_id LIKE 'old-%' AND priority IS NULL AND unit IS NULL THEN 1 ELSE 0 END) FROM t",
        )
        .await,
    );
    assert_eq!(
        columns,
        ["200|100|100|100"],
        "old rows NULL in the new columns"
    );
    let schema = env
        .open_table("calls")
        .await
        .snapshot()
        .expect("snapshot")
        .schema()
        .clone();
    let names: Vec<String> = schema.fields().map(|f| f.name().clone()).collect();
    for added in ["priority", "unit"] {
        assert_eq!(
            names.iter().filter(|n| *n == added).count(),
            1,
            "{added} once in {names:?}"
        );
    }
    assert_eq!(
        names.last().map(String::as_str),
        Some("unit"),
        "new columns go last: {names:?}"
    );
    let unit = row_strings(
        &env.sql(
            "calls",
            "SELECT DISTINCT unit FROM t WHERE unit IS NOT NULL",
        )
        .await,
    );
    assert_eq!(unit.len(), 3);
    assert!(
        unit[0].contains(r#""crew":[1,2]"#),
        "nested values as JSON text: {unit:?}"
    );

    // An independent reader sees both shapes.
    let python = python_columns(&env);
    assert!(python.starts_with("200 100 100 "), "python: {python}");

    // History and time travel show the change.
    let history = env.run_ok(&["history", "calls", "--format", "json"]);
    let history = String::from_utf8_lossy(&history.stdout);
    assert!(
        history.contains("added: priority long, unit string"),
        "history: {history}"
    );
    let old = env.run_ok(&[
        "schema",
        "calls",
        "--version",
        &before.to_string(),
        "--format",
        "csv",
    ]);
    let old = String::from_utf8_lossy(&old.stdout);
    assert!(
        old.contains("crime_id") && !old.contains("priority"),
        "{old}"
    );
    let now = env.run_ok(&["schema", "calls", "--format", "csv"]);
    assert!(String::from_utf8_lossy(&now.stdout).contains("priority,long,true,false"));

    // The mirror follows: ALTER TABLE, then the new values.
    env.run_ok(&["sync", "--once"]);
    let mirrored = db
        .rows(
            DB,
            "SELECT COUNT(*), COUNT(priority), COUNT(unit) FROM calls",
        )
        .await;
    assert_eq!(mirrored, ["200|100|100"]);

    // A value of another type is a dead letter with the reason, never a cast.
    produce(&env, "bad", |i| match i {
        0 => r#","priority":"high""#.to_string(),
        _ => r#","priority":7"#.to_string(),
    });
    env.catch_up();
    let reasons = row_strings(
        &env.sql(
            "calls_dead_letters",
            "SELECT reason FROM t WHERE payload_bytes > 0",
        )
        .await,
    );
    assert_eq!(reasons.len(), 4, "one per partition: {reasons:?}");
    assert!(
        reasons[0].contains("'priority' was added to the table as int64"),
        "{reasons:?}"
    );
    env.assert_each_offset_once(296).await;
}
