//! A run second by second (`--timeline`): for each second after the warm-up, how many
//! requests were intended in it and their latency (p50, p99, max), and how many requests
//! completed in it. It tells one stall of hundreds of milliseconds (a ramp of latency in one
//! or two seconds, completions dropping then catching up) from a queue that grows all run
//! (latency rising second after second while completions stay below the rate).
//!
//! Latency per second is kept in coarse log buckets (four per octave, so a percentile is
//! within 19% of the truth); the exact distribution of the whole run is in `Stats`.

use serde_json::{json, Value};

/// Buckets per octave of microseconds.
const SUB_BUCKETS: u32 = 4;
/// Enough octaves for latencies up to 2^40 µs (12 days).
const BUCKETS: usize = 40 * SUB_BUCKETS as usize;
/// Seconds kept; later requests are left out of the timeline (not of `Stats`).
pub const SECONDS_MAX: usize = 3_600;

const NS_PER_SECOND: u64 = 1_000_000_000;

/// One second of the run.
#[derive(Clone, Debug)]
struct Second {
    /// Requests intended in this second (and completed), by latency bucket.
    buckets: Box<[u32; BUCKETS]>,
    intended: u64,
    max_us: u64,
    /// Requests that completed in this second, whenever they were intended.
    completed: u64,
}

impl Default for Second {
    fn default() -> Self {
        Second {
            buckets: Box::new([0; BUCKETS]),
            intended: 0,
            max_us: 0,
            completed: 0,
        }
    }
}

/// What one connection (or, merged, the run) saw in each second.
#[derive(Clone, Debug, Default)]
pub struct Timeline {
    seconds: Vec<Second>,
}

/// The bucket of a latency: values below 4 µs are exact, then four buckets per octave.
fn bucket(us: u64) -> usize {
    if us < u64::from(SUB_BUCKETS) {
        return us as usize;
    }
    let octave = 63 - us.leading_zeros();
    let fraction = (us >> (octave - 2)) & u64::from(SUB_BUCKETS - 1);
    ((octave * SUB_BUCKETS) as usize + fraction as usize).min(BUCKETS - 1)
}

/// The largest latency a bucket holds.
fn bucket_top_us(index: usize) -> u64 {
    if index < SUB_BUCKETS as usize {
        return index as u64;
    }
    let octave = index as u32 / SUB_BUCKETS;
    let fraction = u64::from(index as u32 % SUB_BUCKETS);
    let width = 1u64 << (octave - 2);
    (1u64 << octave) + (fraction + 1) * width - 1
}

impl Timeline {
    /// Records a request intended at `intended_ns` that completed at `completed_ns`, both
    /// measured from the end of the warm-up.
    pub fn record(&mut self, intended_ns: u64, completed_ns: u64) {
        let latency_us = completed_ns.saturating_sub(intended_ns).div_ceil(1000);
        if let Some(second) = self.second_mut(intended_ns) {
            second.buckets[bucket(latency_us)] += 1;
            second.intended += 1;
            second.max_us = second.max_us.max(latency_us);
        }
        if let Some(second) = self.second_mut(completed_ns) {
            second.completed += 1;
        }
    }

    fn second_mut(&mut self, at_ns: u64) -> Option<&mut Second> {
        let index = (at_ns / NS_PER_SECOND) as usize;
        if index >= SECONDS_MAX {
            return None;
        }
        if self.seconds.len() <= index {
            self.seconds.resize_with(index + 1, Second::default);
        }
        Some(&mut self.seconds[index])
    }

    pub fn merge(&mut self, other: &Timeline) {
        if self.seconds.len() < other.seconds.len() {
            self.seconds
                .resize_with(other.seconds.len(), Second::default);
        }
        for (mine, theirs) in self.seconds.iter_mut().zip(&other.seconds) {
            for (a, b) in mine.buckets.iter_mut().zip(theirs.buckets.iter()) {
                *a += b;
            }
            mine.intended += theirs.intended;
            mine.completed += theirs.completed;
            mine.max_us = mine.max_us.max(theirs.max_us);
        }
    }

    /// The rows: second, intended, completed, p50/p99/max of the intended ones (µs).
    pub fn rows(&self) -> Vec<Row> {
        self.seconds
            .iter()
            .enumerate()
            .map(|(index, second)| Row {
                second: index as u64,
                intended: second.intended,
                completed: second.completed,
                p50_us: percentile_us(second, 50.0),
                p99_us: percentile_us(second, 99.0),
                max_us: second.max_us,
            })
            .collect()
    }

    /// The table of the text report.
    pub fn table(&self) -> String {
        let mut out = format!(
            "{:>6} {:>10} {:>10} {:>9} {:>9} {:>9}\n",
            "second", "intended", "completed", "p50 ms", "p99 ms", "max ms"
        );
        for row in self.rows() {
            out += &format!(
                "{:>6} {:>10} {:>10} {:>9} {:>9} {:>9}\n",
                row.second,
                row.intended,
                row.completed,
                crate::stats::ms(row.p50_us),
                crate::stats::ms(row.p99_us),
                crate::stats::ms(row.max_us)
            );
        }
        out
    }

