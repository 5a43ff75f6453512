use deltalake::arrow::array::{Array, AsArray};
use deltalake::arrow::datatypes::{Int64Type, TimestampMicrosecondType};

use deltalake::arrow::array::RecordBatch;

use super::{dead_letter, fast, JsonDecoder};
use crate::config::FieldSpec;
use crate::source::RawBatch;

fn decoder() -> JsonDecoder {
    let fields = [
        "crime_id STRING NOT NULL",
        "call_date DATE NOT NULL",
        "call_date_time TIMESTAMP NOT NULL",
        "disposition STRING",
    ]
    .iter()
    .map(|f| FieldSpec::parse(f).unwrap())
    .collect();
    JsonDecoder::new(fields, 200)
}

fn good(id: u32) -> String {
    format!(
        r#"{{"crime_id":"{id}","call_date":"2018-12-31T00:00:00.000","call_date_time":"2018-12-31T23:57:00.000","disposition":"ADM","extra":{{"ignored":true}}}}"#
    )
}

fn batch(payloads: &[&[u8]]) -> RawBatch {
    let mut raw = RawBatch::new("topic".into());
    for (i, p) in payloads.iter().enumerate() {
        raw.push(
            i as i32 % 2,
            100 + i as i64,
            Some(1_000),
            Some(b"key"),
            Some(p),
        );
    }
    raw
}

fn offsets(b: &RecordBatch, column: &str) -> Vec<i64> {
    let col = b.column_by_name(column).unwrap();
    col.as_primitive::<Int64Type>().values().to_vec()
}

#[test]
fn decodes_typed_rows_with_metadata() {
    let (a, b) = (good(1), good(2));
    let raw = batch(&[a.as_bytes(), b.as_bytes()]);
    let out = decoder().decode(&raw, 2).unwrap();
    assert_eq!(out.rows.num_rows(), 2);
    assert_eq!(out.dead_letters.num_rows(), 0);
    assert_eq!(offsets(&out.rows, "kafka_offset"), vec![100, 101]);
    let ts = out.rows.column_by_name("call_date_time").unwrap();
    let ts = ts.as_primitive::<TimestampMicrosecondType>();
    assert_eq!(ts.value(0), 1_546_300_620_000_000);
    let date = out.rows.column_by_name("call_date").unwrap();
    assert_eq!(
        date.as_primitive::<deltalake::arrow::datatypes::Date32Type>()
            .value(0),
        17_896
    );
    let kts = out.rows.column_by_name("kafka_timestamp").unwrap();
    assert_eq!(
        kts.as_primitive::<TimestampMicrosecondType>().value(0),
        1_000_000
    );
}

