//! The shipped Grafana dashboard as Grafana runs it: every panel's query with its MySQL
//! macros expanded the way Grafana's MySQL data source documents them
//! (`$__timeFilter(c)` -> `c BETWEEN FROM_UNIXTIME(from) AND FROM_UNIXTIME(to)`, ...),
//! in the session zone its provisioned data source sets (`+00:00`), as the BI account;
//! each answer has the shape its panel needs and the counts the Delta tables hold.

use std::path::Path;

use mysql_async::consts::ColumnType;
use mysql_async::prelude::Queryable;
use regex::{Captures, Regex};
use serde_json::Value;

use crate::mirror::{env, BI_PASSWORD, DB};

/// A dashboard time range, in seconds since the epoch.
struct Range {
    from: i64,
    to: i64,
}

/// `5m`, `1h`, `1d` as seconds (Grafana's interval syntax).
fn interval_secs(text: &str) -> i64 {
    let text = text.trim().trim_matches('\'');
    let (n, unit) = text.split_at(text.len() - 1);
    let n: i64 = n.parse().unwrap_or_else(|_| panic!("interval '{text}'"));
    n * match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        other => panic!("interval unit {other}"),
    }
}

/// `sql` with Grafana's MySQL macros expanded as its documentation writes them.
fn expand(sql: &str, r: &Range) -> String {
    let (from, to) = (r.from, r.to);
    let call = |name: &str| Regex::new(&format!(r"\$__{name}\(([^()]*)\)")).expect("regex");
    let mut out = sql.to_string();
    // `$__timeGroupAlias` is `$__timeGroup` named "time".
    let group = Regex::new(r"\$__timeGroup(Alias)?\(([^()]*)\)").expect("regex");
    out = group
        .replace_all(&out, |c: &Captures<'_>| {
            let (col, every) = c[2].split_once(',').expect("column, interval");
            let s = interval_secs(every);
            let alias = if c.get(1).is_some() {
                " AS \"time\""
            } else {
                ""
            };
            format!("cast(cast(UNIX_TIMESTAMP({col})/({s}) as signed)*{s} as signed){alias}")
        })
        .into_owned();
    for (name, with) in [
        (
            "timeFilter",
            format!("$1 BETWEEN FROM_UNIXTIME({from}) AND FROM_UNIXTIME({to})"),
        ),
        ("unixEpochFilter", format!("$1 >= {from} AND $1 <= {to}")),
        ("timeEpoch", "UNIX_TIMESTAMP($1) as time_sec".to_string()),
        ("time", "UNIX_TIMESTAMP($1) as time_sec".to_string()),
        ("timeFrom", format!("FROM_UNIXTIME({from})")),
        ("timeTo", format!("FROM_UNIXTIME({to})")),
        ("unixEpochFrom", from.to_string()),
        ("unixEpochTo", to.to_string()),
    ] {
        out = call(name).replace_all(&out, with.as_str()).into_owned();
    }
    assert!(
        !out.contains("$__"),
        "a macro this test does not know: {out}"
    );
    out
}

fn is_time(t: ColumnType) -> bool {
    matches!(
        t,
        ColumnType::MYSQL_TYPE_DATETIME
            | ColumnType::MYSQL_TYPE_DATETIME2
            | ColumnType::MYSQL_TYPE_TIMESTAMP
            | ColumnType::MYSQL_TYPE_TIMESTAMP2
    )
}

