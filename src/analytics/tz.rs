//! A tenant's time zone and the series buckets of a report range in it. Rollups are UTC
//! hours; a report's day, week or month starts at local midnight, so each UTC hour is
//! counted in the local bucket its start falls in (a zone whose offset is not whole hours
//! counts an hour in the bucket where it starts).

use time::{Date, Duration, OffsetDateTime, UtcOffset};

/// A time zone: an IANA name from the system's zoneinfo, a fixed offset (`+02:00`) or UTC.
#[derive(Clone, Debug)]
pub struct Zone {
    tz: jiff::tz::TimeZone,
    name: String,
}

impl Zone {
    pub fn utc() -> Self {
        Zone {
            tz: jiff::tz::TimeZone::UTC,
            name: "UTC".into(),
        }
    }

    /// Reads `UTC`, an IANA name (`Europe/Lisbon`) or an offset (`+02:00`, `-0530`).
    pub fn parse(name: &str) -> Result<Self, String> {
        let n = name.trim();
        if n.is_empty() || n.eq_ignore_ascii_case("utc") || n == "Z" {
            return Ok(Self::utc());
        }
        if n.starts_with('+') || n.starts_with('-') {
            let digits: String = n[1..].chars().filter(|c| c.is_ascii_digit()).collect();
            let (h, m) = match digits.len() {
                1 | 2 => (digits.parse::<i32>().ok(), Some(0)),
                4 => (digits[..2].parse().ok(), digits[2..].parse().ok()),
                _ => (None, None),
            };
            let (Some(h), Some(m)) = (h, m) else {
                return Err(format!("`{n}` is not a UTC offset like +02:00"));
            };
            if h > 14 || m > 59 {
                return Err(format!("`{n}` is not a UTC offset like +02:00"));
            }
            let secs = (h * 3600 + m * 60) * if n.starts_with('-') { -1 } else { 1 };
            let off = jiff::tz::Offset::from_seconds(secs).map_err(|e| e.to_string())?;
            return Ok(Zone {
                tz: jiff::tz::TimeZone::fixed(off),
                name: n.to_string(),
            });
        }
        let tz = jiff::tz::TimeZone::get(n).map_err(|_| {
            format!("`{n}` is not a known time zone (an IANA name like Europe/Lisbon)")
        })?;
        Ok(Zone {
            tz,
            name: n.to_string(),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    fn offset_at(&self, at: OffsetDateTime) -> UtcOffset {
        let secs = jiff::Timestamp::from_second(at.unix_timestamp())
            .map(|ts| self.tz.to_offset(ts).seconds())
            .unwrap_or(0);
        UtcOffset::from_whole_seconds(secs).unwrap_or(UtcOffset::UTC)
    }

    /// The moment in this zone's local time.
    pub fn local(&self, at: OffsetDateTime) -> OffsetDateTime {
        at.to_offset(self.offset_at(at))
    }

    /// Local midnight starting `date` (the first moment of the day when midnight is skipped
    /// by a daylight-saving change).
    pub fn midnight(&self, date: Date) -> OffsetDateTime {
        let civil = jiff::civil::date(
            date.year() as i16,
            u8::from(date.month()) as i8,
            date.day() as i8,
        );
        let secs = self
            .tz
            .to_timestamp(civil.into())
            .map(|ts| ts.as_second())
            .unwrap_or_else(|_| date.midnight().assume_utc().unix_timestamp());
        let at = OffsetDateTime::from_unix_timestamp(secs).unwrap_or(OffsetDateTime::UNIX_EPOCH);
        self.local(at)
    }

    /// Today's date in this zone.
    pub fn today(&self, now: OffsetDateTime) -> Date {
        self.local(now).date()
    }
}

/// How finely a report's series is cut.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Granularity {
    Hour,
    Day,
    Week,
    Month,
}

impl Granularity {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "hour" => Self::Hour,
            "day" => Self::Day,
            "week" => Self::Week,
            "month" => Self::Month,
            _ => return None,
        })
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hour => "hour",
            Self::Day => "day",
            Self::Week => "week",
            Self::Month => "month",
        }
    }
}

/// One bucket of a series: `[start, end)` in local time, and its label.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bucket {
    pub start: OffsetDateTime,
    pub end: OffsetDateTime,
    pub label: String,
}

fn label(zone: &Zone, g: Granularity, start: OffsetDateTime) -> String {
    let l = zone.local(start);
    let d = l.date();
    match g {
        Granularity::Hour => format!(
            "{:04}-{:02}-{:02}T{:02}",
            d.year(),
            u8::from(d.month()),
            d.day(),
            l.hour()
        ),
        Granularity::Day => format!("{:04}-{:02}-{:02}", d.year(), u8::from(d.month()), d.day()),
        Granularity::Week => {
            let (y, w, _) = d.to_iso_week_date();
            format!("{y:04}-W{w:02}")
        }
        Granularity::Month => format!("{:04}-{:02}", d.year(), u8::from(d.month())),
    }
}

