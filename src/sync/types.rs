//! Arrow columns as MySQL columns: the DDL type of each and the bound values of its cells.

use chrono::{DateTime, Datelike, NaiveDate, Timelike};
use deltalake::arrow::array::{Array, ArrayRef, AsArray};
use deltalake::arrow::compute::cast;
use deltalake::arrow::datatypes::{
    DataType, Date32Type, Float32Type, Float64Type, Int16Type, Int32Type, Int64Type, Int8Type,
    TimeUnit, TimestampMicrosecondType, UInt16Type, UInt32Type, UInt64Type, UInt8Type,
};
use deltalake::arrow::error::ArrowError;
use mysql_async::Value;

/// InnoDB's limit on one index key, in bytes; utf8mb4 takes up to 4 bytes a character.
const MAX_KEY_BYTES: usize = 3072;

/// The MySQL type of an Arrow column. String keys get a VARCHAR sized so that the whole
/// primary key fits InnoDB's key limit; other strings are TEXT.
pub(super) fn mysql_type(t: &DataType, string_key_chars: Option<usize>) -> Option<String> {
    Some(match t {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => match string_key_chars {
            Some(n) => format!("VARCHAR({n})"),
            None => "LONGTEXT".into(),
        },
        DataType::Boolean => "BOOLEAN".into(),
        DataType::Int8 | DataType::Int16 | DataType::Int32 => "INT".into(),
        DataType::UInt8 | DataType::UInt16 | DataType::UInt32 => "INT UNSIGNED".into(),
        DataType::Int64 => "BIGINT".into(),
        DataType::UInt64 => "BIGINT UNSIGNED".into(),
        DataType::Float32 => "FLOAT".into(),
        DataType::Float64 => "DOUBLE".into(),
        DataType::Decimal128(p, s) if *p <= 65 => format!("DECIMAL({p},{s})"),
        DataType::Date32 => "DATE".into(),
        // Delta timestamps are UTC instants; the sync session runs in UTC.
        DataType::Timestamp(_, _) => "DATETIME(6)".into(),
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => "LONGBLOB".into(),
        _ => return None,
    })
}

/// Characters each string key column may hold: the key limit shared out, leaving room
/// for the fixed-size key columns.
pub(super) fn string_key_chars(string_keys: usize, fixed_key_bytes: usize) -> usize {
    let budget = MAX_KEY_BYTES.saturating_sub(fixed_key_bytes) / 4;
    (budget / string_keys.max(1)).clamp(16, 768)
}

/// Bytes a fixed-size key column takes in an index.
pub(super) fn fixed_key_bytes(t: &DataType) -> usize {
    match t {
        DataType::Date32 => 3,
        DataType::Timestamp(_, _) => 8,
        DataType::Decimal128(_, _) => 32,
        _ => 8,
    }
}

