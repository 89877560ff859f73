//! The latency-by-percentile plot as a standalone SVG, in the style of HdrHistogram's
//! plotter: the x axis is `1 / (1 - percentile)` on a log scale (labelled 0%, 90%, 99%, ...
//! 99.9999%), the y axis latency in milliseconds on a log scale, one line per operation kind.
//!
//! Written by hand rather than through a plotting crate: it is one polyline per series and a
//! few labels, and keeps the generator's dependencies to what it already had.

use std::fmt::Write as _;

use hdrhistogram::Histogram;

const WIDTH: f64 = 800.0;
const HEIGHT: f64 = 480.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 50.0;
/// Decades of the x axis: 0% ... 99.9999%.
const X_DECADES: f64 = 6.0;
const COLOURS: [&str; 4] = ["#1f77b4", "#d62728", "#2ca02c", "#555555"];

/// One line of the plot: a name and its histogram (microseconds).
pub struct Series<'a> {
    pub name: &'a str,
    pub latency_us: &'a Histogram<u64>,
}

/// The SVG document for `series` under `title`.
pub fn latency_plot(title: &str, series: &[Series<'_>]) -> String {
    let points: Vec<Vec<(f64, f64)>> = series.iter().map(|s| curve(s.latency_us)).collect();
    let all_ms = points.iter().flatten().map(|(_, ms)| *ms);
    let low_ms = all_ms.clone().fold(f64::INFINITY, f64::min).max(0.001);
    let high_ms = all_ms.fold(0.0, f64::max).max(low_ms * 10.0);
    let (y_low, y_high) = (low_ms.log10().floor(), high_ms.log10().ceil());
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let x_of = |decades: f64| LEFT + plot_w * decades.min(X_DECADES) / X_DECADES;
    let y_of = |ms: f64| TOP + plot_h * (1.0 - (ms.max(0.001).log10() - y_low) / (y_high - y_low));

    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="22" text-anchor="middle" font-size="14">{}</text>"#,
        WIDTH / 2.0,
        escape(title)
    );
    for decade in 0..=X_DECADES as u32 {
        let x = x_of(f64::from(decade));
        let label = percentile_label(decade);
        let _ = writeln!(
            svg,
            r##"<line x1="{x:.1}" y1="{TOP}" x2="{x:.1}" y2="{:.1}" stroke="#ddd"/><text x="{x:.1}" y="{:.1}" text-anchor="middle">{label}</text>"##,
            TOP + plot_h,
            TOP + plot_h + 18.0
        );
    }
    for exponent in y_low as i32..=y_high as i32 {
        let ms = 10f64.powi(exponent);
        let y = y_of(ms);
        let _ = writeln!(
            svg,
            r##"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{ms}</text>"##,
            LEFT + plot_w,
            LEFT - 6.0,
            y + 4.0
        );
    }
    let _ = writeln!(
        svg,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">percentile</text>"#,
        LEFT + plot_w / 2.0,
        HEIGHT - 8.0
    );
    let _ = writeln!(
        svg,
        r#"<text x="16" y="{:.1}" text-anchor="middle" transform="rotate(-90 16 {:.1})">latency (ms, log scale)</text>"#,
        TOP + plot_h / 2.0,
        TOP + plot_h / 2.0
    );
    for (i, (s, curve)) in series.iter().zip(&points).enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let path: Vec<String> = curve
            .iter()
            .map(|(decades, ms)| format!("{:.1},{:.1}", x_of(*decades), y_of(*ms)))
            .collect();
        let _ = writeln!(
            svg,
            r#"<polyline fill="none" stroke="{colour}" stroke-width="2" points="{}"/>"#,
            path.join(" ")
        );
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" fill="{colour}">{} (n={})</text>"#,
            LEFT + 10.0,
            TOP + 16.0 + 16.0 * i as f64,
            escape(s.name),
            s.latency_us.len()
        );
    }
    svg.push_str("</svg>\n");
    svg
}

/// `(log10(1 / (1 - quantile)), latency ms)` at HdrHistogram's quantile steps.
fn curve(histogram: &Histogram<u64>) -> Vec<(f64, f64)> {
    if histogram.is_empty() {
        return Vec::new();
    }
    histogram
        .iter_quantiles(5)
        .map(|step| {
            let q = step.quantile_iterated_to();
            let decades = if q >= 1.0 {
                X_DECADES
            } else {
                (1.0 / (1.0 - q)).log10()
            };
            (decades, step.value_iterated_to() as f64 / 1000.0)
        })
        .collect()
}

fn percentile_label(decade: u32) -> &'static str {
    ["0%", "90%", "99%", "99.9%", "99.99%", "99.999%", "99.9999%"][decade as usize]
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plot_has_one_line_per_series_and_percentile_ticks() {
        let mut fast = Histogram::<u64>::new(3).unwrap();
        let mut slow = Histogram::<u64>::new(3).unwrap();
        for us in 1..=1000 {
            fast.record(us).unwrap();
            slow.record(us * 100).unwrap();
        }
        let svg = latency_plot(
            "a <b> & c",
            &[
                Series {
                    name: "read",
                    latency_us: &fast,
                },
                Series {
                    name: "write",
                    latency_us: &slow,
                },
            ],
        );
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<polyline").count(), 2);
        for label in ["0%", "90%", "99%", "99.9%", "99.99%", "99.999%", "99.9999%"] {
            assert!(svg.contains(&format!(">{label}<")), "{label}");
        }
        assert!(svg.contains("a &lt;b&gt; &amp; c"));
        assert!(svg.contains("write (n=1000)"));
    }
}