/// The local date of the next bucket boundary after `d` (day granularity and up).
fn next_date(g: Granularity, d: Date) -> Option<Date> {
    match g {
        Granularity::Hour | Granularity::Day => d.next_day(),
        Granularity::Week => {
            let mut n = d.next_day()?;
            while n.weekday() != time::Weekday::Monday {
                n = n.next_day()?;
            }
            Some(n)
        }
        Granularity::Month => {
            let (y, m) = match d.month() {
                time::Month::December => (d.year() + 1, time::Month::January),
                m => (d.year(), m.next()),
            };
            Date::from_calendar_date(y, m, 1).ok()
        }
    }
}

/// The buckets from local midnight of `from` to local midnight after `to`; `None` when
/// there would be more than `max`.
pub fn buckets(
    zone: &Zone,
    from: Date,
    to: Date,
    g: Granularity,
    max: usize,
) -> Option<Vec<Bucket>> {
    let end = zone.midnight(to.next_day()?);
    let mut out = Vec::new();
    let mut start = zone.midnight(from);
    let mut date = from;
    while start < end {
        if out.len() == max {
            return None;
        }
        let next = match g {
            Granularity::Hour => start + Duration::HOUR,
            _ => {
                date = next_date(g, date)?;
                zone.midnight(date)
            }
        }
        .min(end);
        out.push(Bucket {
            start,
            end: next,
            label: label(zone, g, start),
        });
        start = zone.local(next);
    }
    Some(out)
}

/// The series bucket a UTC hour bucket starting at `at` falls in (buckets sorted by start).
pub fn bucket_of(buckets: &[Bucket], at: OffsetDateTime) -> Option<usize> {
    let i = buckets.partition_point(|b| b.start <= at);
    (i > 0 && at < buckets[i - 1].end).then(|| i - 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::{date, datetime};

    #[test]
    fn days_start_at_local_midnight() {
        let z = Zone::parse("+02:00").unwrap();
        let b = buckets(
            &z,
            date!(2026 - 03 - 02),
            date!(2026 - 03 - 03),
            Granularity::Day,
            100,
        )
        .unwrap();
        assert_eq!(b.len(), 2);
        assert_eq!(b[0].start, datetime!(2026-03-01 22:00 UTC));
        assert_eq!(b[0].label, "2026-03-02");
        assert_eq!(bucket_of(&b, datetime!(2026-03-02 21:00 UTC)), Some(0));
        assert_eq!(bucket_of(&b, datetime!(2026-03-02 22:00 UTC)), Some(1));
        assert_eq!(bucket_of(&b, datetime!(2026-03-03 22:00 UTC)), None);
    }

    #[test]
    fn weeks_and_months_cut_at_their_boundaries() {
        let z = Zone::utc();
        let w = buckets(
            &z,
            date!(2026 - 03 - 04),
            date!(2026 - 03 - 16),
            Granularity::Week,
            100,
        )
        .unwrap();
        let labels: Vec<_> = w.iter().map(|b| b.label.as_str()).collect();
        assert_eq!(labels, ["2026-W10", "2026-W11", "2026-W12"]);
        let m = buckets(
            &z,
            date!(2026 - 01 - 15),
            date!(2026 - 03 - 01),
            Granularity::Month,
            100,
        )
        .unwrap();
        assert_eq!(m.len(), 3);
        assert_eq!(m[1].start, datetime!(2026-02-01 00:00 UTC));
        assert!(
            buckets(
                &z,
                date!(2026 - 01 - 01),
                date!(2026 - 12 - 31),
                Granularity::Hour,
                2000
            )
            .is_none()
        );
    }

    #[test]
    fn named_zones_follow_daylight_saving() {
        let Ok(z) = Zone::parse("Europe/Lisbon") else {
            return; // no zoneinfo on this machine: nothing to check
        };
        // Lisbon moves to summer time on 2026-03-29.
        assert_eq!(
            z.midnight(date!(2026 - 03 - 28)),
            datetime!(2026-03-28 00:00 UTC)
        );
        assert_eq!(
            z.midnight(date!(2026 - 03 - 30)),
            datetime!(2026-03-29 23:00 UTC)
        );
        assert!(Zone::parse("Mars/Olympus").is_err());
        assert!(Zone::parse("+99:00").is_err());
    }
}
