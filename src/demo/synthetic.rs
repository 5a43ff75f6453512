//! A generator of realistic SF police calls for service: the 14 string fields of the
//! public dataset, arrival times of a city's call load, a long-tailed mix of crime types,
//! and dispositions that include codes the radio-code table does not know.

use chrono::{Duration, NaiveDateTime, Timelike};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde_json::json;

/// (name, weight) of common crime types, roughly as frequent as in the real feed.
const CRIME_TYPES: &[(&str, u32)] = &[
    ("Traffic Stop", 140),
    ("Passing Call", 130),
    ("Suspicious Person", 60),
    ("Homeless Complaint", 55),
    ("Audible Alarm", 45),
    ("Well Being Check", 40),
    ("Meet W/citizen", 35),
    ("Suspicious Vehicle", 35),
    ("Traf Violation Cite", 30),
    ("Trespasser", 25),
    ("Noise Nuisance", 25),
    ("Fight No Weapon", 20),
    ("Mentally Disturbed", 20),
    ("Auto Boost / Strip", 18),
    ("Person Down", 15),
    ("Petty Theft", 15),
    ("Burglary", 12),
    ("Assault / Battery", 12),
    ("Threats / Harassment", 10),
    ("Vandalism", 10),
    ("Stolen Vehicle", 8),
    ("Traffic Collision", 8),
    ("Parking Violation", 8),
    ("Drunk Driver", 5),
    ("Shoplifter", 5),
    ("Robbery", 4),
    ("Drugs", 4),
    ("Indecent Exposure", 2),
    ("Shots Fired", 2),
    ("Fire", 1),
];

/// (code, weight); the last eleven have no row in the radio-code table.
const DISPOSITIONS: &[(&str, u32)] = &[
    ("HAN", 220),
    ("ADV", 90),
    ("GOA", 90),
    ("UTL", 60),
    ("ND", 50),
    ("CIT", 45),
    ("REP", 45),
    ("ADM", 30),
    ("NOM", 25),
    ("ARR", 20),
    ("CAN", 15),
    ("22", 10),
    ("ABA", 8),
    ("CSA", 4),
    ("CRM", 4),
    ("VAS", 2),
    ("SFD", 2),
    ("Not recorded", 25),
    ("DUP", 5),
    ("INC", 3),
    ("ENC", 3),
    ("CHP", 2),
    ("GEN", 1),
    ("OTS", 1),
    ("TH2", 1),
    ("TOW", 1),
    ("HOT", 1),
    ("FIR", 1),
];

const STREETS: &[&str] = &[
    "Market St",
    "Mission St",
    "Howard St",
    "Geary Bl",
    "Van Ness Av",
    "Divisadero St",
    "Valencia St",
    "Folsom St",
    "Turk St",
    "Eddy St",
    "Ellis St",
    "Polk St",
    "Larkin St",
    "Hyde St",
    "Jones St",
    "Taylor St",
    "Powell St",
    "Stockton St",
    "Kearny St",
    "3rd St",
    "6th St",
    "16th St",
    "24th St",
    "Haight St",
    "Fillmore St",
    "Irving St",
    "Judah St",
    "Taraval St",
    "Ocean Av",
    "Geneva Av",
    "San Bruno Av",
    "Bayshore Bl",
    "Cesar Chavez St",
    "Lombard St",
    "Columbus Av",
    "Broadway",
    "Bush St",
    "Sutter St",
    "Post St",
    "Castro St",
];

const COMMON_LOCATIONS: &[&str] = &[
    "Union Square, Sf",
    "Civic Center Plaza, Sf",
    "Bart-16th St Mission Station, Sf",
    "Golden Gate Park, Sf",
    "Walgreens #4609, Sf",
];

/// Calls in event-time order starting at `start`, about one every `mean_gap_seconds`.
pub struct CallGenerator {
    rng: SmallRng,
    now: NaiveDateTime,
    next_id: u64,
    mean_gap_seconds: f64,
    crime_total: u32,
    disposition_total: u32,
}

impl CallGenerator {
    pub fn new(seed: u64, start: NaiveDateTime, mean_gap_seconds: f64) -> Self {
        Self {
            rng: SmallRng::seed_from_u64(seed),
            now: start,
            next_id: 182_740_000 + (seed % 1000) * 10_000_000,
            mean_gap_seconds,
            crime_total: CRIME_TYPES.iter().map(|(_, w)| w).sum(),
            disposition_total: DISPOSITIONS.iter().map(|(_, w)| w).sum(),
        }
    }

