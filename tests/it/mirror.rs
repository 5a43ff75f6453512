//! The MySQL mirror against a real (private) MariaDB: tables equal their Delta tables
//! row by row, views equal the same queries on Delta, the BI account is read-only, and
//! neither kill -9 nor a MariaDB outage makes the mirror diverge.

use std::time::Duration;

use mysql_async::prelude::Queryable;
use rand::Rng;

use crate::common::mariadb::MariaDb;
use crate::common::{row_strings, wait_until, TestEnv, FLAGSHIP};

pub(crate) const DB: &str = "lakestream_it";
pub(crate) const BI_PASSWORD: &str = "bi-Secret-42";

/// A test environment with all four pipelines and its own MariaDB (in its folder).
pub(crate) fn env(name: &str) -> (TestEnv, MariaDb) {
    let mut env = TestEnv::new(name);
    let db = MariaDb::start(env.dir.path());
    env.pipelines = FLAGSHIP.map(String::from).to_vec();
    env.overrides.extend(db.overrides(DB));
    env.env_vars
        .push(("LAKESTREAM_BI_PASSWORD".into(), BI_PASSWORD.into()));
    (env, db)
}

/// `2018-11-04T09:00:00Z` as San Francisco wall-clock time, `2018-11-04T01:00:00`.
fn sf_local(utc: &str) -> String {
    let at =
        chrono::DateTime::parse_from_rfc3339(utc.trim()).unwrap_or_else(|e| panic!("{utc}: {e}"));
    at.with_timezone(&chrono_tz::America::Los_Angeles)
        .format("%Y-%m-%dT%H:%M:%S")
        .to_string()
}

