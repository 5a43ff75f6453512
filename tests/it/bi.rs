//! The BI side as a Power BI developer meets it (docs/bi.md): the refresh-policy
//! queries run as the BI account, answer what Delta holds and are index range scans in
//! MariaDB; the freshness and change-horizon views say what the pipelines' watermarks
//! say.

use mysql_async::prelude::Queryable;
use mysql_async::Row;

use crate::common::mariadb::MariaDb;
use crate::common::{row_strings, TestEnv};
use crate::mirror::{env, BI_PASSWORD, DB};

/// The facts a refresh policy reads, with the mirrored table each one is over.
const FACTS: [(&str, &str); 2] = [
    ("fact_crime_type_hourly", "crime_type_hourly"),
    ("fact_crime_type_windows", "crime_type_windows"),
];

/// EXPLAIN `sql` (as the server's root: EXPLAIN on a view also needs SHOW VIEW): the
/// access type, index and Extra of the base table's row.
async fn plan(db: &MariaDb, sql: &str) -> (String, String, String) {
    let mut conn = db.conn("root", None, DB).await.expect("connect");
    // InnoDB refreshes index statistics in the background after bulk changes; the plan
    // is judged on current ones, as it is a moment after a load.
    let grains = ["crime_calls_minute", "crime_calls_hour", "crime_calls_day"];
    for table in FACTS.iter().map(|(_, t)| *t).chain(grains) {
        let _: Vec<Row> = conn
            .query(format!("ANALYZE TABLE {table}"))
            .await
            .expect("analyze");
    }
    let rows: Vec<Row> = conn.query(format!("EXPLAIN {sql}")).await.expect("explain");
    let row = rows.first().expect("a plan row");
    let get = |name: &str| -> String {
        row.get::<Option<String>, _>(name)
            .flatten()
            .unwrap_or_default()
    };
    eprintln!(
        "EXPLAIN {sql}\n  -> type={} key={} rows={} extra={}",
        get("type"),
        get("key"),
        get("rows"),
        get("Extra")
    );
    (get("type"), get("key"), get("Extra"))
}

#[tokio::test(flavor = "multi_thread")]
async fn refresh_policy_queries_are_range_scans_and_freshness_follows_the_watermark() {
    let (env, db) = env("bi");
    // Six weeks of calls from 2018-10-01 (SF): a day is a small part of each table, as
    // a refresh partition is of a real one (a planner scans a table whose partition is
    // a large part of it, rightly).
    env.run_ok(&[
        "produce",
        "--synthetic",
        "20000",
        "--seed",
        "36",
        "--partitions",
        "4",
        "--mean-gap",
        "180",
        "--no-progress",
    ]);
    env.run_ok(&["run", "--until-caught-up"]);
    let mut bi = db
        .conn("lakestream_bi", Some(BI_PASSWORD), DB)
        .await
        .expect("BI account");

    // The partition query and the change poll of a policy on period_utc, and of one on
    // date_key, as Power BI folds them: index range scans, answering what Delta holds.
    let (from, to) = ("2018-10-03 00:00:00", "2018-10-04 00:00:00");
    for (fact, table) in FACTS {
        let range = format!("period_utc >= '{from}' AND period_utc < '{to}'");
        for sql in [
            format!("SELECT * FROM {fact} WHERE {range}"),
            format!("SELECT MAX(updated_at) FROM {fact} WHERE {range}"),
            format!("SELECT * FROM {fact} WHERE date_key >= 20181003 AND date_key < 20181004"),
            format!("SELECT MAX(updated_at) FROM {fact} WHERE date_key = 20181003"),
        ] {
            let (access, key, extra) = plan(&db, &sql).await;
            // MAX over one date_key is one dive into (date_key, updated_at): no scan at all.
            if extra == "Select tables optimized away" {
                assert!(
                    sql.contains("MAX(updated_at)") && sql.contains("date_key ="),
                    "{sql}"
                );
                continue;
            }
            assert_eq!(access, "range", "{sql}: not a range scan ({key}, {extra})");
            assert!(key.starts_with("lake_"), "{sql}: uses index '{key}'");
        }
        let calls: Option<i64> = bi
            .query_first(format!(
                "SELECT CAST(SUM(calls) AS SIGNED) FROM {fact} WHERE {range}"
            ))
            .await
            .expect("partition query");
        let delta = row_strings(
            &env.sql(
                table,
                &format!(
                    "SELECT CAST(SUM(calls) AS BIGINT) FROM t WHERE window_start >= \
                     TIMESTAMP '{from}Z' AND window_start < TIMESTAMP '{to}Z'"
                ),
            )
            .await,
        );
        assert_eq!(
            calls.map(|c| c.to_string()),
            delta.first().cloned(),
            "{fact}"
        );
        assert!(calls.unwrap_or(0) > 0, "{fact}: no calls on {from}");
    }

    check_freshness(&env, &mut bi).await;
}

