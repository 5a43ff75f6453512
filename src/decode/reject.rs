//! Why a record becomes a dead letter: checks that need no parsing, the Debezium
//! envelope's faults, and the decoder's message turned into one a user can act on.

use crate::config::{FieldSpec, FieldType};

/// Why a record was refused; its text is the dead letter's `reason`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejected {
    #[error("empty message")]
    Empty,
    #[error("empty message (only whitespace)")]
    Blank,
    #[error("message of {size} bytes exceeds max_message_bytes ({limit})")]
    TooLarge { size: usize, limit: usize },
    #[error("invalid UTF-8 at byte {0}")]
    Utf8(usize),
    #[error("not a JSON object")]
    NotObject,
    #[error("malformed JSON: {0}")]
    Malformed(String),
    #[error("truncated JSON object")]
    Truncated,
    #[error("message holds more than one JSON value")]
    SeveralValues,
    #[error("no rows decoded")]
    NoRows,
    /// The JSON or Arrow decoder's own words, explained against the record later
    /// (`explain`).
    #[error("{0}")]
    Decoder(String),
    #[error("not a Debezium change event (no \"op\"); use format = \"json\" for plain records")]
    NoOp,
    #[error("Debezium '{0}' event without an \"after\" object")]
    NoAfter(String),
    #[error("Debezium delete without a \"before\" object or a JSON message key")]
    NoBefore,
    #[error("Debezium truncate event: not applied (truncate the table by hand)")]
    Truncate,
    #[error("unknown Debezium op '{0}'")]
    UnknownOp(String),
    #[error(
        "wrong type: field '{field}' was added to the table as {kind} (schema_evolution = \"add_columns\"), this value is {value}"
    )]
    Learned {
        field: String,
        kind: String,
        value: String,
    },
}

impl Rejected {
    pub(super) fn decoder(e: impl std::fmt::Display) -> Self {
        Self::Decoder(e.to_string())
    }
}

/// Cheap checks that need no parsing.
pub(super) fn precheck(payload: &[u8], max_message_bytes: usize) -> Result<(), Rejected> {
    if payload.is_empty() {
        return Err(Rejected::Empty);
    }
    if payload.len() > max_message_bytes {
        return Err(Rejected::TooLarge {
            size: payload.len(),
            limit: max_message_bytes,
        });
    }
    if let Err(e) = std::str::from_utf8(payload) {
        return Err(Rejected::Utf8(e.valid_up_to()));
    }
    match payload.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') => Ok(()),
        None => Err(Rejected::Blank),
        Some(_) => Err(Rejected::NotObject),
    }
}

/// Turn the decoder's message for a lone bad record into one a user can act on. Only
/// bad records reach this, so the serde_json parse stays off the hot path.
pub(super) fn explain(fields: &[FieldSpec], payload: &[u8], message: &Rejected) -> String {
    let message = message.to_string();
    let record = match serde_json::from_slice(payload) {
        Ok(serde_json::Value::Object(map)) => Some(map),
        _ => None,
    };
    if let Some(map) = &record {
        if message.contains("non-nullable") {
            let missing: Vec<&str> = fields
                .iter()
                .filter(|f| f.required && map.get(&f.name).is_none_or(|v| v.is_null()))
                .map(|f| f.name.as_str())
                .collect();
            if !missing.is_empty() {
                return format!("missing required field(s): {}", missing.join(", "));
            }
        }
        if let Some(reason) = number_in_timestamp(fields, map) {
            return reason;
        }
    }
    let message = message.strip_prefix("Json error: ").unwrap_or(&message);
    if serde_json::from_slice::<serde::de::IgnoredAny>(payload).is_err() {
        return format!("malformed JSON: {message}");
    }
    format!("wrong type: {message}")
}

/// A plain TIMESTAMP field holding a JSON number, named with what to do about it.
fn number_in_timestamp(
    fields: &[FieldSpec],
    map: &serde_json::Map<String, serde_json::Value>,
) -> Option<String> {
    let field = fields.iter().find(|f| {
        f.ty == FieldType::Timestamp && map.get(&f.name).is_some_and(|v| v.is_number())
    })?;
    Some(format!(
        "wrong type: field '{}' is a number ({}); a TIMESTAMP field takes a date-time \
         string, declare it timestamp_s, timestamp_ms or timestamp_us to read epoch numbers",
        field.name, map[&field.name]
    ))
}
