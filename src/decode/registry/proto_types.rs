//! Protobuf types -> Delta's: messages are structs, `repeated` lists, `map` maps, enums
//! their value's name, unsigned 64-bit decimal(20,0) (Delta has no unsigned type), and
//! the well-known types what they stand for: Timestamp a UTC timestamp, Duration its
//! microseconds, wrappers their nullable value, Struct/Value/ListValue their JSON text.
//! A field without presence (a proto3 scalar) reads its default when absent; one with
//! presence (a message, `optional`, a `oneof` member) reads null.

use std::sync::Arc;

use deltalake::arrow::datatypes::{DataType, Field, Fields, TimeUnit};
use prost_reflect::{
    DynamicMessage, FieldDescriptor, Kind, MapKey, MessageDescriptor, ReflectMessage, Value,
};
use serde_json::{Map, Value as Json};

use super::columns::Why;

/// The columns of `message`'s fields; a recursive message is refused.
pub(super) fn fields(message: &MessageDescriptor) -> Result<Vec<Field>, Why> {
    struct_fields(message, &mut Vec::new())
}

fn struct_fields(message: &MessageDescriptor, seen: &mut Vec<String>) -> Result<Vec<Field>, Why> {
    if seen.iter().any(|s| s == message.full_name()) {
        return Err(Why(format!(
            "has a recursive message ({} holds itself): a table cannot hold it",
            message.full_name()
        )));
    }
    seen.push(message.full_name().to_string());
    let fields = message
        .fields()
        .map(|f| Ok(Field::new(f.name(), column(&f, seen)?, true)))
        .collect();
    seen.pop();
    fields
}

fn column(field: &FieldDescriptor, seen: &mut Vec<String>) -> Result<DataType, Why> {
    if field.is_map() {
        let entry = field.kind();
        let entry = entry.as_message().ok_or("a map without its entry")?;
        let key = Field::new(
            "key",
            kind(&entry.map_entry_key_field().kind(), seen)?,
            false,
        );
        let value = Field::new(
            "value",
            kind(&entry.map_entry_value_field().kind(), seen)?,
            true,
        );
        let entries = Field::new(
            "key_value",
            DataType::Struct(Fields::from(vec![key, value])),
            false,
        );
        return Ok(DataType::Map(Arc::new(entries), false));
    }
    let item = kind(&field.kind(), seen)?;
    Ok(match field.is_list() {
        true => DataType::List(Arc::new(Field::new("element", item, true))),
        false => item,
    })
}

fn kind(kind: &Kind, seen: &mut Vec<String>) -> Result<DataType, Why> {
    Ok(match kind {
        Kind::Double => DataType::Float64,
        Kind::Float => DataType::Float32,
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => DataType::Int32,
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 | Kind::Uint32 | Kind::Fixed32 => {
            DataType::Int64
        }
        Kind::Uint64 | Kind::Fixed64 => DataType::Decimal128(20, 0),
        Kind::Bool => DataType::Boolean,
        Kind::String | Kind::Enum(_) => DataType::Utf8,
        Kind::Bytes => DataType::Binary,
        Kind::Message(m) => match well_known(m.full_name()) {
            Some(WellKnown::Instant) => {
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
            }
            Some(WellKnown::Span) => DataType::Int64,
            Some(WellKnown::JsonText) => DataType::Utf8,
            Some(WellKnown::Wrapper) => {
                let value = m
                    .get_field_by_name("value")
                    .ok_or("a wrapper without its value")?;
                self::kind(&value.kind(), seen)?
            }
            None => {
                let fields = struct_fields(m, seen)?;
                match fields.is_empty() {
                    // Delta has no empty struct: an empty message says it was there.
                    true => DataType::Boolean,
                    false => DataType::Struct(fields.into()),
                }
            }
        },
    })
}

enum WellKnown {
    Instant,
    Span,
    Wrapper,
    JsonText,
}

