//! Pipeline SQL tested in-process, in seconds, without a broker: each folder here is a
//! case run through the real decoder and engine (`Engine::process`, batch after batch,
//! state carried over), then the table is compared with what the case expects.
//!
//! A case folder holds:
//! - `query.sql`: the pipeline's SQL (a link to a shipped query under `sql/pipelines/`
//!   tests that query); its source is `police_calls` (the shipped source, read in UTC
//!   here) and the `radio_code` lookup is there too;
//! - `settings` (optional): the pipeline's settings, one `key=value` per line (`mode`,
//!   `keys`, `event_time`, `watermark`), as `--set pipelines.case.<key>=<value>`;
//! - `input.jsonl`: one record per line, of partition 0 at offsets 0, 1, ...; a blank
//!   line closes a micro-batch;
//! - `expected.csv`: the table once every batch is committed (header, then the rows in
//!   any order; values as Arrow displays them, empty for NULL).
//!
//! Exactly once across restarts and brokers is the integration suite's (`tests/it`).

use std::path::{Path, PathBuf};

use lakestream::config::{Mode, Plan};
use lakestream::decode::JsonDecoder;
use lakestream::engine::{Emit, Engine};
use lakestream::source::RawBatch;

use deltalake::arrow::array::RecordBatch;
use deltalake::arrow::util::display::{ArrayFormatter, FormatOptions};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

/// The shipped config with the case's pipeline added.
fn plan(case: &Path) -> Plan {
    let mut sets = vec![
        "sources.police_calls.timezone=UTC".to_string(),
        "pipelines.case.source=police_calls".to_string(),
        "pipelines.case.table=case_out".to_string(),
        format!("pipelines.case.sql={}", case.join("query.sql").display()),
    ];
    if let Ok(text) = std::fs::read_to_string(case.join("settings")) {
        let lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
        sets.extend(lines.map(|l| format!("pipelines.case.{l}")));
    }
    lakestream::config::load(&root().join("config/lakestream.toml"), [], &sets)
        .unwrap_or_else(|e| panic!("{}: {e}", case.display()))
}

/// The rows of `batch` as display strings, with the header first.
fn lines(batch: &RecordBatch) -> (Vec<String>, Vec<Vec<String>>) {
    let header = batch
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    let options = FormatOptions::default();
    let formatters: Vec<ArrayFormatter<'_>> = batch
        .columns()
        .iter()
        .map(|c| ArrayFormatter::try_new(c.as_ref(), &options).expect("displayable column"))
        .collect();
    let rows = (0..batch.num_rows())
        .map(|i| formatters.iter().map(|f| f.value(i).to_string()).collect())
        .collect();
    (header, rows)
}

/// Run `case` and return the table's header and rows.
async fn run(case: &Path) -> (Vec<String>, Vec<Vec<String>>) {
    let plan = plan(case);
    let pipeline = &plan.pipelines["case"];
    let Mode::Query(query) = &pipeline.mode else {
        panic!("{}: a case needs query.sql", case.display());
    };
    let spec = &plan.sources["police_calls"].decoder;
    let decoder =
        JsonDecoder::new(spec.fields.clone(), spec.max_message_bytes).with_zone(spec.zone);
    let mut engine = Engine::compile(pipeline, query, &plan.lookups, decoder.table_schema())
        .await
        .unwrap_or_else(|e| panic!("{}: {e}", case.display()));
    engine.set_partitions(vec![0]);
    let mut state = engine.empty_state();
    let input = std::fs::read_to_string(case.join("input.jsonl")).expect("input.jsonl");
    let mut header = Vec::new();
    let mut table: Vec<Vec<String>> = Vec::new();
    let mut offset = 0;
    for records in input.split("\n\n").filter(|b| !b.trim().is_empty()) {
        let mut raw = RawBatch::new("case".into());
        for record in records.lines().filter(|l| !l.trim().is_empty()) {
            raw.push(
                0,
                offset,
                Some(1_700_000_000_000 + offset),
                None,
                Some(record.as_bytes()),
            );
            offset += 1;
        }
        let decoded = decoder.decode(&raw, 1).expect("decode");
        assert_eq!(
            decoded.dead_letters.num_rows(),
            0,
            "{}: a record did not decode",
            case.display()
        );
        let step = engine
            .process(&decoded.rows, &state)
            .await
            .expect("process");
        state = step.state;
        let (names, rows) = lines(step.emit.rows());
        header = names;
        match step.emit {
            Emit::Append(_) => table.extend(rows),
            Emit::Replace(_) => table = rows,
            Emit::Merge(_) => {
                let keys: Vec<usize> = query
                    .keys
                    .iter()
                    .map(|k| header.iter().position(|h| h == k).expect("key column"))
                    .collect();
                let key =
                    |row: &Vec<String>| keys.iter().map(|&i| row[i].clone()).collect::<Vec<_>>();
                for row in rows {
                    table.retain(|old| key(old) != key(&row));
                    table.push(row);
                }
            }
        }
    }
    (header, table)
}

fn expected(case: &Path) -> (Vec<String>, Vec<Vec<String>>) {
    let text = std::fs::read_to_string(case.join("expected.csv")).expect("expected.csv");
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let split = |l: &str| {
        l.split(',')
            .map(|v| v.trim().to_string())
            .collect::<Vec<_>>()
    };
    let header = lines.next().map(split).unwrap_or_default();
    (header, lines.map(split).collect())
}

#[tokio::test]
async fn every_case_gives_its_expected_table() {
    let dir = root().join("tests/sql");
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("tests/sql")
        .filter_map(|e| Some(e.ok()?.path()))
        .filter(|p| p.join("query.sql").is_file())
        .collect();
    cases.sort();
    assert!(cases.len() >= 4, "cases: {cases:?}");
    let mut failed = Vec::new();
    for case in &cases {
        let (header, mut rows) = run(case).await;
        let (want_header, mut want) = expected(case);
        rows.sort();
        want.sort();
        let name = case.file_name().unwrap_or_default().to_string_lossy();
        if header != want_header || rows != want {
            failed.push(format!(
                "{name}:\n  got    {header:?}\n         {rows:?}\n  wanted {want_header:?}\n         {want:?}"
            ));
        } else {
            eprintln!("{name}: {} rows as expected", rows.len());
        }
    }
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}