fn is_number(t: ColumnType) -> bool {
    matches!(
        t,
        ColumnType::MYSQL_TYPE_LONGLONG
            | ColumnType::MYSQL_TYPE_LONG
            | ColumnType::MYSQL_TYPE_SHORT
            | ColumnType::MYSQL_TYPE_TINY
            | ColumnType::MYSQL_TYPE_INT24
            | ColumnType::MYSQL_TYPE_DOUBLE
            | ColumnType::MYSQL_TYPE_FLOAT
            | ColumnType::MYSQL_TYPE_NEWDECIMAL
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn every_panel_runs_as_grafana_expands_it_and_counts_what_delta_holds() {
    let (env, db) = env("grafana");
    env.produce_synthetic(3_000, 21);
    env.run_ok(&["run", "--until-caught-up"]);
    let calls = env.count("calls").await;

    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("config/grafana/dashboards/sf-calls.json");
    let dashboard: Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("dashboard")).expect("json");
    assert!(
        dashboard["templating"]["list"]
            .as_array()
            .is_none_or(|l| l.is_empty()),
        "template variables: expand them here too"
    );
    let mut bi = db
        .conn("lakestream_bi", Some(BI_PASSWORD), DB)
        .await
        .expect("BI login");
    // The range a user would pick: from the first day's midnight to the last minute,
    // end inclusive (the data source's session zone is UTC).
    bi.query_drop("SET time_zone = '+00:00'")
        .await
        .expect("zone");
    let (from, to): (i64, i64) = bi
        .query_first(
            "SELECT CAST(UNIX_TIMESTAMP((SELECT MIN(period_utc) FROM grain_calls_day)) AS SIGNED), \
             CAST(UNIX_TIMESTAMP((SELECT MAX(period_utc) FROM grain_calls_minute)) AS SIGNED)",
        )
        .await
        .expect("range")
        .expect("a row");
    let range = Range { from, to };
    // The panels of the three grains each count every call once over the range.
    let totals = [
        "Calls per hour",
        "Calls per minute",
        "Calls per day by crime type (top types)",
    ];
    let (mut panels, mut summed) = (0, 0);
    for panel in dashboard["panels"].as_array().expect("panels") {
        let title = panel["title"].as_str().unwrap_or("?");
        for target in panel["targets"].as_array().into_iter().flatten() {
            let sql = expand(target["rawSql"].as_str().expect("rawSql"), &range);
            let rows: Vec<mysql_async::Row> = bi
                .query(&sql)
                .await
                .unwrap_or_else(|e| panic!("{title}: {e}\n{sql}"));
            assert!(!rows.is_empty(), "{title}: no rows\n{sql}");
            let columns = rows[0].columns();
            let numeric: Vec<usize> = (0..columns.len())
                .filter(|&i| is_number(columns[i].column_type()))
                .collect();
            assert!(!numeric.is_empty(), "{title}: no numeric value column");
            if target["format"] == "time_series" {
                assert_eq!(columns[0].name_str(), "time", "{title}: first column");
                assert!(
                    is_time(columns[0].column_type()),
                    "{title}: time column type"
                );
                let times: Vec<String> = rows
                    .iter()
                    .map(|r| r.as_ref(0).map(|v| v.as_sql(true)).unwrap_or_default())
                    .collect();
                assert!(
                    times.windows(2).all(|w| w[0] <= w[1]),
                    "{title}: not ordered by time"
                );
                for i in 1..columns.len() {
                    let name = columns[i].name_str();
                    assert!(
                        is_number(columns[i].column_type()) || name == "metric",
                        "{title}: column {name} is neither a value nor the metric"
                    );
                }
            }
            if totals[..2].contains(&title) {
                let sum: i64 = rows
                    .iter()
                    .map(|r| r.get::<i64, usize>(numeric[0]).unwrap_or(0))
                    .sum();
                assert_eq!(sum, calls, "{title}: calls over the whole range");
                summed += 1;
            }
            panels += 1;
        }
    }
    assert_eq!(panels, 8, "every panel's query ran");
    assert_eq!(
        summed, 2,
        "the calls per hour and per minute panels were found"
    );
    // The day panel shows the top types only: its days hold every call of all types.
    let days: Option<i64> = bi
        .query_first(expand(
            "SELECT CAST(SUM(calls) AS SIGNED) FROM grain_calls_day WHERE $__timeFilter(period_utc)",
            &range,
        ))
        .await
        .expect("days");
    assert_eq!(days, Some(calls), "{}: every call in some day", totals[2]);
}

#[test]
fn macros_expand_as_grafana_documents_them() {
    let r = Range {
        from: 1494410783,
        to: 1494410983,
    };
    assert_eq!(
        expand("WHERE $__timeFilter(t)", &r),
        "WHERE t BETWEEN FROM_UNIXTIME(1494410783) AND FROM_UNIXTIME(1494410983)"
    );
    assert_eq!(
        expand(
            "SELECT $__timeGroupAlias(t,'5m'), $__unixEpochFilter(e)",
            &r
        ),
        "SELECT cast(cast(UNIX_TIMESTAMP(t)/(300) as signed)*300 as signed) AS \"time\", \
         e >= 1494410783 AND e <= 1494410983"
    );
}