fn well_known(name: &str) -> Option<WellKnown> {
    let name = name.strip_prefix("google.protobuf.")?;
    Some(match name {
        "Timestamp" => WellKnown::Instant,
        "Duration" => WellKnown::Span,
        "Struct" | "Value" | "ListValue" => WellKnown::JsonText,
        "DoubleValue" | "FloatValue" | "Int64Value" | "UInt64Value" | "Int32Value"
        | "UInt32Value" | "BoolValue" | "StringValue" | "BytesValue" => WellKnown::Wrapper,
        _ => return None,
    })
}

/// `message` as a JSON row shaped like its columns (for arrow-json to build).
pub(super) fn row(message: &DynamicMessage) -> Json {
    let mut row = Map::new();
    for field in message.descriptor().fields() {
        if field.supports_presence() && !message.has_field(&field) {
            continue;
        }
        let value = message.get_field(&field);
        row.insert(field.name().to_string(), field_value(&field, &value));
    }
    Json::Object(row)
}

fn field_value(field: &FieldDescriptor, value: &Value) -> Json {
    match value {
        Value::List(items) => items.iter().map(|v| scalar(&field.kind(), v)).collect(),
        Value::Map(entries) => {
            let kind = field.kind();
            let value_kind = kind.as_message().map(|e| e.map_entry_value_field().kind());
            let object = entries
                .iter()
                .map(|(k, v)| {
                    let v = value_kind.as_ref().map_or(Json::Null, |vk| scalar(vk, v));
                    (map_key(k), v)
                })
                .collect();
            Json::Object(object)
        }
        other => scalar(&field.kind(), other),
    }
}

fn map_key(key: &MapKey) -> String {
    match key {
        MapKey::Bool(b) => b.to_string(),
        MapKey::I32(v) => v.to_string(),
        MapKey::I64(v) => v.to_string(),
        MapKey::U32(v) => v.to_string(),
        MapKey::U64(v) => v.to_string(),
        MapKey::String(s) => s.clone(),
    }
}

fn scalar(kind: &Kind, value: &Value) -> Json {
    match value {
        Value::Bool(b) => Json::Bool(*b),
        Value::I32(v) => Json::from(*v),
        Value::I64(v) => Json::from(*v),
        Value::U32(v) => Json::from(*v),
        Value::U64(v) => Json::from(*v),
        // JSON has no NaN or infinity: such a value reads as null.
        Value::F32(v) => {
            serde_json::Number::from_f64(f64::from(*v)).map_or(Json::Null, Json::Number)
        }
        Value::F64(v) => serde_json::Number::from_f64(*v).map_or(Json::Null, Json::Number),
        Value::String(s) => Json::String(s.clone()),
        Value::Bytes(b) => Json::String(super::columns::hex(b)),
        Value::EnumNumber(n) => match kind.as_enum().and_then(|e| e.get_value(*n)) {
            Some(v) => Json::String(v.name().to_string()),
            None => Json::String(n.to_string()),
        },
        Value::Message(m) => message_value(m),
        Value::List(_) | Value::Map(_) => Json::Null,
    }
}

fn message_value(message: &DynamicMessage) -> Json {
    let number = |name: &str| {
        message
            .get_field_by_name(name)
            .and_then(|v| v.as_i64().or_else(|| v.as_i32().map(i64::from)))
            .unwrap_or(0)
    };
    match well_known(message.descriptor().full_name()) {
        Some(WellKnown::Instant | WellKnown::Span) => {
            let micros = number("seconds")
                .saturating_mul(1_000_000)
                .saturating_add(number("nanos") / 1_000);
            Json::from(micros)
        }
        Some(WellKnown::Wrapper) => match message.descriptor().get_field_by_name("value") {
            Some(f) => scalar(&f.kind(), &message.get_field(&f)),
            None => Json::Null,
        },
        Some(WellKnown::JsonText) => {
            serde_json::to_string(message).map_or(Json::Null, Json::String)
        }
        None if message.descriptor().fields().len() == 0 => Json::Bool(true),
        None => row(message),
    }
}
