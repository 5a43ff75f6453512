//! The SQL pipelines: golden inputs with hand-computed tables (window boundaries, late
//! data, duplicates, dispositions without a radio code), and a bad SQL file.

use crate::common::{python_count, row_strings, summary_of, RawRecord, TestEnv};

/// One call in the SF export format; the golden times are UTC (`Z`), so the hand-computed
/// windows read as written whatever the source's `timezone`.
fn call(id: u32, crime_type: &str, time: &str, disposition: &str) -> String {
    let date = &time[..10];
    format!(
        r#"{{"crime_id":"{id}","original_crime_type_name":"{crime_type}","report_date":"{date}T00:00:00.000","call_date":"{date}T00:00:00.000","offense_date":"{date}T00:00:00.000","call_time":"{hm}","call_date_time":"{time}.000Z","disposition":"{disposition}","address":"800 Blk Market St","city":"San Francisco","state":"CA","agency_id":"1","address_type":"Premise Address","common_location":""}}"#,
        hm = &time[11..16]
    )
}

fn produce(env: &TestEnv, calls: &[(i32, String)]) {
    let records: Vec<RawRecord<'_>> = calls
        .iter()
        .map(|(p, json)| (*p, None, json.as_bytes()))
        .collect();
    env.produce_raw(&records);
}

fn all_pipelines(env: &mut TestEnv) {
    env.pipelines = vec![
        "crime_type_windows".into(),
        "crime_type_hourly".into(),
        "disposition_summary".into(),
    ];
}

async fn table(env: &TestEnv, name: &str, query: &str) -> Vec<String> {
    row_strings(&env.sql(name, query).await)
}

const WINDOWS: &str = "SELECT window_start, original_crime_type_name, calls FROM t";
const HOURLY: &str = "SELECT window_start, original_crime_type_name, calls FROM t";
const DISPOSITIONS: &str = "SELECT disposition, description, calls FROM t";

