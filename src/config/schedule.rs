//! When a maintenance task runs: an interval (`"10m"`), a cron expression of five fields
//! in UTC (`"0 3 * * *"`: minute hour day-of-month month day-of-week), or `"off"`.

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Datelike, Timelike, Utc};
use serde::{Deserialize, Deserializer};

use super::ParseError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Schedule {
    Off,
    Every(Duration),
    Cron(Box<Cron>),
}

impl Schedule {
    pub fn parse(text: &str) -> Result<Self, ParseError> {
        let text = text.trim();
        if text.eq_ignore_ascii_case("off") {
            return Ok(Self::Off);
        }
        if text.split_whitespace().count() == 5 {
            return Cron::parse(text).map(|c| Self::Cron(Box::new(c)));
        }
        match humantime::parse_duration(text) {
            Ok(d) if d.is_zero() => Err(ParseError::new(
                "an interval must be positive (or say \"off\")",
            )),
            Ok(d) => Ok(Self::Every(d)),
            Err(e) => Err(ParseError(format!(
                "'{text}' is neither an interval like \"10m\" ({e}), a five-field cron \
                 expression like \"0 3 * * *\", nor \"off\""
            ))),
        }
    }

    /// How long to wait, at `now`, before the next run; None when off. An interval runs
    /// its first time one interval after start-up.
    pub fn wait(&self, now: DateTime<Utc>) -> Option<Duration> {
        match self {
            Self::Off => None,
            Self::Every(d) => Some(*d),
            Self::Cron(c) => {
                let next = c.next_after(now)?;
                Some((next - now).to_std().unwrap_or_default())
            }
        }
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Off => f.write_str("off"),
            Self::Every(d) => write!(f, "every {}", humantime::format_duration(*d)),
            Self::Cron(c) => write!(f, "cron '{}' (UTC)", c.text),
        }
    }
}

impl<'de> Deserialize<'de> for Schedule {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// A five-field cron expression: each field a `*`, a number, a range `a-b`, a step
/// `*/n` or `a-b/n`, or a comma list of those. Day-of-week 0 or 7 is Sunday. As in cron,
/// when both day fields are restricted a day matching either one fires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cron {
    text: String,
    minutes: Vec<bool>,
    hours: Vec<bool>,
    days: Vec<bool>,
    months: Vec<bool>,
    weekdays: Vec<bool>,
    days_any: bool,
    weekdays_any: bool,
}

impl Cron {
    pub fn parse(text: &str) -> Result<Self, ParseError> {
        let fields: Vec<&str> = text.split_whitespace().collect();
        let [m, h, dom, mon, dow] = fields[..] else {
            return Err(ParseError(format!("cron '{text}' must have five fields")));
        };
        let mut weekdays = field(dow, 0, 7, "day-of-week")?;
        if weekdays[7] {
            weekdays[0] = true;
        }
        let cron = Self {
            text: text.to_string(),
            minutes: field(m, 0, 59, "minute")?,
            hours: field(h, 0, 23, "hour")?,
            days: field(dom, 1, 31, "day-of-month")?,
            months: field(mon, 1, 12, "month")?,
            weekdays,
            days_any: dom == "*",
            weekdays_any: dow == "*",
        };
        if !cron.can_fire() {
            return Err(ParseError(format!(
                "cron '{text}' never fires: no selected month has the selected day"
            )));
        }
        Ok(cron)
    }

