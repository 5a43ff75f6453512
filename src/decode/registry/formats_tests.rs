//! The Protobuf and JSON Schema readers on schemas written here as text (the
//! integration test registers descriptors through confluent-kafka's serializers).

use deltalake::arrow::array::{Array, AsArray};
use deltalake::arrow::datatypes::{DataType, Int64Type, TimeUnit};

use super::avro::Written;
use super::json_schema;
use super::protobuf::{self, ProtoWritten};

const PLACE: &str = r#"syntax = "proto3"; package geo; message Place { string district = 1; }"#;
const CALL_V1: &str = r#"
    syntax = "proto3";
    package sf;
    import "google/protobuf/timestamp.proto";
    import "google/protobuf/wrappers.proto";
    import "geo/place.proto";
    message Header { int32 v = 1; }
    message Call {
        int64 id = 1;
        google.protobuf.Timestamp at = 2;
        google.protobuf.Int64Value units = 3;
        geo.Place place = 4;
        map<int32, string> names = 5;
        oneof contact { string phone = 6; string email = 7; }
        message Inner { repeated double xs = 1; }
        Inner inner = 8;
    }"#;

fn proto(id: u32, version: i32, schema: &str) -> ProtoWritten {
    ProtoWritten {
        id,
        version,
        schema: schema.into(),
        imports: vec![("geo/place.proto".into(), PLACE.into())],
    }
}

/// A Confluent Protobuf frame: schema id, index path, body.
fn frame(id: u32, path: &[u8], body: &[u8]) -> Vec<u8> {
    let mut out = vec![0];
    out.extend(id.to_be_bytes());
    out.extend(path);
    out.extend(body);
    out
}

#[test]
fn a_proto_text_with_imports_and_well_known_types_becomes_typed_columns() {
    let (reader, refused) = protobuf::merge(&[proto(1, 1, CALL_V1)], Some("sf.Call"));
    assert!(refused.is_empty(), "{refused:?}");
    let reader = reader.expect("a reader");
    let types: Vec<String> = reader
        .payload
        .fields()
        .iter()
        .map(|f| format!("{}:{}", f.name(), f.data_type()))
        .collect();
    assert_eq!(types[0], "id:Int64");
    assert_eq!(
        reader.payload.field(1).data_type(),
        &DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
    );
    assert_eq!(types[2], "units:Int64", "a wrapper is its value");
    assert!(types[3].starts_with("place:Struct"), "{types:?}");
    assert!(types[4].starts_with("names:Map"), "{types:?}");
    assert!(types[7].starts_with("inner:Struct"), "{types:?}");

    // Call is the file's second message: index path [1] (count 1, index 1, zigzag).
    // id = 7, units = 9 (a wrapper), phone set.
    let body = [0x08, 7, 0x1a, 2, 0x08, 9, 0x32, 1, b'x'];
    let batch = reader
        .decode_run(&[&frame(1, &[2, 2], &body)])
        .expect("decodes");
    assert_eq!(batch.column(0).as_primitive::<Int64Type>().value(0), 7);
    assert_eq!(batch.column(2).as_primitive::<Int64Type>().value(0), 9);
    assert!(batch.column(1).is_null(0), "an unset Timestamp is null");
    assert_eq!(batch.column(5).as_string::<i32>().value(0), "x");
    assert!(batch.column(6).is_null(0), "the other oneof member is null");

    // Index path 0 is the first message, Header: not the table's.
    let (at, reason) = reader
        .decode_run(&[&frame(1, &[2, 2], &body), &frame(1, &[0], &[0x08, 1])])
        .expect_err("Header is refused");
    assert_eq!(at, 1);
    assert!(reason.contains("sf.Header"), "{reason}");
}

#[test]
fn a_proto_version_that_changes_a_type_or_recurses_is_refused_by_name() {
    let v2 = CALL_V1.replace("int64 id = 1;", "string id = 1; int32 added = 9;");
    let v3 = CALL_V1.replace("int64 id = 1;", "int64 id = 1; int32 added = 9;");
    let (reader, refused) = protobuf::merge(
        &[proto(1, 1, CALL_V1), proto(2, 2, &v2), proto(3, 3, &v3)],
        Some("sf.Call"),
    );
    let reader = reader.expect("v1 and v3 merge");
    assert!(
        refused[&2].contains("version 2") && refused[&2].contains("'id'"),
        "{refused:?}"
    );
    assert_eq!(
        reader.payload.fields().last().map(|f| f.name().as_str()),
        Some("added")
    );
    let recursive = r#"syntax = "proto3"; message Node { Node next = 1; }"#;
    let (reader, refused) = protobuf::merge(&[proto(4, 1, recursive)], None);
    assert!(reader.is_none());
    assert!(refused[&4].contains("recursive"), "{refused:?}");
}

#[test]
fn json_schema_versions_merge_and_a_type_change_is_refused() {
    let v1 = r##"{"type":"object","properties":{
        "id":{"type":"integer"},
        "at":{"type":"string","format":"date-time"},
        "place":{"$ref":"#/$defs/Place"},
        "note":{"anyOf":[{"type":"string"},{"type":"null"}]},
        "free":{"type":"object"}},
        "$defs":{"Place":{"type":"object","properties":{"district":{"type":"string"}}}}}"##;
    let v2 = v1.replace(
        r#""id":{"type":"integer"},"#,
        r#""id":{"type":"integer"},"units":{"type":"integer"},"#,
    );
    let v3 = v1.replace(r#""id":{"type":"integer"}"#, r#""id":{"type":"string"}"#);
    let written = [
        Written {
            id: 1,
            version: 1,
            schema: v1,
        },
        Written {
            id: 2,
            version: 2,
            schema: &v2,
        },
        Written {
            id: 3,
            version: 3,
            schema: &v3,
        },
    ];
    let (reader, refused) = json_schema::merge(&written);
    let reader = reader.expect("v1 and v2 merge");
    assert!(refused[&3].contains("'id'"), "{refused:?}");
    let names: Vec<&str> = reader
        .payload
        .fields()
        .iter()
        .map(|f| f.name().as_str())
        .collect();
    assert!(
        names.contains(&"units") && names.contains(&"place"),
        "{names:?}"
    );
    assert!(
        !names.contains(&"free"),
        "an untyped object has no column: {names:?}"
    );
    let mut message = vec![0, 0, 0, 0, 1];
    message.extend(br#"{"id": 3, "at": "2024-01-01T00:00:00Z", "place": {"district": "D1"}}"#);
    let batch = reader.decode_run(&[&message]).expect("decodes");
    let id = reader.payload.index_of("id").expect("id");
    assert_eq!(batch.column(id).as_primitive::<Int64Type>().value(0), 3);
}