fn rows(expected: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = expected.iter().map(|s| s.to_string()).collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread")]
async fn golden_windows_watermarks_and_output_modes() {
    let mut env = TestEnv::new("golden");
    all_pipelines(&mut env);
    // Creates the topic with 4 partitions and no calls.
    env.produce_synthetic(0, 1);

    // Phase 1: one call per partition, a duplicate delivery of the first, a call exactly
    // on a window boundary, and two dispositions radio_code does not know.
    produce(
        &env,
        &[
            (0, call(1, "Traffic Stop", "2018-10-01T10:02:00", "HAN")),
            (1, call(2, "Traffic Stop", "2018-10-01T10:07:00", "ARR")),
            (2, call(3, "Fight", "2018-10-01T10:10:00", "Not recorded")),
            (3, call(4, "Fight", "2018-10-01T10:59:00", "CHP")),
            (1, call(1, "Traffic Stop", "2018-10-01T10:02:00", "HAN")),
        ],
    );
    let out = env.run_ok(&["run", "--until-caught-up", "--summary", "json"]);
    // Watermark = min over partitions (10:02) - 60 min: no window has closed.
    assert_eq!(env.count("crime_type_windows").await, 0);
    let w = summary_of(&out.stdout, "crime_type_windows");
    assert_eq!(w["watermark"], "2018-10-01T09:02:00+00:00", "{w}");
    assert_eq!(
        table(&env, "crime_type_hourly", HOURLY).await,
        rows(&[
            "2018-10-01T10:00:00Z|Fight|2",
            "2018-10-01T10:00:00Z|Traffic Stop|3",
        ])
    );
    assert_eq!(
        table(&env, "disposition_summary", DISPOSITIONS).await,
        rows(&[
            "ARR|Arrest|1",
            "CHP|No radio code|1",
            "HAN|Handled|2",
            "Not recorded|No radio code|1",
        ])
    );

    // Phase 2: every partition moves to 12:30, the watermark to 11:30: all 10:xx windows
    // close and are written once.
    let later: Vec<(i32, String)> = (0..4)
        .map(|p| {
            (
                p,
                call(10 + p as u32, "Noise", "2018-10-01T12:30:00", "HAN"),
            )
        })
        .collect();
    produce(&env, &later);
    env.run_ok(&["run", "--until-caught-up", "--summary", "json"]);
    let windows = rows(&[
        "2018-10-01T09:55:00Z|Traffic Stop|2",
        "2018-10-01T10:00:00Z|Traffic Stop|3",
        "2018-10-01T10:05:00Z|Traffic Stop|1",
        "2018-10-01T10:05:00Z|Fight|1",
        "2018-10-01T10:10:00Z|Fight|1",
        "2018-10-01T10:50:00Z|Fight|1",
        "2018-10-01T10:55:00Z|Fight|1",
    ]);
    assert_eq!(table(&env, "crime_type_windows", WINDOWS).await, windows);

    // Phase 3: a late call (10:30, behind the 11:30 watermark) is dropped and counted by
    // the windowed pipelines, but counted by the one without a watermark; an on-time
    // call (11:45) updates its hour but closes no window.
    produce(
        &env,
        &[
            (0, call(20, "Fight", "2018-10-01T10:30:00", "HAN")),
            (0, call(21, "Fight", "2018-10-01T11:45:00", "GOA")),
        ],
    );
    let out = env.run_ok(&["run", "--until-caught-up", "--summary", "json"]);
    assert_eq!(summary_of(&out.stdout, "crime_type_windows")["lateRows"], 1);
    assert_eq!(summary_of(&out.stdout, "crime_type_hourly")["lateRows"], 1);
    assert_eq!(
        summary_of(&out.stdout, "disposition_summary")["lateRows"],
        0
    );
    assert_eq!(
        table(&env, "crime_type_windows", WINDOWS).await,
        windows,
        "a written window never changes"
    );
    assert_eq!(
        table(&env, "crime_type_hourly", HOURLY).await,
        rows(&[
            "2018-10-01T10:00:00Z|Fight|2",
            "2018-10-01T10:00:00Z|Traffic Stop|3",
            "2018-10-01T11:00:00Z|Fight|1",
            "2018-10-01T12:00:00Z|Noise|4",
        ])
    );
    assert_eq!(
        table(&env, "disposition_summary", DISPOSITIONS).await,
        rows(&[
            "ARR|Arrest|1",
            "CHP|No radio code|1",
            "GOA|Gone on Arrival|1",
            "HAN|Handled|7",
            "Not recorded|No radio code|1",
        ])
    );

    // A restart reads nothing again and changes nothing.
    let out = env.run_ok(&["run", "--until-caught-up", "--summary", "json"]);
    assert_eq!(summary_of(&out.stdout, "crime_type_hourly")["records"], 0);
    assert_eq!(env.count("disposition_summary").await, 5);

    // Another Delta reader sees the same tables.
    for (name, n) in [
        ("crime_type_windows", 7),
        ("crime_type_hourly", 4),
        ("disposition_summary", 5),
    ] {
        assert_eq!(python_count(&env, name, None) as i64, n, "{name}");
    }
}

fn failing_sql(env: &TestEnv, sql: &str) -> String {
    let path = env.dir.path().join("broken.sql");
    std::fs::write(&path, sql).expect("write sql");
    // Before the subcommand: clap replaces the earlier --set values with those given
    // after it.
    let set = format!("pipelines.disposition_summary.sql={}", path.display());
    let out = env
        .command(&[
            "--set",
            &set,
            "run",
            "--until-caught-up",
            "--pipeline",
            "disposition_summary",
        ])
        .output()
        .expect("spawn");
    assert!(!out.status.success(), "a broken query must stop start-up");
    String::from_utf8_lossy(&out.stderr).to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_or_slow_query_fails_at_start_up_naming_the_file_and_line() {
    let mut env = TestEnv::new("badsql");
    env.pipelines = vec!["disposition_summary".into()];
    // With the topic there, a query that wrongly passed would end the run, not hang it.
    env.produce_synthetic(0, 1);

    let err = failing_sql(
        &env,
        "-- counts\nSELECT disposition,\n       count(*) AS calls\nFROM police_calls\nWHERE no_such_column > 1\nGROUP BY disposition\n",
    );
    assert!(err.contains("broken.sql:5"), "no file:line in: {err}");
    assert!(
        err.contains("no_such_column"),
        "no DataFusion message in: {err}"
    );

    let err = failing_sql(&env, "SELECT disposition, count(*) AS calls\nFROM police_calls\nGROUP BY disposition\nHAVING count(*) > 1 OR\n");
    assert!(err.contains("broken.sql:"), "{err}");

    let err = failing_sql(
        &env,
        "SELECT disposition, avg(length(address)) AS a FROM police_calls GROUP BY disposition",
    );
    assert!(err.contains("avg() cannot be merged"), "{err}");

    // Joins on inequality over a 10,000-row batch: about 10^11 triples per batch.
    let err = failing_sql(
        &env,
        "SELECT a.disposition, a.city AS description, count(*) AS calls FROM police_calls a \
         JOIN police_calls b ON a.crime_id < b.crime_id \
         JOIN police_calls c ON b.crime_id < c.crime_id GROUP BY a.disposition, a.city",
    );
    assert!(err.contains("would not keep up"), "{err}");
}