    /// The next call as (key = crime_id, compact JSON).
    pub fn next_call(&mut self) -> (String, Vec<u8>) {
        // Exponential gaps give Poisson arrivals; calls come in whole minutes, as in the feed.
        let u: f64 = self.rng.gen_range(f64::EPSILON..1.0);
        let gap = (-u.ln() * self.mean_gap_seconds).round() as i64;
        self.now += Duration::seconds(gap);
        let at = self.now.with_second(0).unwrap_or(self.now);
        let id = self.next_id.to_string();
        self.next_id += 1 + self.rng.gen_range(0..3);
        let day = at.date().format("%Y-%m-%dT00:00:00.000").to_string();
        let crime = self.crime_type();
        let disposition = pick(&mut self.rng, DISPOSITIONS, self.disposition_total);
        let (address, address_type, common) = self.address();
        let call = json!({
            "crime_id": id,
            "original_crime_type_name": crime,
            "report_date": day,
            "call_date": day,
            "offense_date": day,
            "call_time": at.format("%H:%M").to_string(),
            "call_date_time": at.format("%Y-%m-%dT%H:%M:%S%.3f").to_string(),
            "disposition": disposition,
            "address": address,
            "city": if self.rng.gen_ratio(1, 50) { "" } else { "San Francisco" },
            "state": "CA",
            "agency_id": "1",
            "address_type": address_type,
            "common_location": common,
        });
        (id, call.to_string().into_bytes())
    }

    /// Mostly the common types; a long tail of rare free-text ones, as dispatchers type them.
    fn crime_type(&mut self) -> String {
        if self.rng.gen_ratio(1, 20) {
            let code = self.rng.gen_range(0..400);
            return match code % 4 {
                0 => format!("{code}"),
                1 => format!("Code {code}"),
                2 => format!(
                    "Poss {}",
                    pick(&mut self.rng, CRIME_TYPES, self.crime_total)
                ),
                _ => format!("Att {}", pick(&mut self.rng, CRIME_TYPES, self.crime_total)),
            };
        }
        pick(&mut self.rng, CRIME_TYPES, self.crime_total).to_string()
    }

    fn address(&mut self) -> (String, &'static str, &'static str) {
        let street = STREETS[self.rng.gen_range(0..STREETS.len())];
        match self.rng.gen_range(0..100) {
            0..=54 => (
                format!("{}00 Blk {street}", self.rng.gen_range(1..40)),
                "Premise Address",
                "",
            ),
            55..=89 => {
                let other = STREETS[self.rng.gen_range(0..STREETS.len())];
                (
                    format!("{street}/{}", other.to_lowercase()),
                    "Intersection",
                    "",
                )
            }
            90..=95 => (
                format!("{}00 Blk {street}", self.rng.gen_range(1..40)),
                "Geo-Override",
                "",
            ),
            _ => {
                let place = COMMON_LOCATIONS[self.rng.gen_range(0..COMMON_LOCATIONS.len())];
                (
                    format!("{}00 Blk {street}", self.rng.gen_range(1..40)),
                    "Common Location",
                    place,
                )
            }
        }
    }
}

fn pick<'a>(rng: &mut SmallRng, items: &'a [(&'a str, u32)], total: u32) -> &'a str {
    let mut n = rng.gen_range(0..total);
    for (item, weight) in items {
        if n < *weight {
            return item;
        }
        n -= weight;
    }
    items[0].0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_are_realistic_and_ordered() {
        let start =
            NaiveDateTime::parse_from_str("2018-10-01 00:00:00", "%Y-%m-%d %H:%M:%S").unwrap();
        let mut g = CallGenerator::new(7, start, 40.0);
        let mut last_time = String::new();
        let mut ids = std::collections::HashSet::new();
        for _ in 0..2000 {
            let (key, json) = g.next_call();
            let v: serde_json::Value = serde_json::from_slice(&json).unwrap();
            let map = v.as_object().unwrap();
            assert_eq!(map.len(), 14);
            assert!(map.values().all(|v| v.is_string()));
            assert_eq!(map["crime_id"].as_str(), Some(key.as_str()));
            let t = map["call_date_time"].as_str().unwrap().to_string();
            assert!(t >= last_time && t.len() == 23, "{t}");
            assert!(map["call_date"].as_str().unwrap().starts_with(&t[..10]));
            last_time = t;
            assert!(ids.insert(key));
        }
        // ~2000 calls at 40 s apart span about a day.
        assert!(last_time.as_str() > "2018-10-01T18" && last_time.as_str() < "2018-10-02T06");
    }
}
