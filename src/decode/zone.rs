//! Zone-less timestamp strings read as local time of a source's `timezone` and stored as
//! the instants they name (microseconds, UTC).
//!
//! A local time in the autumn fold (01:30 happens twice in Los Angeles) names two
//! instants and one in the spring gap (02:30 never happens) names none; the feed cannot
//! say which was meant, so both are resolved as java.time and Spark do, never refused:
//! a fold takes the earlier instant (the summer-time offset), a gap is read with the
//! offset in force before it (02:30 becomes 03:30 summer time).

use std::sync::Arc;

use chrono::{NaiveDateTime, Offset, TimeDelta, TimeZone, Utc};
use chrono_tz::Tz;
use deltalake::arrow::array::timezone::Tz as ArrowTz;
use deltalake::arrow::array::{Array, ArrayRef, StringArray, TimestampMicrosecondArray};
use deltalake::arrow::compute::kernels::cast_utils::string_to_datetime;
use deltalake::arrow::error::ArrowError;

/// Parse every string of `column` (a Utf8 column) into microseconds since the epoch,
/// UTC. A string with an offset or `Z` keeps it; one without is local time in `zone`.
pub(super) fn to_instants(column: &ArrayRef, zone: Tz) -> Result<ArrayRef, ArrowError> {
    let strings = column
        .as_any()
        .downcast_ref::<StringArray>()
        .ok_or_else(|| ArrowError::CastError("a TIMESTAMP field was not read as text".into()))?;
    let arrow_zone = arrow_zone(zone)?;
    let micros = strings
        .iter()
        .map(|v| v.map(|s| instant(s, zone, &arrow_zone)).transpose())
        .collect::<Result<TimestampMicrosecondArray, _>>()?;
    Ok(Arc::new(micros.with_timezone("UTC")))
}

fn arrow_zone(zone: Tz) -> Result<ArrowTz, ArrowError> {
    zone.name()
        .parse()
        .map_err(|_| ArrowError::CastError(format!("unknown time zone {}", zone.name())))
}

fn instant(text: &str, zone: Tz, arrow_zone: &ArrowTz) -> Result<i64, ArrowError> {
    // arrow's parser takes every string a TIMESTAMP takes without a zone; it refuses
    // only a local time in a fold or gap (or text that is no date-time at all).
    if let Ok(at) = string_to_datetime(arrow_zone, text) {
        return Ok(at.timestamp_micros());
    }
    let wall = string_to_datetime(&Utc, text)
        .map_err(|e| ArrowError::CastError(format!("'{text}' is not a date-time: {e}")))?
        .naive_utc();
    Ok(resolve(wall, zone).timestamp_micros())
}

/// The instant a local wall-clock time names in `zone` (see the module comment).
fn resolve(wall: NaiveDateTime, zone: Tz) -> chrono::DateTime<Utc> {
    match zone.from_local_datetime(&wall) {
        chrono::LocalResult::Single(at) => at.with_timezone(&Utc),
        chrono::LocalResult::Ambiguous(first, second) => first.min(second).with_timezone(&Utc),
        chrono::LocalResult::None => {
            // Gaps are at most a few hours long: a day earlier is safely before it.
            let before = zone
                .from_local_datetime(&(wall - TimeDelta::days(1)))
                .earliest()
                .map_or(Utc.fix(), |at| at.offset().fix());
            Utc.from_utc_datetime(&(wall - TimeDelta::seconds(i64::from(before.local_minus_utc()))))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(text: &str) -> String {
        let la: Tz = "America/Los_Angeles".parse().unwrap();
        let micros = instant(text, la, &arrow_zone(la).unwrap()).unwrap();
        chrono::DateTime::from_timestamp_micros(micros)
            .unwrap()
            .format("%Y-%m-%dT%H:%M:%SZ")
            .to_string()
    }

    #[test]
    fn local_times_become_instants_across_both_dst_changes() {
        // Winter (PST, UTC-8) and summer (PDT, UTC-7).
        assert_eq!(utc("2024-01-15T12:00:00"), "2024-01-15T20:00:00Z");
        assert_eq!(utc("2024-07-15 12:00:00"), "2024-07-15T19:00:00Z");
        // Spring forward, 2024-03-10: 02:00 PST jumps to 03:00 PDT.
        assert_eq!(utc("2024-03-10T01:59:00"), "2024-03-10T09:59:00Z");
        assert_eq!(utc("2024-03-10T02:30:00"), "2024-03-10T10:30:00Z"); // gap: 03:30 PDT
        assert_eq!(utc("2024-03-10T03:00:00"), "2024-03-10T10:00:00Z");
        // Fall back, 2024-11-03: 02:00 PDT returns to 01:00 PST; 01:30 happens twice.
        assert_eq!(utc("2024-11-03T00:30:00"), "2024-11-03T07:30:00Z");
        assert_eq!(utc("2024-11-03T01:30:00"), "2024-11-03T08:30:00Z"); // fold: earlier
        assert_eq!(utc("2024-11-03T02:30:00"), "2024-11-03T10:30:00Z");
        // An explicit offset or Z wins over the zone.
        assert_eq!(utc("2024-11-03T01:30:00-08:00"), "2024-11-03T09:30:00Z");
        assert_eq!(utc("2024-07-15T12:00:00Z"), "2024-07-15T12:00:00Z");
    }

    #[test]
    fn text_that_is_no_time_is_an_error() {
        let la: Tz = "America/Los_Angeles".parse().unwrap();
        assert!(instant("yesterday", la, &arrow_zone(la).unwrap()).is_err());
    }
}