#[test]
fn isolates_every_kind_of_bad_record() {
    let goods: Vec<String> = (0..6).map(good).collect();
    let long = format!(r#"{{"crime_id":"{}"}}"#, "x".repeat(300));
    let cases: Vec<(&[u8], &str)> = vec![
        (b"", "empty message"),
        (b"not json", "not a JSON object"),
        (b"[1,2]", "not a JSON object"),
        (b"{\"crime_id\": \"1\"", "truncated"),
        (b"\xff\xfe{}", "invalid UTF-8"),
        (long.as_bytes(), "exceeds max_message_bytes"),
        (br#"{"crime_id":5,"call_date":"2018-01-01","call_date_time":"2018-01-01T00:00:00"}"#, "wrong type"),
        (br#"{"call_date":"2018-01-01","call_date_time":"2018-01-01T00:00:00"}"#, "missing required field(s): crime_id"),
        (br#"{"crime_id":"1","call_date":"2018-01-01","call_date_time":"yesterday"}"#, "wrong type"),
        (br#"{"crime_id":"1","call_date":"2018-01-01","call_date_time":"2018-01-01T00:00:00"}{"crime_id":"2"}"#, "more than one JSON value"),
        (br#"{"crime_id":"1",}"#, "malformed JSON"),
    ];
    let mut payloads: Vec<&[u8]> = Vec::new();
    for (i, (bad, _)) in cases.iter().enumerate() {
        payloads.push(goods[i % goods.len()].as_bytes());
        payloads.push(bad);
    }
    let raw = batch(&payloads);
    let out = decoder().decode(&raw, 2).unwrap();
    assert_eq!(out.rows.num_rows(), cases.len());
    assert_eq!(out.dead_letters.num_rows(), cases.len());
    let good_offsets: Vec<i64> = (0..cases.len() as i64).map(|i| 100 + 2 * i).collect();
    assert_eq!(offsets(&out.rows, "kafka_offset"), good_offsets);
    let bad_offsets: Vec<i64> = (0..cases.len() as i64).map(|i| 101 + 2 * i).collect();
    assert_eq!(offsets(&out.dead_letters, "kafka_offset"), bad_offsets);
    let reasons = out
        .dead_letters
        .column_by_name("reason")
        .unwrap()
        .as_string::<i32>()
        .clone();
    for (i, (_, expected)) in cases.iter().enumerate() {
        let reason = reasons.value(i);
        assert!(
            reason.contains(expected),
            "case {i}: '{reason}' lacks '{expected}'"
        );
    }
    let payload = out.dead_letters.column_by_name("payload").unwrap();
    assert_eq!(payload.as_binary::<i32>().value(1), b"not json");
}

#[test]
fn split_message_across_records_is_not_glued_together() {
    // Two halves of one object in consecutive messages must not decode as one row.
    let raw = batch(&[
        br#"{"crime_id":"1","call_date":"2018-01-01","#,
        br#""call_date_time":"2018-01-01T00:00:00"}"#,
    ]);
    let out = decoder().decode(&raw, 1).unwrap();
    assert_eq!(out.rows.num_rows(), 0);
    assert_eq!(out.dead_letters.num_rows(), 2);
    assert!(out.rows.column(0).is_empty());
}

#[test]
fn an_oversized_dead_letter_keeps_a_bounded_prefix_and_its_full_size() {
    let huge = format!("{{\"crime_id\":\"{}\"}}", "x".repeat(200 * 1024));
    let raw = batch(&[huge.as_bytes()]);
    let out = decoder().decode(&raw, 1).unwrap();
    assert_eq!(out.dead_letters.num_rows(), 1);
    let payload = out.dead_letters.column_by_name("payload").unwrap();
    let payload = payload.as_binary::<i32>();
    assert_eq!(payload.value(0).len(), dead_letter::KEPT_PAYLOAD_BYTES);
    assert_eq!(
        payload.value(0),
        &huge.as_bytes()[..dead_letter::KEPT_PAYLOAD_BYTES]
    );
    let size = out.dead_letters.column_by_name("payload_bytes").unwrap();
    assert_eq!(size.as_primitive::<Int64Type>().value(0), huge.len() as i64);
}

#[test]
fn a_number_in_a_timestamp_field_is_a_dead_letter_unless_a_unit_is_declared() {
    let number = r#"{"crime_id":"1","call_date":"2018-12-31","call_date_time":1546300620000000}"#;
    let raw = batch(&[number.as_bytes()]);
    let out = decoder().decode(&raw, 1).unwrap();
    assert_eq!(out.rows.num_rows(), 0);
    let reasons = out.dead_letters.column_by_name("reason").unwrap();
    let reason = reasons.as_string::<i32>().value(0);
    assert!(
        reason.contains("call_date_time") && reason.contains("timestamp_ms"),
        "{reason}"
    );

    let fields = [
        "crime_id STRING NOT NULL",
        "call_date_time TIMESTAMP_MS NOT NULL",
    ]
    .iter()
    .map(|f| FieldSpec::parse(f).unwrap())
    .collect();
    let epoch = JsonDecoder::new(fields, 1000);
    let ms = r#"{"crime_id":"1","call_date_time":1546300620000}"#;
    let text = r#"{"crime_id":"2","call_date_time":"2018-12-31T23:57:00"}"#;
    let out = epoch
        .decode(&batch(&[ms.as_bytes(), text.as_bytes()]), 1)
        .unwrap();
    assert_eq!(out.dead_letters.num_rows(), 0);
    let ts = out.rows.column_by_name("call_date_time").unwrap();
    let ts = ts.as_primitive::<TimestampMicrosecondType>();
    assert_eq!(ts.value(0), 1_546_300_620_000_000);
    assert_eq!(ts.value(1), 1_546_300_620_000_000);
}

/// The shipped source's fields, for the fast path's tests.
fn sf_decoder() -> JsonDecoder {
    let text = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/lakestream.toml"),
    )
    .unwrap();
    let config = crate::config::load_str(&text, "shipped", [], &[]).unwrap();
    let source = &config.sources["police_calls"];
    JsonDecoder::new(source.decoder.fields.clone(), 1 << 20)
}

/// What the fast path takes, arrow-json decodes to the same batch.
fn assert_agree(decoder: &JsonDecoder, payloads: &[&[u8]]) -> bool {
    let raw = batch(payloads);
    let indices: Vec<usize> = (0..raw.len()).collect();
    let fast = decoder.fast.as_ref().expect("fast path for these fields");
    match fast.decode(&raw, &indices) {
        Ok(batch) => {
            let general = decoder.decode_general(&raw, &indices).unwrap_or_else(|e| {
                panic!("fast took what arrow-json refuses ({e}): {payloads:?}")
            });
            assert_eq!(batch, general, "{payloads:?}");
            true
        }
        Err(fast::NotPlain) => false,
    }
}

#[test]
fn the_fast_path_agrees_with_arrow_json_on_realistic_calls() {
    let decoder = sf_decoder();
    let start = chrono::NaiveDate::from_ymd_opt(2018, 10, 1)
        .unwrap()
        .and_hms_opt(0, 0, 0)
        .unwrap();
    let mut calls = crate::demo::synthetic::CallGenerator::new(7, start, 39.0);
    let payloads: Vec<Vec<u8>> = (0..2_000).map(|_| calls.next_call().1).collect();
    let refs: Vec<&[u8]> = payloads.iter().map(Vec::as_slice).collect();
    assert!(
        assert_agree(&decoder, &refs),
        "realistic calls must take the fast path"
    );
    // And the whole decoder gives the same rows either way.
    let raw = batch(&refs);
    let out = decoder.decode(&raw, 2).unwrap();
    assert_eq!(out.rows.num_rows(), 2_000);
    assert_eq!(out.dead_letters.num_rows(), 0);
}

#[test]
fn the_fast_path_takes_only_what_arrow_json_reads_the_same_way() {
    let decoder = sf_decoder();
    let base = r#""crime_id":"1","call_date":"2018-12-31T00:00:00.000","call_date_time":"2018-12-31T23:57:00.000""#;
    let plain = [
        format!("{{{base}}}"),
        format!(r#"{{{base},"city":null,"state":"CA"}}"#),
        format!(r#"  {{{base},"address":"\"Quoted\" \u00e9\n\\ \ud83d\ude00"}}  "#),
        format!(r#"{{{base},"unknown":{{"a":[1,2,{{"b":null}}]}},"other":1.5e3}}"#),
        format!(r#"{{"disposition":"HAN",{base}}}"#),
        r#"{"crime_id":"2","call_date":"2018-12-31","call_date_time":"2018-12-31 23:57:00"}"#
            .to_string(),
    ];
    for p in &plain {
        assert!(assert_agree(&decoder, &[p.as_bytes()]), "not taken: {p}");
    }
    // In one batch, each message's keys are first compared with the last message's key
    // order: orders that change from message to message (and back) decode the same.
    let mut mixed: Vec<&[u8]> = plain.iter().map(|p| p.as_bytes()).collect();
    mixed.extend(plain.iter().rev().map(|p| p.as_bytes()));
    assert!(
        assert_agree(&decoder, &mixed),
        "a batch of changing key orders"
    );
    let twice = format!(r#"{{{base},"city":"a","city":"b"}}"#);
    let once = format!(r#"{{{base},"city":"a","state":"b"}}"#);
    assert!(!assert_agree(
        &decoder,
        &[once.as_bytes(), twice.as_bytes()]
    ));
    let not_plain = [
        format!(r#"{{{base},"city":5}}"#),
        format!(r#"{{{base},"city":{{"a":1}}}}"#),
        format!(r#"{{{base},"city":["x"]}}"#),
        format!(r#"{{{base},"city":true}}"#),
        format!(r#"{{{base},"city":"a","city":"b"}}"#),
        format!(r#"{{{base}}}{{{base}}}"#),
        format!(r#"{{{base}"#),
        r#"{"crime_id":"3","call_date_time":"2018-12-31T23:57:00.000"}"#.to_string(),
        r#"{"crime_id":null,"call_date":"2018-12-31","call_date_time":"x"}"#.to_string(),
        r#"{"crime_id":"4","call_date":"not a date","call_date_time":"x"}"#.to_string(),
        format!(r#"{{{base},"address":"\ud800"}}"#),
    ];
    for p in &not_plain {
        assert!(!assert_agree(&decoder, &[p.as_bytes()]), "taken: {p}");
    }
    // One message the fast path refuses sends its whole chunk down the general path,
    // which still finds the one bad record.
    let good = format!("{{{base}}}");
    let bad = format!(r#"{{{base},"city":5}}"#);
    let out = decoder
        .decode(
            &batch(&[good.as_bytes(), bad.as_bytes(), good.as_bytes()]),
            1,
        )
        .unwrap();
    assert_eq!(out.rows.num_rows(), 2);
    assert_eq!(out.dead_letters.num_rows(), 1);
}
