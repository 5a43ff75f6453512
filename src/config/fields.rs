//! The declared message schema: `"call_date_time TIMESTAMP NOT NULL"` entries.

use std::sync::Arc;

use deltalake::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};

use super::ParseError;

/// One declared field of a source's JSON messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldSpec {
    pub name: String,
    pub ty: FieldType,
    /// A message without this field (or with null) is a dead letter.
    pub required: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldType {
    String,
    Int32,
    Int64,
    Double,
    Boolean,
    Date,
    /// Microseconds, UTC, from an RFC 3339 string; a string without a zone is read as
    /// UTC wall-clock time. A JSON number is a dead letter: its unit would be a guess.
    Timestamp,
    /// Stored like `Timestamp`; the JSON value may also be a number of seconds,
    /// milliseconds or microseconds since the epoch (`timestamp_s|ms|us`).
    EpochTimestamp(TimeUnit),
}

impl FieldType {
    fn parse(word: &str) -> Option<Self> {
        Some(match word.to_ascii_lowercase().as_str() {
            "string" | "text" | "varchar" => Self::String,
            "int" | "int32" | "integer" => Self::Int32,
            "bigint" | "int64" | "long" => Self::Int64,
            "double" | "float64" | "float" => Self::Double,
            "bool" | "boolean" => Self::Boolean,
            "date" => Self::Date,
            "timestamp" => Self::Timestamp,
            "timestamp_s" => Self::EpochTimestamp(TimeUnit::Second),
            "timestamp_ms" => Self::EpochTimestamp(TimeUnit::Millisecond),
            "timestamp_us" => Self::EpochTimestamp(TimeUnit::Microsecond),
            _ => return None,
        })
    }

    pub fn data_type(self) -> DataType {
        match self {
            Self::String => DataType::Utf8,
            Self::Int32 => DataType::Int32,
            Self::Int64 => DataType::Int64,
            Self::Double => DataType::Float64,
            Self::Boolean => DataType::Boolean,
            Self::Date => DataType::Date32,
            Self::Timestamp | Self::EpochTimestamp(_) => {
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
            }
        }
    }

    /// The type the JSON decoder reads the value as, before it becomes `data_type`:
    /// text for a plain timestamp (so a number is refused), the declared unit for an
    /// epoch timestamp.
    pub fn json_type(self) -> DataType {
        match self {
            Self::Timestamp => DataType::Utf8,
            Self::EpochTimestamp(unit) => DataType::Timestamp(unit, Some("UTC".into())),
            other => other.data_type(),
        }
    }

    pub fn is_timestamp(self) -> bool {
        matches!(self, Self::Timestamp | Self::EpochTimestamp(_))
    }
}

impl FieldSpec {
    /// Parse `name TYPE [NOT NULL]`; the error says what was expected.
    pub fn parse(text: &str) -> Result<Self, ParseError> {
        let words: Vec<&str> = text.split_whitespace().collect();
        let (name, ty, rest) = match words.as_slice() {
            [name, ty, rest @ ..] => (*name, *ty, rest),
            _ => {
                return Err(ParseError(format!(
                    "'{text}': expected \"name TYPE [NOT NULL]\""
                )))
            }
        };
        let ty = FieldType::parse(ty).ok_or_else(|| {
            ParseError::new(format!(
                "'{text}': unknown type '{ty}' (string, int32, int64, double, boolean, date, \
                 timestamp, timestamp_s, timestamp_ms, timestamp_us)"
            ))
        })?;
        let required = match rest {
            [] => false,
            [not, null] if not.eq_ignore_ascii_case("not") && null.eq_ignore_ascii_case("null") => {
                true
            }
            _ => {
                return Err(ParseError(format!(
                    "'{text}': only NOT NULL may follow the type"
                )))
            }
        };
        if !is_identifier(name) {
            return Err(ParseError(format!(
                "'{text}': field name must match [A-Za-z_][A-Za-z0-9_]{{0,63}}"
            )));
        }
        Ok(Self {
            name: name.to_string(),
            ty,
            required,
        })
    }

    pub fn arrow_field(&self) -> Field {
        Field::new(&self.name, self.ty.data_type(), !self.required)
    }
}

/// The Arrow schema of the decoded payload columns.
pub fn arrow_schema(fields: &[FieldSpec]) -> SchemaRef {
    Arc::new(Schema::new(
        fields
            .iter()
            .map(FieldSpec::arrow_field)
            .collect::<Vec<_>>(),
    ))
}

/// The schema the JSON decoder reads (see [`FieldType::json_type`]).
pub fn json_schema(fields: &[FieldSpec]) -> SchemaRef {
    Arc::new(Schema::new(
        fields
            .iter()
            .map(|f| Field::new(&f.name, f.ty.json_type(), !f.required))
            .collect::<Vec<_>>(),
    ))
}

/// Names that reach SQL, paths and Delta column names: letters, digits, underscore.
pub fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && name.len() <= 64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_declarations() {
        let f = FieldSpec::parse("call_date_time  TIMESTAMP not null").unwrap();
        assert_eq!(f.ty, FieldType::Timestamp);
        assert!(f.required);
        assert!(!FieldSpec::parse("address string").unwrap().required);
    }

    #[test]
    fn rejects_bad_declarations() {
        for bad in ["x", "x blob", "x string null", "1x string", "a-b string"] {
            assert!(FieldSpec::parse(bad).is_err(), "{bad}");
        }
        assert!(!is_identifier(&"a".repeat(65)));
    }
}
