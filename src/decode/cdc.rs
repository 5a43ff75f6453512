//! Change events: the Debezium JSON envelope unwrapped into a plain record, and message
//! keys read as the key columns of a tombstone.

use serde_json::{Map, Value};

use super::Rejected;

/// The record a Debezium change event carries, as a JSON object: `after` for a create,
/// update or snapshot read, `before` for a delete (or the message key, when the source
/// keeps no before image), with `cdc_op` and `cdc_source_ts` (from `source.ts_ms`)
/// added. The `schema`/`payload` wrapper of the JSON converter with schemas is optional.
pub(super) fn flatten(payload: &[u8], key: Option<&[u8]>) -> Result<Vec<u8>, Rejected> {
    let event: Value =
        serde_json::from_slice(payload).map_err(|e| Rejected::Malformed(e.to_string()))?;
    let event = unwrap(event);
    let Value::Object(event) = event else {
        return Err(Rejected::NotObject);
    };
    let op = event
        .get("op")
        .and_then(Value::as_str)
        .ok_or(Rejected::NoOp)?;
    let image = match op {
        "c" | "u" | "r" => {
            object(event.get("after")).ok_or_else(|| Rejected::NoAfter(op.into()))?
        }
        "d" => object(event.get("before"))
            .or_else(|| key.and_then(key_object))
            .ok_or(Rejected::NoBefore)?,
        "t" => return Err(Rejected::Truncate),
        other => return Err(Rejected::UnknownOp(other.into())),
    };
    let mut row = image;
    row.insert("cdc_op".into(), Value::String(op.into()));
    let ts = event
        .get("source")
        .and_then(|s| s.get("ts_ms"))
        .or_else(|| event.get("ts_ms"))
        .and_then(Value::as_i64)
        .and_then(chrono::DateTime::from_timestamp_millis);
    if let Some(ts) = ts {
        let text = ts.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        row.insert("cdc_source_ts".into(), Value::String(text));
    }
    serde_json::to_vec(&Value::Object(row)).map_err(Rejected::decoder)
}

/// A message key as a JSON object of key columns (`{"id": 7}`, also inside the
/// `schema`/`payload` wrapper); `None` for any other key.
pub(super) fn key_object(key: &[u8]) -> Option<Map<String, Value>> {
    object(Some(&unwrap(serde_json::from_slice(key).ok()?)))
}

/// The `payload` of a `{"schema": .., "payload": ..}` wrapper, or the value itself.
fn unwrap(value: Value) -> Value {
    match value {
        Value::Object(mut map) if map.contains_key("schema") && map.contains_key("payload") => {
            map.remove("payload").unwrap_or(Value::Null)
        }
        other => other,
    }
}

fn object(value: Option<&Value>) -> Option<Map<String, Value>> {
    value.and_then(Value::as_object).cloned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flat(payload: &str, key: Option<&str>) -> Result<Value, Rejected> {
        flatten(payload.as_bytes(), key.map(str::as_bytes))
            .map(|b| serde_json::from_slice(&b).unwrap())
    }

    #[test]
    fn debezium_events_become_records() {
        let update = r#"{"before":{"id":1,"v":"a"},"after":{"id":1,"v":"b"},"op":"u","source":{"ts_ms":1700000000000}}"#;
        assert_eq!(
            flat(update, None).unwrap(),
            serde_json::json!({"id":1,"v":"b","cdc_op":"u","cdc_source_ts":"2023-11-14T22:13:20.000Z"})
        );
        let wrapped = format!(r#"{{"schema":{{}},"payload":{update}}}"#);
        assert_eq!(flat(&wrapped, None).unwrap()["v"], "b");
        // A delete keeps the before image, or falls back to the key.
        let delete = r#"{"before":null,"after":null,"op":"d","source":{"ts_ms":1}}"#;
        let row = flat(delete, Some(r#"{"schema":{},"payload":{"id":9}}"#)).unwrap();
        assert_eq!(
            (row["id"].as_i64(), row["cdc_op"].as_str()),
            (Some(9), Some("d"))
        );
        assert_eq!(flat(delete, None).unwrap_err(), Rejected::NoBefore);
        assert!(flat(r#"{"id":1}"#, None)
            .unwrap_err()
            .to_string()
            .contains("format"));
        assert_eq!(flat(r#"{"op":"t"}"#, None).unwrap_err(), Rejected::Truncate);
    }
}