/// Each mirrored table read from Delta and from MySQL as sorted `a|b|c` rows.
async fn assert_mirror_equals_delta(env: &TestEnv, db: &MariaDb) {
    const TS: &str = "'%Y-%m-%dT%H:%i:%sZ'";
    for table in ["crime_type_windows", "crime_type_hourly"] {
        let delta = row_strings(
            &env.sql(
                table,
                "SELECT window_start, window_end, original_crime_type_name, calls FROM t",
            )
            .await,
        );
        let mysql = db
            .rows(
                DB,
                &format!(
                    "SELECT DATE_FORMAT(window_start, {TS}), DATE_FORMAT(window_end, {TS}), \
                     original_crime_type_name, calls FROM {table}"
                ),
            )
            .await;
        assert_eq!(delta.len(), mysql.len(), "{table}: row count");
        assert!(delta == mysql, "{table}: MySQL differs from Delta");
    }
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
    assert_eq!(delta, mysql, "disposition_summary");
    crate::bi::assert_grains_equal_delta(env, db).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn mirror_equals_delta_views_match_and_bi_account_is_read_only() {
    let (env, mut db) = env("mirror");
    env.produce_synthetic(3_000, 11);
    env.run_ok(&["run", "--until-caught-up"]);
    assert_mirror_equals_delta(&env, &db).await;
    assert!(
        env.count("crime_type_windows").await > 100,
        "too few windows"
    );

    // Views: the same numbers as the same query on Delta.
    const TS: &str = "'%Y-%m-%dT%H:%i:%sZ'";
    let per_hour = row_strings(
        &env.sql(
            "crime_type_hourly",
            "SELECT window_start, sum(calls) FROM t GROUP BY window_start",
        )
        .await,
    );
    let view = db
        .rows(
            DB,
            &format!("SELECT DATE_FORMAT(hour_start_utc, {TS}), calls FROM v_calls_per_hour"),
        )
        .await;
    assert_eq!(per_hour, view, "v_calls_per_hour");
    // People read San Francisco local time: checked against chrono-tz, both DST sides.
    let pairs = db
        .rows(
            DB,
            &format!(
                "SELECT DATE_FORMAT(hour_start_utc, {TS}), \
                 DATE_FORMAT(hour_start, '%Y-%m-%dT%H:%i:%s') FROM v_calls_per_hour"
            ),
        )
        .await;
    assert!(!pairs.is_empty());
    for pair in &pairs {
        let (utc, local) = pair.split_once('|').expect("two columns");
        assert_eq!(local, sf_local(utc), "{pair}");
    }
    // The latest day is San Francisco's.
    let hourly = env
        .sql(
            "crime_type_hourly",
            "SELECT window_start, original_crime_type_name, calls FROM t",
        )
        .await;
    let rows = row_strings(&hourly);
    let day = |utc: &str| sf_local(utc)[..10].to_string();
    let latest = rows
        .iter()
        .map(|r| day(r.split('|').next().unwrap_or_default()))
        .max()
        .unwrap_or_default();
    let mut per_type: std::collections::BTreeMap<String, i64> = Default::default();
    for r in &rows {
        let cells: Vec<&str> = r.split('|').collect();
        if day(cells[0]) >= latest {
            *per_type.entry(cells[1].to_string()).or_default() +=
                cells[2].parse::<i64>().unwrap_or(0);
        }
    }
    let mut ranked: Vec<(String, i64)> = per_type.into_iter().collect();
    ranked.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let mut top: Vec<String> = ranked
        .iter()
        .take(10)
        .map(|(t, c)| format!("{t}|{c}"))
        .collect();
    top.sort();
    let view = db
        .rows(
            DB,
            "SELECT crime_type, calls FROM v_top_crime_types_latest_day",
        )
        .await;
    assert_eq!(top, view, "v_top_crime_types_latest_day");
    let per_disposition = db
        .rows(
            DB,
            "SELECT disposition, description, calls FROM v_calls_per_disposition",
        )
        .await;
    assert_eq!(
        per_disposition.len() as i64,
        env.count("disposition_summary").await
    );
    assert!(!db
        .rows(DB, "SELECT * FROM v_latest_closed_windows")
        .await
        .is_empty());

    // The BI account reads the views and nothing else.
    let mut bi = db
        .conn("lakestream_bi", Some(BI_PASSWORD), DB)
        .await
        .expect("BI login");
    let n: Option<i64> = bi
        .query_first("SELECT count(*) FROM v_calls_per_disposition")
        .await
        .expect("BI reads a view");
    assert!(n.unwrap_or(0) > 0);
    for forbidden in [
        "SELECT count(*) FROM crime_type_hourly",
        "SELECT count(*) FROM lakestream_sync_state",
        "INSERT INTO v_calls_per_disposition VALUES ('X', 'x', 1)",
        "DELETE FROM crime_type_hourly",
        "DROP VIEW v_calls_per_hour",
        "CREATE TABLE evil (x INT)",
    ] {
        let r: mysql_async::Result<Vec<mysql_async::Row>> = bi.query(forbidden).await;
        assert!(r.is_err(), "the BI account could run: {forbidden}");
    }
    drop(bi);

    // A second catch-up with nothing new writes nothing, and hostile names are refused
    // before anything reaches MySQL.
    let out = env.run_ok(&["sync", "--once"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.lines().all(|l| l.contains("\"rows\":0")), "{text}");
    for (key, value) in [
        ("mysql.database", "lake`stream"),
        ("mysql.database", "x; DROP DATABASE mysql"),
        ("mysql.bi_user", "bi'@'%"),
        ("mysql.database", &"d".repeat(65)),
    ] {
        let out = env
            .command(&["sync", "--once"])
            .arg("--set")
            .arg(format!("{key}={value}"))
            .output()
            .expect("spawn");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains(key),
            "{key}={value}: {err}"
        );
    }
    db.kill();
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_and_a_mariadb_outage_leave_no_divergence() {
    let (env, mut db) = env("mirror-kill");
    const CALLS: u64 = 60_000;
    env.produce_synthetic(1, 20);
    let mut producer = env.spawn_producer(CALLS - 1, 21, 1500);
    let mut rng = rand::thread_rng();
    for round in 0..12 {
        let mut run = env.spawn(&["run"], &format!("run-{round}.log"));
        if round == 0 {
            // MariaDB goes away for a while: ingestion into Delta must go on. The first
            // run gets its partitions at once (no killed member holds them yet); let it
            // commit first.
            let log = env.table_path("calls").join("_delta_log");
            wait_until(Duration::from_secs(60), "the calls table", || async {
                log.is_dir()
            })
            .await;
            let start = env.count("calls").await;
            wait_until(Duration::from_secs(60), "the run to commit", || async {
                env.count("calls").await > start
            })
            .await;
            db.kill();
            let before = env.count("calls").await;
            wait_until(
                Duration::from_secs(30),
                "ingestion with MariaDB down",
                || async { env.count("calls").await > before },
            )
            .await;
            tokio::time::sleep(Duration::from_secs(3)).await;
            db.resume();
        }
        tokio::time::sleep(Duration::from_millis(rng.gen_range(1_500..4_000))).await;
        run.kill().expect("kill -9");
        run.wait().expect("reap");
    }
    assert!(
        producer.wait().expect("producer").success(),
        "producer failed"
    );
    // The last killed member holds its partitions until its session (6 s) expires.
    tokio::time::sleep(Duration::from_secs(7)).await;
    env.run_ok(&["run", "--until-caught-up"]);
    env.assert_exactly_once(CALLS as i64).await;
    assert_mirror_equals_delta(&env, &db).await;
    let synced: Vec<String> = db
        .rows(DB, "SELECT table_name FROM lakestream_sync_state")
        .await;
    assert_eq!(
        synced,
        [
            "crime_calls",
            "crime_type_hourly",
            "crime_type_windows",
            "disposition_summary"
        ],
        "the three tables and the grains"
    );
    db.kill();
}