    pub fn json(&self) -> Value {
        Value::Array(
            self.rows()
                .into_iter()
                .map(|row| {
                    json!({
                        "second": row.second,
                        "intended": row.intended,
                        "completed": row.completed,
                        "p50_ms": row.p50_us as f64 / 1000.0,
                        "p99_ms": row.p99_us as f64 / 1000.0,
                        "max_ms": row.max_us as f64 / 1000.0,
                    })
                })
                .collect(),
        )
    }
}

/// One second of the timeline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Row {
    pub second: u64,
    pub intended: u64,
    pub completed: u64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
}

/// The top of the bucket holding the percentile (at most the second's max); 0 when empty.
fn percentile_us(second: &Second, percentile: f64) -> u64 {
    if second.intended == 0 {
        return 0;
    }
    let rank = ((percentile / 100.0 * second.intended as f64).ceil() as u64).max(1);
    let mut seen = 0;
    for (index, count) in second.buckets.iter().enumerate() {
        seen += u64::from(*count);
        if seen >= rank {
            return bucket_top_us(index).min(second.max_us);
        }
    }
    second.max_us
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    #[test]
    fn buckets_cover_every_value_in_order_within_a_fifth() {
        let mut last = 0;
        for us in 0..100_000u64 {
            let index = bucket(us);
            assert!(index >= last, "{us}");
            last = index;
            let top = bucket_top_us(index);
            assert!(top >= us, "{us} above its bucket's top {top}");
            assert!(top as f64 <= us as f64 * 1.25 + 1.0, "{us}: top {top}");
        }
        assert_eq!(bucket(u64::MAX), BUCKETS - 1);
    }

    /// 1,000 requests/s for 5 s with 1 ms latency, except that the requests intended during
    /// a 300 ms stall starting at 2.5 s complete when it ends.
    fn run_with_a_stall() -> Timeline {
        let mut timeline = Timeline::default();
        for k in 0..5_000u64 {
            let intended = k * MS;
            let completed = if (2_500 * MS..2_800 * MS).contains(&intended) {
                2_800 * MS
            } else {
                intended + MS
            };
            timeline.record(intended, completed);
        }
        timeline
    }

    #[test]
    fn a_stall_shows_in_the_second_it_happened() {
        let rows = run_with_a_stall().rows();
        assert_eq!(rows.len(), 6, "the last request completes in second 5");
        for row in &rows[..5] {
            assert_eq!(row.intended, 1_000, "{row:?}");
        }
        for second in [0, 1, 3, 4] {
            let row = rows[second];
            assert_eq!((row.p50_us, row.p99_us, row.max_us), (1_000, 1_000, 1_000));
        }
        // Second 2: 300 requests delayed, from 300 ms down to 1 ms.
        let stalled = rows[2];
        assert_eq!(stalled.max_us, 300_000);
        assert!(
            (1_000..=1_250).contains(&stalled.p50_us),
            "{stalled:?}: most were not delayed"
        );
        assert!((290_000..=300_000).contains(&stalled.p99_us), "{stalled:?}");
        // Completions: none of them drop out, they just bunch up at the end of the stall.
        assert_eq!(rows.iter().map(|r| r.completed).sum::<u64>(), 5_000);
        assert_eq!(rows[2].completed, 1_000, "the stall ends inside second 2");
        assert_eq!(rows[0].completed, 999);
        assert_eq!(rows[5].completed, 1);
    }

    #[test]
    fn merged_connections_add_up() {
        let mut merged = run_with_a_stall();
        let mut other = Timeline::default();
        other.record(7_200 * MS, 7_250 * MS);
        merged.merge(&other);
        let rows = merged.rows();
        assert_eq!(rows.len(), 8);
        assert_eq!(rows[7].intended, 1);
        assert_eq!(rows[7].max_us, 50_000);
        assert_eq!(rows[2].max_us, 300_000);
        assert_eq!(
            rows[6],
            Row {
                second: 6,
                intended: 0,
                completed: 0,
                p50_us: 0,
                p99_us: 0,
                max_us: 0
            }
        );
    }

    #[test]
    fn seconds_past_the_limit_are_left_out() {
        let mut timeline = Timeline::default();
        let late = SECONDS_MAX as u64 * 1_000 * MS;
        timeline.record(late, late + MS);
        assert!(timeline.rows().is_empty());
        timeline.record(late - MS, late + MS);
        assert_eq!(timeline.rows().len(), SECONDS_MAX);
        assert_eq!(timeline.rows()[SECONDS_MAX - 1].intended, 1);
    }
}
