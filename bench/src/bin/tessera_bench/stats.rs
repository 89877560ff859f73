//! What a run measured: one HDR latency histogram per operation kind (microseconds, three
//! significant digits), final errors and retried refusals by kind, and the renderings of it:
//! the one-screen table, the HdrHistogram percentile-distribution text and the JSON summary.
//!
//! Each connection fills its own `Stats`; they are merged at the end, so the hot path takes no
//! lock.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use hdrhistogram::Histogram;
use serde_json::{json, Value};

use crate::timeline::Timeline;
use crate::workload::OpKind;

/// Significant digits of every histogram: values are exact to 0.1%.
pub const SIGNIFICANT_DIGITS: u8 = 3;

/// The percentiles of the one-screen report and of the JSON summary.
pub const REPORT_PERCENTILES: [(f64, &str); 6] = [
    (50.0, "p50"),
    (90.0, "p90"),
    (99.0, "p99"),
    (99.9, "p99.9"),
    (99.99, "p99.99"),
    (100.0, "max"),
];

/// Everything one connection (or, merged, the whole run) measured.
#[derive(Clone, Debug)]
pub struct Stats {
    /// Latency in microseconds, by `OpKind::index()`.
    pub latency_us: [Histogram<u64>; 3],
    /// Requests that failed for good, by kind of failure.
    pub errors: BTreeMap<&'static str, u64>,
    /// Refusals that were retried (e.g. `not_leader` while following a hint), by kind.
    pub retries: BTreeMap<&'static str, u64>,
    /// Compare-and-swaps that reached the server and found another version (not errors).
    pub cas_mismatches: u64,
    /// The run second by second (see `timeline`).
    pub timeline: Timeline,
}

impl Default for Stats {
    fn default() -> Self {
        Stats::new()
    }
}

impl Stats {
    pub fn new() -> Stats {
        // Auto-resizing histograms: they grow to the largest value recorded, so hundreds of
        // connections do not each allocate an hour's range up front.
        let histogram = || Histogram::new(SIGNIFICANT_DIGITS).expect("valid significant digits");
        Stats {
            latency_us: [histogram(), histogram(), histogram()],
            errors: BTreeMap::new(),
            retries: BTreeMap::new(),
            cas_mismatches: 0,
            timeline: Timeline::default(),
        }
    }

    /// Records a completed request's latency (nanoseconds, rounded to microseconds).
    pub fn record_ns(&mut self, op: OpKind, latency_ns: u64) {
        let histogram = &mut self.latency_us[op.index()];
        // `record` grows an auto-resizing histogram; `saturating_record` would clamp to its
        // current (small) range instead.
        if histogram.record(latency_ns.div_ceil(1000)).is_err() {
            histogram.saturating_record(latency_ns.div_ceil(1000));
        }
    }

    pub fn count_error(&mut self, kind: &'static str) {
        *self.errors.entry(kind).or_default() += 1;
    }

    pub fn count_retry(&mut self, kind: &'static str) {
        *self.retries.entry(kind).or_default() += 1;
    }

    /// Adds another connection's measurements.
    pub fn merge(&mut self, other: &Stats) {
        for (mine, theirs) in self.latency_us.iter_mut().zip(&other.latency_us) {
            mine.add(theirs)
                .expect("auto-resizing histograms accept any value");
        }
        for (kind, n) in &other.errors {
            *self.errors.entry(kind).or_default() += n;
        }
        for (kind, n) in &other.retries {
            *self.retries.entry(kind).or_default() += n;
        }
        self.cas_mismatches += other.cas_mismatches;
        self.timeline.merge(&other.timeline);
    }

    /// All operation kinds in one histogram.
    pub fn all_us(&self) -> Histogram<u64> {
        let mut all = self.latency_us[0].clone();
        for other in &self.latency_us[1..] {
            all.add(other)
                .expect("auto-resizing histograms accept any value");
        }
        all
    }

    /// Completed requests of every kind.
    pub fn completed(&self) -> u64 {
        self.latency_us.iter().map(Histogram::len).sum()
    }

    /// Operation kinds that completed at least once, each with its histogram.
    pub fn present(&self) -> Vec<(OpKind, &Histogram<u64>)> {
        OpKind::ALL
            .iter()
            .map(|op| (*op, &self.latency_us[op.index()]))
            .filter(|(_, h)| !h.is_empty())
            .collect()
    }
}

/// Value at a percentile (0-100); `max` exactly at 100.
pub fn percentile_us(histogram: &Histogram<u64>, percentile: f64) -> u64 {
    if percentile >= 100.0 {
        histogram.max()
    } else {
        histogram.value_at_percentile(percentile)
    }
}

/// Microseconds as milliseconds with three decimals.
pub fn ms(us: u64) -> String {
    format!("{:.3}", us as f64 / 1000.0)
}