/// Why a column cannot be written to MySQL.
#[derive(Debug, thiserror::Error)]
pub(super) enum ValueError {
    #[error(transparent)]
    Cast(#[from] ArrowError),
    #[error("no MySQL type for {0}")]
    NoType(DataType),
    #[error("{0} out of range")]
    Range(String),
}

/// Every cell of `array` as a bound value.
pub(super) fn values(array: &ArrayRef) -> Result<Vec<Value>, ValueError> {
    let n = array.len();
    let mut out = Vec::with_capacity(n);
    macro_rules! ints {
        ($t:ty, $v:ident, $conv:expr) => {{
            let a = array.as_primitive::<$t>();
            for i in 0..n {
                out.push(if a.is_null(i) {
                    Value::NULL
                } else {
                    let $v = a.value(i);
                    $conv
                });
            }
        }};
    }
    match array.data_type() {
        // Decimals travel as their exact text, which MySQL parses into DECIMAL.
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View | DataType::Decimal128(_, _) => {
            let a = cast(array, &DataType::Utf8)?;
            for v in a.as_string::<i32>() {
                out.push(v.map_or(Value::NULL, |s| Value::Bytes(s.as_bytes().to_vec())));
            }
        }
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => {
            let a = cast(array, &DataType::Binary)?;
            for v in a.as_binary::<i32>() {
                out.push(v.map_or(Value::NULL, |b| Value::Bytes(b.to_vec())));
            }
        }
        DataType::Boolean => {
            for v in array.as_boolean() {
                out.push(v.map_or(Value::NULL, |b| Value::Int(i64::from(b))));
            }
        }
        DataType::Int8 => ints!(Int8Type, v, Value::Int(v.into())),
        DataType::Int16 => ints!(Int16Type, v, Value::Int(v.into())),
        DataType::Int32 => ints!(Int32Type, v, Value::Int(v.into())),
        DataType::Int64 => ints!(Int64Type, v, Value::Int(v)),
        DataType::UInt8 => ints!(UInt8Type, v, Value::UInt(v.into())),
        DataType::UInt16 => ints!(UInt16Type, v, Value::UInt(v.into())),
        DataType::UInt32 => ints!(UInt32Type, v, Value::UInt(v.into())),
        DataType::UInt64 => ints!(UInt64Type, v, Value::UInt(v)),
        DataType::Float32 => ints!(Float32Type, v, Value::Float(v)),
        DataType::Float64 => ints!(Float64Type, v, Value::Double(v)),
        DataType::Date32 => ints!(Date32Type, v, date_value(v)?),
        DataType::Timestamp(unit, _) => {
            let micros = if *unit == TimeUnit::Microsecond {
                array.clone()
            } else {
                cast(array, &DataType::Timestamp(TimeUnit::Microsecond, None))?
            };
            let a = micros.as_primitive::<TimestampMicrosecondType>();
            for i in 0..n {
                out.push(if a.is_null(i) {
                    Value::NULL
                } else {
                    datetime_value(a.value(i))?
                });
            }
        }
        other => return Err(ValueError::NoType(other.clone())),
    }
    Ok(out)
}

fn date_value(days: i32) -> Result<Value, ValueError> {
    let date = NaiveDate::from_num_days_from_ce_opt(days + 719_163)
        .ok_or_else(|| ValueError::Range(format!("date of {days} days")))?;
    Ok(Value::Date(
        u16::try_from(date.year())
            .map_err(|_| ValueError::Range(format!("year {}", date.year())))?,
        date.month() as u8,
        date.day() as u8,
        0,
        0,
        0,
        0,
    ))
}

pub(super) fn datetime_value(micros: i64) -> Result<Value, ValueError> {
    let t = DateTime::from_timestamp_micros(micros)
        .ok_or_else(|| ValueError::Range(format!("timestamp {micros}")))?
        .naive_utc();
    Ok(Value::Date(
        u16::try_from(t.year()).map_err(|_| ValueError::Range(format!("year {}", t.year())))?,
        t.month() as u8,
        t.day() as u8,
        t.hour() as u8,
        t.minute() as u8,
        t.second() as u8,
        t.nanosecond() / 1000,
    ))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use deltalake::arrow::array::{Date32Array, StringArray, TimestampMicrosecondArray};

    use super::*;

    #[test]
    fn cells_become_bound_values() {
        let ts: ArrayRef = Arc::new(
            TimestampMicrosecondArray::from(vec![Some(1_538_388_120_000_001), None])
                .with_timezone("UTC"),
        );
        assert_eq!(
            values(&ts).expect("ts"),
            vec![Value::Date(2018, 10, 1, 10, 2, 0, 1), Value::NULL]
        );
        let d: ArrayRef = Arc::new(Date32Array::from(vec![17805]));
        assert_eq!(
            values(&d).expect("date"),
            vec![Value::Date(2018, 10, 1, 0, 0, 0, 0)]
        );
        let s: ArrayRef = Arc::new(StringArray::from(vec![Some("a'`;"), None]));
        assert_eq!(
            values(&s).expect("str"),
            vec![Value::Bytes(b"a'`;".to_vec()), Value::NULL]
        );
    }

    #[test]
    fn keys_fit_the_index_limit() {
        let n = string_key_chars(1, 16);
        assert!(n * 4 + 16 <= 3072, "{n}");
        assert_eq!(string_key_chars(10, 0), 76);
        assert_eq!(
            mysql_type(&DataType::Utf8, Some(300)).as_deref(),
            Some("VARCHAR(300)")
        );
    }
}
