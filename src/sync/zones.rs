//! Local time in the mirror. Mirrored DATETIME columns hold UTC instants (the session
//! runs at `+00:00`); the views show people local time through
//! `lakestream_local_time(ts, 'America/Los_Angeles')`, which reads the zone's offsets
//! from a table this module fills from the IANA database compiled into lakestream.
//! MySQL's own `CONVERT_TZ` with a zone name needs the server's time-zone tables,
//! which are empty on a default install, and then returns NULL: a silent blank on a
//! dashboard, so it is not used.

use chrono::{DateTime, Offset, TimeZone, Utc};
use chrono_tz::Tz;
use mysql_async::prelude::Queryable;
use mysql_async::Conn;

use super::mysql::run;
use super::SyncError;

const TABLE: &str = "lakestream_zone_offsets";
/// Transitions are listed from here to `LAST_YEAR`: beyond the data any feed carries.
const FIRST_YEAR: i32 = 1970;
const LAST_YEAR: i32 = 2100;

/// Create the offsets table and the function, and (re)fill the offsets of `zones`.
pub(super) async fn install(conn: &mut Conn, zones: &[Tz]) -> Result<(), SyncError> {
    run(
        conn,
        &format!(
            "CREATE TABLE IF NOT EXISTS {TABLE} (\
               zone_name VARCHAR(64) NOT NULL, \
               utc_from DATETIME(6) NOT NULL, \
               offset_seconds INT NOT NULL, \
               PRIMARY KEY (zone_name, utc_from)) ENGINE=InnoDB"
        ),
    )
    .await?;
    for zone in zones {
        let rows: Vec<(String, String, i32)> = transitions(*zone)
            .into_iter()
            .map(|(from, offset)| {
                let from = from.format("%Y-%m-%d %H:%M:%S").to_string();
                (zone.name().to_string(), from, offset)
            })
            .collect();
        let mut tx = conn
            .start_transaction(Default::default())
            .await
            .map_err(|e| SyncError::mysql("START TRANSACTION", e))?;
        let delete = format!("DELETE FROM {TABLE} WHERE zone_name = ?");
        tx.exec_drop(&delete, (zone.name(),))
            .await
            .map_err(|e| SyncError::mysql(&delete, e))?;
        let insert =
            format!("INSERT INTO {TABLE} (zone_name, utc_from, offset_seconds) VALUES (?, ?, ?)");
        tx.exec_batch(&insert, rows)
            .await
            .map_err(|e| SyncError::mysql(&insert, e))?;
        tx.commit()
            .await
            .map_err(|e| SyncError::mysql("COMMIT", e))?;
    }
    // DROP + CREATE, not CREATE OR REPLACE: MySQL 8 has no OR REPLACE for functions.
    run(conn, "DROP FUNCTION IF EXISTS lakestream_local_time").await?;
    run(
        conn,
        &format!(
            "CREATE FUNCTION lakestream_local_time(ts DATETIME(6), zone VARCHAR(64)) \
             RETURNS DATETIME(6) DETERMINISTIC READS SQL DATA \
             RETURN ts + INTERVAL (SELECT offset_seconds FROM {TABLE} \
               WHERE zone_name = zone AND utc_from <= ts \
               ORDER BY utc_from DESC LIMIT 1) SECOND"
        ),
    )
    .await
}

/// The zones to install: those of the sources, and every quoted zone name the view
/// files use (a view may show another zone than its source's).
pub(super) fn wanted(sources: impl IntoIterator<Item = Tz>, sql: &[String]) -> Vec<Tz> {
    let mut zones: Vec<Tz> = sources.into_iter().collect();
    for text in sql {
        let quoted = text.split('\'').skip(1).step_by(2);
        zones.extend(quoted.filter_map(|q| q.parse::<Tz>().ok()));
    }
    zones.sort_by_key(|z| z.name());
    zones.dedup();
    zones
}

/// The instants (UTC) at which `zone`'s offset changes, each with the offset (seconds
/// east of UTC) in force from then on; the first row holds the offset at the start.
fn transitions(zone: Tz) -> Vec<(DateTime<Utc>, i32)> {
    let offset_at = |secs: i64| {
        DateTime::from_timestamp(secs, 0).map_or(0, |t| {
            zone.offset_from_utc_datetime(&t.naive_utc())
                .fix()
                .local_minus_utc()
        })
    };
    let year = |y: i32| {
        Utc.with_ymd_and_hms(y, 1, 1, 0, 0, 0)
            .single()
            .map_or(0, |t| t.timestamp())
    };
    let (mut at, end) = (year(FIRST_YEAR), year(LAST_YEAR));
    let mut current = offset_at(at);
    let mut out = vec![(at, current)];
    // Offsets change at most a few times a year and never twice within six hours:
    // step in six-hour strides and bisect down to the second where one changed.
    const STRIDE: i64 = 6 * 3600;
    while at < end {
        let next = at + STRIDE;
        let offset = offset_at(next);
        if offset != current {
            let (mut lo, mut hi) = (at, next);
            while hi - lo > 1 {
                let mid = lo + (hi - lo) / 2;
                if offset_at(mid) == current {
                    lo = mid;
                } else {
                    hi = mid;
                }
            }
            out.push((hi, offset));
            current = offset;
        }
        at = next;
    }
    out.into_iter()
        .filter_map(|(secs, offset)| Some((DateTime::from_timestamp(secs, 0)?, offset)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn los_angeles_transitions_are_found_to_the_second() {
        let la: Tz = "America/Los_Angeles".parse().unwrap();
        let all = transitions(la);
        assert_eq!(all[0].1, -8 * 3600);
        let in_2024: Vec<String> = all
            .iter()
            .filter(|(t, _)| t.format("%Y").to_string() == "2024")
            .map(|(t, o)| format!("{} {o}", t.format("%Y-%m-%dT%H:%M:%S")))
            .collect();
        // 02:00 PST = 10:00 UTC; 02:00 PDT = 09:00 UTC.
        assert_eq!(
            in_2024,
            ["2024-03-10T10:00:00 -25200", "2024-11-03T09:00:00 -28800"]
        );
        assert!(transitions("UTC".parse().unwrap()).len() == 1);
    }

    #[test]
    fn zones_come_from_sources_and_view_literals() {
        let sql = [
            "SELECT lakestream_local_time(t, 'Europe/Berlin'), 'No radio code' \
                    FROM x WHERE z = 'America/Los_Angeles'"
                .to_string(),
        ];
        let names: Vec<&str> = wanted([chrono_tz::UTC], &sql)
            .iter()
            .map(|z| z.name())
            .collect();
        assert_eq!(names, ["America/Los_Angeles", "Europe/Berlin", "UTC"]);
    }
}