/// The latency table of the one-screen report: a row per operation kind and one for all.
pub fn latency_table(stats: &Stats, elapsed_ns: u64) -> String {
    let mut out = String::new();
    let _ = write!(out, "{:<6} {:>10} {:>10}", "op", "count", "ops/s");
    for (_, name) in REPORT_PERCENTILES {
        let _ = write!(out, " {:>9}", format!("{name} ms"));
    }
    out.push('\n');
    let all = stats.all_us();
    let mut rows: Vec<(&str, &Histogram<u64>)> = stats
        .present()
        .into_iter()
        .map(|(op, h)| (op.name(), h))
        .collect();
    if rows.len() > 1 {
        rows.push(("all", &all));
    }
    for (name, histogram) in rows {
        let rate = crate::schedule::per_second(histogram.len(), elapsed_ns);
        let _ = write!(out, "{name:<6} {:>10} {rate:>10.0}", histogram.len());
        for (percentile, _) in REPORT_PERCENTILES {
            let _ = write!(out, " {:>9}", ms(percentile_us(histogram, percentile)));
        }
        out.push('\n');
    }
    out
}

/// The histogram in HdrHistogram's percentile-distribution text format (as written by
/// `outputPercentileDistribution` with 5 ticks per half distance, values in milliseconds), which
/// the HdrHistogram plotter and other tools read.
pub fn percentile_distribution(histogram: &Histogram<u64>) -> String {
    let mut out = String::new();
    let _ = write!(
        out,
        "{:>12} {:>14} {:>10} {:>14}\n\n",
        "Value", "Percentile", "TotalCount", "1/(1-Percentile)"
    );
    let mut total = 0u64;
    for step in histogram.iter_quantiles(5) {
        total += step.count_since_last_iteration();
        let value_ms = step.value_iterated_to() as f64 / 1000.0;
        let quantile = step.quantile_iterated_to();
        if quantile < 1.0 {
            let _ = writeln!(
                out,
                "{value_ms:12.3} {quantile:2.12} {total:10} {:14.2}",
                1.0 / (1.0 - quantile)
            );
        } else {
            let _ = writeln!(out, "{value_ms:12.3} {quantile:2.12} {total:10}");
        }
    }
    let sub_buckets = (2.0 * 10f64.powi(i32::from(SIGNIFICANT_DIGITS)))
        .log2()
        .ceil()
        .exp2() as u64;
    let _ = writeln!(
        out,
        "#[Mean    = {:12.3}, StdDeviation   = {:12.3}]",
        histogram.mean() / 1000.0,
        histogram.stdev() / 1000.0
    );
    let _ = writeln!(
        out,
        "#[Max     = {:12.3}, Total count    = {:12}]",
        histogram.max() as f64 / 1000.0,
        histogram.len()
    );
    let _ = writeln!(
        out,
        "#[Buckets = {:12}, SubBuckets     = {:12}]",
        histogram.buckets(),
        sub_buckets
    );
    out
}

/// The latency percentiles of one histogram as a JSON object, in milliseconds.
pub fn percentiles_json(histogram: &Histogram<u64>) -> Value {
    let mut map = serde_json::Map::new();
    for (percentile, name) in REPORT_PERCENTILES {
        let value = percentile_us(histogram, percentile) as f64 / 1000.0;
        map.insert(format!("{name}_ms"), json!(value));
    }
    Value::Object(map)
}