    /// A day-of-month list alone (weekdays unrestricted) can name only days that the
    /// selected months lack, e.g. `0 0 31 2 *`; such a task would silently never run.
    fn can_fire(&self) -> bool {
        if self.days_any || !self.weekdays_any {
            return true;
        }
        const LONGEST: [usize; 13] = [0, 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
        (1..=12).any(|m| self.months[m] && (1..=LONGEST[m]).any(|d| self.days[d]))
    }

    /// The first whole minute strictly after `now` that matches.
    pub fn next_after(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let start = now.with_second(0)?.with_nanosecond(0)? + chrono::Duration::minutes(1);
        // Every expression that can match at all matches within a leap cycle.
        (0..(366 * 4 * 24 * 60))
            .map(|i| start + chrono::Duration::minutes(i))
            .find(|t| self.matches(t))
    }

    fn matches(&self, t: &DateTime<Utc>) -> bool {
        let day = self.days[t.day() as usize];
        let weekday = self.weekdays[t.weekday().num_days_from_sunday() as usize];
        let day_ok = match (self.days_any, self.weekdays_any) {
            (true, true) => true,
            (false, true) => day,
            (true, false) => weekday,
            (false, false) => day || weekday,
        };
        self.minutes[t.minute() as usize]
            && self.hours[t.hour() as usize]
            && self.months[t.month() as usize]
            && day_ok
    }
}

/// Which values of `lo..=hi` a field selects, indexed by value.
fn field(text: &str, lo: u32, hi: u32, what: &str) -> Result<Vec<bool>, ParseError> {
    let bad = |why: &str| ParseError(format!("cron {what} field '{text}': {why}"));
    let number = |s: &str| -> Result<u32, ParseError> {
        let n: u32 = s
            .parse()
            .map_err(|_| bad(&format!("'{s}' is not a number")))?;
        if n < lo || n > hi {
            return Err(bad(&format!("{n} is outside {lo}-{hi}")));
        }
        Ok(n)
    };
    let mut out = vec![false; hi as usize + 1];
    for part in text.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => (r, s.parse::<u32>().map_err(|_| bad("bad step"))?),
            None => (part, 1),
        };
        if step == 0 {
            return Err(bad("step 0"));
        }
        let (a, b) = match range {
            "*" => (lo, hi),
            r => match r.split_once('-') {
                Some((a, b)) => (number(a)?, number(b)?),
                None if step > 1 => (number(r)?, hi),
                None => (number(r)?, number(r)?),
            },
        };
        if a > b {
            return Err(bad(&format!("range {a}-{b} is empty")));
        }
        for v in (a..=b).step_by(step as usize) {
            out[v as usize] = true;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, 0).unwrap()
    }

    #[test]
    fn cron_finds_the_next_minute_that_matches() {
        let c = Cron::parse("0 3 * * *").unwrap();
        assert_eq!(
            c.next_after(at(2026, 11, 21, 2, 59)),
            Some(at(2026, 11, 21, 3, 0))
        );
        assert_eq!(
            c.next_after(at(2026, 11, 21, 3, 0)),
            Some(at(2026, 11, 22, 3, 0))
        );
        let c = Cron::parse("*/15 * * * 1-5").unwrap();
        // 2026-11-21 is a Saturday: the next weekday slot is Monday 00:00.
        assert_eq!(
            c.next_after(at(2026, 11, 21, 10, 7)),
            Some(at(2026, 11, 23, 0, 0))
        );
        let c = Cron::parse("30 12 29 2 *").unwrap();
        assert_eq!(
            c.next_after(at(2026, 3, 1, 0, 0)),
            Some(at(2028, 2, 29, 12, 30))
        );
    }

    #[test]
    fn schedules_parse_or_say_why_not() {
        assert_eq!(
            Schedule::parse("10m").unwrap(),
            Schedule::Every(Duration::from_secs(600))
        );
        assert_eq!(Schedule::parse("off").unwrap(), Schedule::Off);
        assert!(Schedule::parse("0 25 * * *")
            .unwrap_err()
            .to_string()
            .contains("hour"));
        assert!(Schedule::parse("soon")
            .unwrap_err()
            .to_string()
            .contains("cron"));
        assert!(Schedule::parse("0s").is_err());
        assert!(Schedule::parse("0 0 31 2 *")
            .unwrap_err()
            .to_string()
            .contains("never fires"));
        assert!(Schedule::parse("0 0 30 4,6 *").is_ok());
    }
}