/// `lake_freshness` and `lake_change_horizon` against the Delta tables: the version,
/// the watermark as min over partitions of the latest call time less the 60-minute
/// delay, and the horizon one window length before it.
async fn check_freshness(env: &TestEnv, bi: &mut mysql_async::Conn) {
    let latest = row_strings(
        &env.sql(
            "calls",
            "SELECT MIN(m) FROM (SELECT CAST(MAX(call_date_time) AS BIGINT) AS m \
             FROM t GROUP BY kafka_partition)",
        )
        .await,
    );
    let micros: i64 = latest.first().expect("calls").parse().expect("µs");
    let through = chrono::DateTime::from_timestamp_micros(micros)
        .expect("timestamp")
        .naive_utc()
        - chrono::Duration::minutes(60);
    for (table, window_minutes) in [("crime_type_hourly", 60), ("crime_type_windows", 10)] {
        let version = env.open_table(table).await.version().expect("version");
        let row: (i64, String, Option<i64>, String) = bi
            .exec_first(
                "SELECT f.delta_version, \
                        DATE_FORMAT(f.complete_through_utc, '%Y-%m-%dT%H:%i:%s.%f'), f.lag_s, \
                        DATE_FORMAT(h.changes_from_utc, '%Y-%m-%dT%H:%i:%s.%f') \
                 FROM lake_freshness f JOIN lake_change_horizon h USING (table_name) \
                 WHERE table_name = ?",
                (table,),
            )
            .await
            .expect("freshness")
            .expect("a row per table");
        assert_eq!(row.0 as u64, version, "{table}: mirrored version");
        let fmt = |t: chrono::NaiveDateTime| t.format("%Y-%m-%dT%H:%M:%S%.6f").to_string();
        assert_eq!(row.1, fmt(through), "{table}: complete through");
        assert!(row.2.is_some_and(|lag| lag > 0), "{table}: lag");
        let horizon = through - chrono::Duration::minutes(window_minutes);
        assert_eq!(row.3, fmt(horizon), "{table}: changes from");
    }
    let complete: (String, Option<String>, String) = bi
        .query_first(
            "SELECT output_mode, changes_from_utc, reach FROM lake_change_horizon \
             WHERE table_name = 'disposition_summary'",
        )
        .await
        .expect("horizon")
        .expect("row");
    assert_eq!((complete.0.as_str(), complete.1), ("complete", None));
    assert!(complete.2.contains("any period"), "{}", complete.2);
}

/// Every grain row equals a count over the Delta calls table: per UTC minute and hour of
/// the call time, and per San Francisco day (the feed's own `call_date`); each day's
/// period is its local midnight.
pub(crate) async fn assert_grains_equal_delta(env: &TestEnv, db: &MariaDb) {
    let kind = "COALESCE(original_crime_type_name, '-')";
    for (grain, delta_period, mysql_period) in [
        (
            "minute",
            "to_char(date_trunc('minute', call_date_time), '%Y-%m-%d %H:%M')",
            "DATE_FORMAT(period_utc, '%Y-%m-%d %H:%i')",
        ),
        (
            "hour",
            "to_char(date_trunc('hour', call_date_time), '%Y-%m-%d %H')",
            "DATE_FORMAT(period_utc, '%Y-%m-%d %H')",
        ),
        ("day", "to_char(call_date, '%Y%m%d')", "date_key"),
    ] {
        let delta = row_strings(
            &env.sql(
                "calls",
                &format!("SELECT {delta_period}, {kind}, count(*) FROM t GROUP BY 1, 2"),
            )
            .await,
        );
        let mysql = db
            .rows(
                DB,
                &format!("SELECT {mysql_period}, {kind}, calls FROM crime_calls_{grain}"),
            )
            .await;
        assert_eq!(delta.len(), mysql.len(), "{grain} grain: row count");
        assert!(delta == mysql, "{grain} grain differs from Delta");
    }
    let not_midnight = db
        .rows(
            DB,
            "SELECT date_key FROM crime_calls_day WHERE DATE_FORMAT(\
             lakestream_local_time(period_utc, 'America/Los_Angeles'), '%H:%i') <> '00:00' \
             OR DATE_FORMAT(lakestream_local_time(period_utc, 'America/Los_Angeles'), \
             '%Y%m%d') <> date_key",
        )
        .await;
    assert!(
        not_midnight.is_empty(),
        "days not at local midnight: {not_midnight:?}"
    );
}