/// Per-kind counts, rates and percentiles, and the error and retry tallies.
pub fn stats_json(stats: &Stats, elapsed_ns: u64) -> Value {
    let mut ops = serde_json::Map::new();
    let all = stats.all_us();
    let mut rows: Vec<(&str, &Histogram<u64>)> = stats
        .present()
        .into_iter()
        .map(|(op, h)| (op.name(), h))
        .collect();
    rows.push(("all", &all));
    for (name, histogram) in rows {
        ops.insert(
            name.to_string(),
            json!({
                "count": histogram.len(),
                "ops_per_second": crate::schedule::per_second(histogram.len(), elapsed_ns),
                "latency": percentiles_json(histogram),
            }),
        );
    }
    json!({
        "completed": stats.completed(),
        "elapsed_seconds": elapsed_ns as f64 / 1e9,
        "ops_per_second": crate::schedule::per_second(stats.completed(), elapsed_ns),
        "ops": Value::Object(ops),
        "errors": stats.errors,
        "retries": stats.retries,
        "cas_mismatches": stats.cas_mismatches,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Latencies 1, 2, ..., 10,000 µs, once each.
    fn uniform_stats() -> Stats {
        let mut stats = Stats::new();
        for us in 1..=10_000u64 {
            stats.record_ns(OpKind::Write, us * 1000);
        }
        stats
    }

    fn close(got: u64, want: u64) -> bool {
        // Three significant digits: within 0.1% (plus the bucket's rounding up).
        got.abs_diff(want) as f64 <= want as f64 * 0.001 + 1.0
    }

    #[test]
    fn a_known_distribution_gives_the_known_percentiles() {
        let stats = uniform_stats();
        let h = &stats.latency_us[OpKind::Write.index()];
        assert_eq!(h.len(), 10_000);
        for (percentile, want) in [(50.0, 5_000), (90.0, 9_000), (99.0, 9_900), (99.9, 9_990)] {
            let got = percentile_us(h, percentile);
            assert!(close(got, want), "p{percentile}: {got} vs {want}");
        }
        assert!(close(percentile_us(h, 100.0), 10_000));
        assert!(stats.latency_us[OpKind::Read.index()].is_empty());
    }

    #[test]
    fn a_bimodal_distribution_puts_the_tail_in_the_tail() {
        // 99% at 200 µs, 1% at 50 ms: p50 and p90 see the fast mode, p99.9 the slow one.
        let mut stats = Stats::new();
        for i in 0..100_000u64 {
            let us = if i % 100 == 0 { 50_000 } else { 200 };
            stats.record_ns(OpKind::Read, us * 1000);
        }
        let h = &stats.latency_us[OpKind::Read.index()];
        assert!(close(percentile_us(h, 50.0), 200));
        assert!(close(percentile_us(h, 98.9), 200));
        assert!(close(percentile_us(h, 99.5), 50_000));
        assert!(close(percentile_us(h, 99.9), 50_000));
    }

    #[test]
    fn nanoseconds_round_up_to_the_next_microsecond() {
        let mut stats = Stats::new();
        stats.record_ns(OpKind::Cas, 1);
        stats.record_ns(OpKind::Cas, 1000);
        stats.record_ns(OpKind::Cas, 1001);
        let h = &stats.latency_us[OpKind::Cas.index()];
        assert_eq!((h.min(), h.max()), (1, 2));
    }

    #[test]
    fn merging_connections_adds_counts_and_tallies() {
        let mut a = uniform_stats();
        let mut b = Stats::new();
        b.record_ns(OpKind::Read, 5_000);
        b.count_error("timeout");
        b.count_retry("not_leader");
        a.count_error("timeout");
        b.cas_mismatches = 2;
        a.merge(&b);
        assert_eq!(a.completed(), 10_001);
        assert_eq!(a.errors["timeout"], 2);
        assert_eq!(a.retries["not_leader"], 1);
        assert_eq!(a.cas_mismatches, 2);
        assert_eq!(a.all_us().len(), 10_001);
        assert_eq!(a.present().len(), 2);
    }

    #[test]
    fn percentile_distribution_is_in_hdrhistogram_text_format() {
        let stats = uniform_stats();
        let text = percentile_distribution(&stats.latency_us[OpKind::Write.index()]);
        let mut lines = text.lines();
        let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
        assert_eq!(
            header,
            ["Value", "Percentile", "TotalCount", "1/(1-Percentile)"]
        );
        assert_eq!(lines.next(), Some(""));
        let rows: Vec<Vec<f64>> = text
            .lines()
            .skip(2)
            .take_while(|l| !l.starts_with('#'))
            .map(|l| l.split_whitespace().map(|f| f.parse().unwrap()).collect())
            .collect();
        assert!(rows.len() > 20);
        // Values, percentiles and counts only grow; the last row is the max at 100%.
        for pair in rows.windows(2) {
            assert!(
                pair[1][0] >= pair[0][0] && pair[1][1] >= pair[0][1] && pair[1][2] >= pair[0][2]
            );
        }
        let last = rows.last().unwrap();
        assert_eq!((last[1], last[2], last.len()), (1.0, 10_000.0, 3));
        // The max is reported at the top of its bucket (10,000 µs shares one 8 µs wide).
        assert!(
            text.contains("#[Max     =       10.007, Total count    =        10000]"),
            "{text}"
        );
    }

    #[test]
    fn report_and_json_agree_on_rates_and_percentiles() {
        let stats = uniform_stats();
        let table = latency_table(&stats, 2_000_000_000);
        assert!(table
            .lines()
            .nth(1)
            .unwrap()
            .starts_with("write       10000       5000"));
        let summary = stats_json(&stats, 2_000_000_000);
        assert_eq!(summary["ops_per_second"], 5000.0);
        let p99 = summary["ops"]["write"]["latency"]["p99_ms"]
            .as_f64()
            .unwrap();
        assert!((p99 - 9.9).abs() < 0.02, "{p99}");
        assert_eq!(summary["ops"]["all"]["count"], 10_000);
    }
}
