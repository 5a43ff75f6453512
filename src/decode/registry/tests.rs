use deltalake::arrow::array::{Array, AsArray};
use deltalake::arrow::datatypes::{DataType, Int64Type};

use super::avro::{merge, Written};
use super::schema_id;

fn zigzag(v: i64) -> Vec<u8> {
    let mut n = ((v << 1) ^ (v >> 63)) as u64;
    let mut out = Vec::new();
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return out;
        }
        out.push(byte | 0x80);
    }
}

fn text(s: &str) -> Vec<u8> {
    let mut out = zigzag(s.len() as i64);
    out.extend(s.as_bytes());
    out
}

fn frame(id: u32, body: &[Vec<u8>]) -> Vec<u8> {
    let mut out = vec![0];
    out.extend(id.to_be_bytes());
    for part in body {
        out.extend(part);
    }
    out
}

const V1: &str = r#"{"type":"record","name":"Call","fields":[
    {"name":"id","type":"long"},{"name":"kind","type":"string"}]}"#;
const V2: &str = r#"{"type":"record","name":"Call","fields":[
    {"name":"id","type":"long"},{"name":"kind","type":"string"},
    {"name":"units","type":"int","default":1}]}"#;
/// `kind` removed.
const V3: &str = r#"{"type":"record","name":"Call","fields":[
    {"name":"id","type":"long"},{"name":"units","type":"int","default":1}]}"#;
/// `id` becomes a string: the table cannot take it.
const V4: &str = r#"{"type":"record","name":"Call","fields":[
    {"name":"id","type":"string"},{"name":"units","type":"int","default":1}]}"#;

fn versions() -> Vec<Written<'static>> {
    [V1, V2, V3, V4]
        .into_iter()
        .enumerate()
        .map(|(n, schema)| Written {
            id: 10 + n as u32,
            version: 1 + n as i32,
            schema,
        })
        .collect()
}

#[test]
fn versions_merge_into_one_reader_and_an_incompatible_one_is_refused() {
    let (reader, refused) = merge(&versions());
    let reader = reader.expect("v1..v3 merge");
    let names: Vec<&str> = reader
        .payload
        .fields()
        .iter()
        .map(|f| f.name().as_str())
        .collect();
    assert_eq!(names, ["id", "kind", "units"]);
    assert_eq!(refused.len(), 1, "{refused:?}");
    let reason = &refused[&13];
    assert!(
        reason.contains("schema id 13 (version 4) cannot be read"),
        "{reason}"
    );

    // Each version's records read into the same columns: a field a version lacks is
    // null (not its default: a row does not depend on when it was read).
    let v1 = frame(10, &[zigzag(1), text("fire")]);
    let v2 = frame(11, &[zigzag(2), text("medical"), zigzag(3)]);
    let v3 = frame(12, &[zigzag(3), zigzag(5)]);
    let batch = reader
        .decode_run(&[&v1, &v2, &v3, &v1])
        .expect("all decode");
    assert_eq!(batch.num_rows(), 4);
    let ids = batch.column(0).as_primitive::<Int64Type>();
    assert_eq!(ids.values().to_vec(), vec![1, 2, 3, 1]);
    let kind = batch.column(1).as_string::<i32>();
    assert_eq!(kind.value(1), "medical");
    assert!(kind.is_null(2), "v3 has no kind");
    let units = batch
        .column(2)
        .as_primitive::<deltalake::arrow::datatypes::Int32Type>();
    assert_eq!(
        units.iter().collect::<Vec<_>>(),
        [None, Some(3), Some(5), None]
    );
}

#[test]
fn a_bad_record_is_found_at_its_position() {
    let (reader, _) = merge(&versions()[..2]);
    let reader = reader.expect("merges");
    let good = frame(10, &[zigzag(1), text("fire")]);
    let truncated = frame(10, &[zigzag(1), vec![20]]);
    let trailing = frame(10, &[zigzag(1), text("x"), vec![1, 2, 3]]);
    let (at, reason) = reader.decode_run(&[&good, &truncated, &good]).unwrap_err();
    assert_eq!(at, 1, "{reason}");
    let (at, reason) = reader.decode_run(&[&good, &good, &trailing]).unwrap_err();
    assert_eq!(at, 2, "{reason}");
    assert!(
        reason.to_string().contains("left after the record"),
        "{reason}"
    );
    let unknown = frame(99, &[zigzag(1), text("x")]);
    assert_eq!(reader.decode_run(&[&unknown]).unwrap_err().0, 0);
}