/// `n` calls at `at` (SF wall clock, `2018-10-03T10:15:00`) of crime type `kind`.
fn late_calls(n: usize, at: &str, kind: &str) -> Vec<String> {
    (0..n)
        .map(|i| {
            format!(
                r#"{{"crime_id":"late-{i}","original_crime_type_name":"{kind}","call_date":"{}T00:00:00.000","call_date_time":"{at}.000","disposition":"ADV"}}"#,
                &at[..10]
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn grains_count_every_call_and_late_calls_recount_only_their_periods() {
    let (env, db) = env("grains");
    env.run_ok(&[
        "produce",
        "--synthetic",
        "6000",
        "--seed",
        "38",
        "--partitions",
        "4",
        "--mean-gap",
        "120",
        "--no-progress",
    ]);
    env.run_ok(&["run", "--until-caught-up"]);
    assert_grains_equal_delta(&env, &db).await;
    let marker = |grain: &str, period: &str| {
        format!(
            "SELECT lake_version, calls FROM crime_calls_{grain} \
             WHERE original_crime_type_name = 'Late Kind' AND period_utc = '{period}'"
        )
    };
    // The range scan Grafana's $__timeFilter folds onto, on each grain.
    for grain in ["minute", "hour", "day"] {
        let sql = format!(
            "SELECT period_utc AS time, SUM(calls) FROM grain_calls_{grain} WHERE period_utc \
             BETWEEN '2018-10-02 00:00:00' AND '2018-10-03 00:00:00' GROUP BY period_utc"
        );
        let (access, key, _) = plan(&db, &sql).await;
        assert_eq!(
            (access.as_str(), key.as_str()),
            ("range", "grain_period"),
            "{sql}"
        );
    }
    let untouched = db
        .rows(
            DB,
            "SELECT MAX(lake_version) FROM crime_calls_hour WHERE period_utc < '2018-10-02'",
        )
        .await;

    // Calls long behind every watermark (the calls table takes them all): their minute,
    // hour and day are recounted, and nothing else changes.
    let late: Vec<String> = late_calls(7, "2018-10-03T10:15:00", "Late Kind");
    let records: Vec<crate::common::RawRecord<'_>> = late
        .iter()
        .enumerate()
        .map(|(i, p)| ((i % 4) as i32, None, p.as_bytes()))
        .collect();
    env.produce_raw(&records);
    env.run_ok(&["run", "--until-caught-up"]);
    assert_grains_equal_delta(&env, &db).await;
    let version = env.open_table("calls").await.version().expect("version");
    for (grain, period) in [
        ("minute", "2018-10-03 17:15:00"),
        ("hour", "2018-10-03 17:00:00"),
        ("day", "2018-10-03 07:00:00"),
    ] {
        let row = db.rows(DB, &marker(grain, period)).await;
        assert_eq!(
            row,
            [format!("{version}|7")],
            "{grain}: the late calls' period"
        );
    }
    let after = db
        .rows(
            DB,
            "SELECT MAX(lake_version) FROM crime_calls_hour WHERE period_utc < '2018-10-02'",
        )
        .await;
    assert_eq!(
        untouched, after,
        "hours the late calls did not touch keep their marker"
    );
}
