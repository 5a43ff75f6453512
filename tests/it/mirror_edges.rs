//! MySQL mirror edges: one table that cannot sync leaves the others current and is
//! reported; keys that differ only in trailing spaces stay two rows, as in Delta.

use mysql_async::prelude::Queryable;

use crate::common::mariadb::{test_ca, MariaDb};
use crate::common::{row_strings, tail, RawRecord, TestEnv};

const DB: &str = "lakestream_edges";

fn call(id: u32, disposition: &str) -> String {
    format!(
        r#"{{"crime_id":"edge-{id}","original_crime_type_name":"Traffic Stop","call_date":"2018-12-31T00:00:00.000","call_date_time":"2018-12-31T23:{:02}:00.000","disposition":"{disposition}"}}"#,
        id % 60
    )
}

/// `payloads` to the four partitions in turn.
fn produce_round_robin(env: &TestEnv, payloads: &[String]) {
    let records: Vec<RawRecord<'_>> = payloads
        .iter()
        .enumerate()
        .map(|(i, p)| ((i % 4) as i32, None, p.as_bytes()))
        .collect();
    env.produce_raw(&records);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_table_does_not_stop_the_others_and_keys_compare_exactly() {
    let mut env = TestEnv::new("mirror-edges");
    let db = MariaDb::start(env.dir.path());
    env.pipelines = ["calls", "crime_type_hourly", "disposition_summary"]
        .map(String::from)
        .to_vec();
    env.overrides.extend(db.overrides(DB));
    // Only the two tables this test runs (the windows pipeline is not started).
    env.overrides
        .push(r#"mysql.mirror=["crime_type_hourly","disposition_summary"]"#.into());
    env.without_bi_views();

    env.produce_synthetic(1, 120); // the topic, with its 4 partitions
    let payloads: Vec<String> = (0..40)
        .map(|i| call(i, if i % 2 == 0 { "ZZZ" } else { "ZZZ " }))
        .collect();
    produce_round_robin(&env, &payloads);

    // A table MySQL already has with other columns: that one table cannot sync.
    let mut conn = db.conn("root", None, "mysql").await.expect("connect");
    conn.query_drop(format!("CREATE DATABASE {DB}"))
        .await
        .expect("db");
    conn.query_drop(format!("CREATE TABLE {DB}.crime_type_hourly (x INT)"))
        .await
        .expect("table");

    let out = env
        .command(&["run", "--until-caught-up"])
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "a table that cannot sync must fail the backfill"
    );
    assert!(
        err.contains("crime_type_hourly") && err.contains("not mirrored"),
        "{}",
        tail(&out.stderr)
    );
    // The other table is current, and 'ZZZ' and 'ZZZ ' are two keys as in Delta.
    let delta = row_strings(
        &env.sql(
            "disposition_summary",
            "SELECT disposition, calls FROM t WHERE disposition LIKE 'ZZZ%'",
        )
        .await,
    );
    assert_eq!(delta, ["ZZZ |20", "ZZZ|20"], "Delta keeps both keys");
    let mysql = db
        .rows(
            DB,
            "SELECT disposition, calls FROM disposition_summary WHERE disposition LIKE 'ZZZ%'",
        )
        .await;
    assert_eq!(delta, mysql, "disposition_summary");

    // Fixed by hand: the next sync fills it and reports success.
    conn.query_drop(format!("DROP TABLE {DB}.crime_type_hourly"))
        .await
        .expect("drop");
    env.run_ok(&["sync", "--once"]);
    let hourly = db
        .rows(
            DB,
            "SELECT original_crime_type_name, calls FROM crime_type_hourly",
        )
        .await;
    let delta = row_strings(
        &env.sql(
            "crime_type_hourly",
            "SELECT original_crime_type_name, calls FROM t",
        )
        .await,
    );
    assert_eq!(hourly, delta, "crime_type_hourly after the fix");
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_to_mysql_verifies_the_server_and_never_falls_back_to_plain_tcp() {
    let mut env = TestEnv::new("mirror-tls");
    let db = MariaDb::start_with_tls(env.dir.path());
    env.pipelines = ["calls", "disposition_summary"].map(String::from).to_vec();
    env.overrides.extend(db.overrides(DB));
    env.overrides
        .push(r#"mysql.mirror=["disposition_summary"]"#.into());
    env.without_bi_views();
    env.produce_synthetic(500, 150);
    env.run_ok(&["--set", "mysql.enabled=false", "run", "--until-caught-up"]);

    // The server refuses plain connections.
    let out = env.command(&["sync", "--once"]).output().expect("sync");
    assert!(
        !out.status.success(),
        "plain TCP to a TLS-only server must fail"
    );

    // A CA that did not sign the server's certificate: refused, not trusted blindly.
    let other = test_ca(&env.dir.path().join("other-ca"));
    let tls = |ca: &std::path::Path| {
        [
            "--set".to_string(),
            "mysql.tls=required".to_string(),
            "--set".to_string(),
            format!("mysql.tls_ca_file={}", ca.display()),
            "sync".to_string(),
            "--once".to_string(),
        ]
    };
    let args = tls(&other);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = env.command(&args).output().expect("sync");
    assert!(
        !out.status.success(),
        "a certificate from another CA must be refused"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.to_lowercase().contains("certificate"),
        "{}",
        tail(&out.stderr)
    );

    let ca = db.tls_ca.clone().expect("ca");
    let args = tls(&ca);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    env.run_ok(&args);
    let delta = row_strings(
        &env.sql(
            "disposition_summary",
            "SELECT disposition, description, calls FROM t",
        )
        .await,
    );
    let mysql = db
        .rows(
            DB,
            "SELECT disposition, description, calls FROM disposition_summary",
        )
        .await;
    assert_eq!(delta, mysql, "mirrored over TLS");
}

/// A Delta table deleted and rebuilt under the same name (what the missing-state error
/// recommends) has a new table id: its mirror is replaced whole, never mixed with the old
/// rows or skipped because the version numbers look alike.
#[tokio::test(flavor = "multi_thread")]
async fn a_rebuilt_delta_table_replaces_its_mirror() {
    let mut env = TestEnv::new("mirror-rebuilt");
    let db = MariaDb::start(env.dir.path());
    env.overrides.extend(db.overrides("lakestream_rebuilt"));
    env.overrides.extend([
        r#"mysql.mirror=["calls"]"#.to_string(),
        r#"pipelines.calls.keys=["crime_id"]"#.to_string(),
    ]);
    env.without_bi_views();
    let produce = |env: &TestEnv, tag: &str, n: u32| {
        let payloads: Vec<String> = (0..n).map(|i| call(i, tag)).collect();
        produce_round_robin(env, &payloads);
    };
    produce(&env, "OLD", 40);
    env.catch_up();
    let count = "SELECT count(*) FROM calls";
    assert_eq!(db.rows("lakestream_rebuilt", count).await, ["40"]);

    // Rebuilt from another topic: 10 calls whose ids are among the old ones.
    for table in ["calls", "calls_dead_letters"] {
        std::fs::remove_dir_all(env.table_path(table)).expect("delete the table");
    }
    env.topic = format!("{}-rebuilt", env.topic);
    produce(&env, "NEW", 10);
    env.catch_up();
    let mirrored = db
        .rows(
            "lakestream_rebuilt",
            "SELECT disposition, count(*) FROM calls GROUP BY disposition",
        )
        .await;
    assert_eq!(
        mirrored,
        ["NEW|10"],
        "the mirror is the rebuilt table alone"
    );
}
