//! Analytics arithmetic, pure: what each stored record adds to the hourly rollups
//! (`contrib`), the mergeable histograms percentiles come from, bucket keys, time zones and
//! the price table. No store, no I/O: domain/analytics.rs applies the deltas in the commit
//! of the write they count and reads them back; the rebuild sums the same contributions.
//! Depends only on `model` and `types`.

pub mod contrib;
pub mod figures;
pub mod prices;
pub mod tz;

pub use contrib::Deltas;
pub use figures::Figures;

use std::collections::BTreeMap;
use time::OffsetDateTime;

/// The dimension every figure of a tenant is counted under.
pub const DIM_ALL: &str = "all";

/// The dimension of one agent's figures.
pub fn agent_dim(agent: &crate::types::AgentId) -> String {
    format!("agent:{agent}")
}

/// The dimension of one channel's figures.
pub fn channel_dim(channel: &crate::types::ChannelId) -> String {
    format!("channel:{channel}")
}

/// The rollup bucket (UTC hour, `YYYYMMDDHH`) a moment falls in.
pub fn hour_key(at: OffsetDateTime) -> String {
    let at = at.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}{:02}{:02}{:02}",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour()
    )
}

/// The start of a bucket named by [`hour_key`].
pub fn hour_start(key: &str) -> Option<OffsetDateTime> {
    if key.len() != 10 || !key.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n = |r: std::ops::Range<usize>| key[r].parse::<u32>().ok();
    let month = time::Month::try_from(n(4..6)? as u8).ok()?;
    let date = time::Date::from_calendar_date(n(0..4)? as i32, month, n(6..8)? as u8).ok()?;
    let t = time::Time::from_hms(n(8..10)? as u8, 0, 0).ok()?;
    Some(time::PrimitiveDateTime::new(date, t).assume_utc())
}

/// Sub-buckets per power of two: a percentile read from the histogram is within 1/16
/// (6.25 %) of the exact one, and a bucket keeps at most a few hundred entries.
const SUB: u64 = 16;

/// Mergeable histogram of durations in milliseconds: exact below 32 ms, then 16 buckets per
/// power of two. Buckets of several hours add up, so percentiles over any range come from
/// the merged counts without keeping samples.
pub struct Hist;

impl Hist {
    /// The bucket a value falls in.
    pub fn index(v: u64) -> u16 {
        if v < 2 * SUB {
            return v as u16;
        }
        let e = 63 - v.leading_zeros() as u64; // floor(log2 v) >= 5
        let sub = (v >> (e - 4)) & (SUB - 1);
        (2 * SUB + (e - 5) * SUB + sub) as u16
    }

    /// The largest value of a bucket: what a percentile falling in it reports.
    pub fn upper(i: u16) -> u64 {
        let i = i as u64;
        if i < 2 * SUB {
            return i;
        }
        let e = (i - 2 * SUB) / SUB + 5;
        let sub = (i - 2 * SUB) % SUB;
        ((SUB + sub + 1) << (e - 4)) - 1
    }

    /// A value as the histogram reports it (the upper bound of its bucket).
    pub fn quantize(v: u64) -> u64 {
        Self::upper(Self::index(v))
    }

    /// The nearest-rank `q` quantile (0 < q <= 1) of merged counts; `None` when empty.
    pub fn quantile(h: &BTreeMap<u16, i64>, q: f64) -> Option<u64> {
        let n: i64 = h.values().filter(|c| **c > 0).sum();
        if n <= 0 {
            return None;
        }
        let rank = ((q * n as f64).ceil() as i64).clamp(1, n);
        let mut seen = 0;
        for (i, c) in h {
            seen += (*c).max(0);
            if seen >= rank {
                return Some(Self::upper(*i));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_ordered_and_tight() {
        let mut last = 0;
        for v in [
            0u64,
            1,
            31,
            32,
            33,
            47,
            48,
            63,
            64,
            100,
            1_000,
            59_999,
            3_600_000,
            1 << 40,
        ] {
            let i = Hist::index(v);
            assert!(i >= last, "{v}");
            last = i;
            let up = Hist::upper(i);
            assert!(up >= v, "{v} -> {up}");
            assert!((up - v) as f64 <= v as f64 / 16.0 + 1.0, "{v} -> {up}");
            assert_eq!(Hist::index(up), i, "{v}");
        }
        assert_eq!(Hist::quantize(7), 7);
    }

    #[test]
    fn quantiles_are_nearest_rank_over_merged_counts() {
        let mut h = BTreeMap::new();
        for v in [10u64, 20, 30, 40] {
            *h.entry(Hist::index(v)).or_insert(0) += 1;
        }
        assert_eq!(Hist::quantile(&h, 0.5), Some(20));
        assert_eq!(Hist::quantile(&h, 0.9), Some(Hist::quantize(40)));
        assert_eq!(Hist::quantile(&BTreeMap::new(), 0.5), None);
    }

    #[test]
    fn hour_keys_round_trip() {
        let t = time::macros::datetime!(2026-03-02 13:45:10 +02:00);
        assert_eq!(hour_key(t), "2026030211");
        assert_eq!(
            hour_start("2026030211"),
            Some(time::macros::datetime!(2026-03-02 11:00 UTC))
        );
        assert_eq!(hour_start("20260302xx"), None);
    }
}