#[test]
fn frames_name_their_schema_id() {
    assert_eq!(schema_id(&[0, 0, 0, 1, 2, 9]), Some(258));
    assert_eq!(schema_id(&[0, 0, 0]), None);
    assert_eq!(schema_id(b"{\"a\":1}"), None);
}

#[test]
fn unions_enums_uuids_and_logical_types_become_delta_types() {
    let schema = r#"{"type":"record","name":"T","fields":[
        {"name":"either","type":["string","long"]},
        {"name":"maybe","type":["null","string","long"]},
        {"name":"state","type":{"type":"enum","name":"State","symbols":["OPEN","CLOSED"]}},
        {"name":"uid","type":{"type":"string","logicalType":"uuid"}},
        {"name":"amount","type":{"type":"bytes","logicalType":"decimal","precision":10,"scale":2}},
        {"name":"day","type":{"type":"int","logicalType":"date"}},
        {"name":"at","type":{"type":"long","logicalType":"timestamp-millis"}},
        {"name":"local","type":{"type":"long","logicalType":"local-timestamp-micros"}},
        {"name":"clock","type":{"type":"int","logicalType":"time-millis"}},
        {"name":"tags","type":{"type":"array","items":"string"}},
        {"name":"counts","type":{"type":"map","values":"long"}},
        {"name":"place","type":{"type":"record","name":"Place","fields":[
            {"name":"lat","type":"double"}]}}]}"#;
    let (reader, refused) = merge(&[Written {
        id: 1,
        version: 1,
        schema,
    }]);
    assert!(refused.is_empty(), "{refused:?}");
    let reader = reader.expect("reads");
    let types: Vec<(String, DataType)> = reader
        .payload
        .fields()
        .iter()
        .map(|f| (f.name().clone(), f.data_type().clone()))
        .collect();
    let ty = |name: &str| {
        types
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, t)| t.clone())
    };
    assert!(matches!(ty("either"), Some(DataType::Struct(f)) if f.len() == 2));
    assert!(matches!(ty("maybe"), Some(DataType::Struct(f)) if f.len() == 2));
    assert_eq!(ty("state"), Some(DataType::Utf8));
    assert_eq!(ty("uid"), Some(DataType::Utf8));
    assert_eq!(ty("amount"), Some(DataType::Decimal128(10, 2)));
    assert_eq!(ty("day"), Some(DataType::Date32));
    assert!(matches!(ty("at"), Some(DataType::Timestamp(_, Some(_)))));
    // A local timestamp is kept as its wall clock read as UTC: never timestamp_ntz,
    // which Direct Lake cannot read (docs/lakes.md).
    assert!(matches!(ty("local"), Some(DataType::Timestamp(_, Some(z))) if &*z == "UTC"));
    assert_eq!(ty("clock"), Some(DataType::Int32));

    let mut amount = zigzag(2);
    amount.extend([0x30, 0x39]); // 12345 -> 123.45
    let record = frame(
        1,
        &[
            zigzag(1),
            zigzag(42), // either: long 42
            zigzag(0),  // maybe: null
            zigzag(1),  // state: CLOSED
            text("123e4567-e89b-12d3-a456-426614174000"),
            amount,
            zigzag(19000),
            zigzag(1_700_000_000_000),
            zigzag(1_700_000_000_000_000),
            zigzag(3_600_000),
            zigzag(1),
            text("a"),
            zigzag(0),
            zigzag(1),
            text("x"),
            zigzag(7),
            zigzag(0),
            1.5f64.to_le_bytes().to_vec(),
        ],
    );
    let batch = reader.decode_run(&[&record]).expect("decodes");
    let col = |name: &str| {
        batch
            .column(batch.schema().index_of(name).expect(name))
            .clone()
    };
    let either = col("either");
    let either = either.as_struct();
    assert!(either.column(0).is_null(0), "the string branch is empty");
    assert_eq!(either.column(1).as_primitive::<Int64Type>().value(0), 42);
    assert!(col("maybe").is_null(0), "a null branch is a null struct");
    assert_eq!(col("state").as_string::<i32>().value(0), "CLOSED");
    assert_eq!(
        col("uid").as_string::<i32>().value(0),
        "123e4567-e89b-12d3-a456-426614174000"
    );
    let clock = col("clock");
    assert_eq!(
        clock
            .as_primitive::<deltalake::arrow::datatypes::Int32Type>()
            .value(0),
        3_600_000
    );
}
