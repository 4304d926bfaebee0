//! Small self-contained SVG charts for the benchmark report: lines over a
//! (log) axis and grouped bars. Every point carries a `<title>` with its
//! value, so a reader (or a test) can check the plot against the tables.
#![forbid(unsafe_code)]

use std::fmt::Write as _;

const W: f64 = 760.0;
const H: f64 = 420.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 190.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 60.0;
const COLOURS: [&str; 8] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
];

/// One named line of `(x, y)` points.
pub struct Series {
    /// Legend label.
    pub name: String,
    /// Points; non-finite or (on a log axis) non-positive ones are skipped.
    pub points: Vec<(f64, f64)>,
    /// Dashed (a reference such as a ceiling).
    pub dashed: bool,
}

/// Axis scale.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Scale {
    /// Linear.
    Linear,
    /// Base-10 logarithmic.
    Log,
}

/// A line chart.
pub struct Lines<'a> {
    /// Title above the plot.
    pub title: &'a str,
    /// X axis label.
    pub x_label: &'a str,
    /// Y axis label.
    pub y_label: &'a str,
    /// X scale.
    pub x_scale: Scale,
    /// Y scale.
    pub y_scale: Scale,
    /// Format of an x tick value.
    pub x_tick: fn(f64) -> String,
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn usable(scale: Scale, v: f64) -> bool {
    v.is_finite() && (scale == Scale::Linear || v > 0.0)
}

fn to_axis(scale: Scale, v: f64) -> f64 {
    match scale {
        Scale::Linear => v,
        Scale::Log => v.log10(),
    }
}

/// Range of `values` on `scale`, padded so a flat series still shows.
fn range(scale: Scale, values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for v in values.filter(|&v| usable(scale, v)) {
        let a = to_axis(scale, v);
        lo = lo.min(a);
        hi = hi.max(a);
    }
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    match scale {
        Scale::Log => (lo.floor(), hi.ceil().max(lo.floor() + 1.0)),
        Scale::Linear => {
            let lo = lo.min(0.0);
            let span = (hi - lo).max(1e-12);
            (lo, hi + 0.08 * span)
        }
    }
}

/// Tick positions (axis units) between `lo` and `hi`.
fn ticks(scale: Scale, lo: f64, hi: f64) -> Vec<f64> {
    match scale {
        Scale::Log => {
            let step = ((hi - lo) / 8.0).ceil().max(1.0);
            let mut v = Vec::new();
            let mut t = lo;
            while t <= hi + 1e-9 {
                v.push(t);
                t += step;
            }
            v
        }
        Scale::Linear => {
            let raw = (hi - lo) / 5.0;
            let mag = 10f64.powf(raw.log10().floor());
            let step = [1.0, 2.0, 5.0, 10.0]
                .iter()
                .map(|m| m * mag)
                .find(|s| *s >= raw)
                .unwrap_or(raw);
            let mut v = Vec::new();
            let mut t = (lo / step).ceil() * step;
            while t <= hi + 1e-9 * step {
                v.push(t);
                t += step;
            }
            v
        }
    }
}

/// A number in few characters (three significant digits).
pub fn short(v: f64) -> String {
    let a = v.abs();
    if a == 0.0 {
        return "0".into();
    }
    if !(1e-4..1e6).contains(&a) {
        return format!("{v:.2e}");
    }
    let decimals = (2 - a.log10().floor() as i32).clamp(0, 6) as usize;
    let s = format!("{v:.decimals$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// Bytes as `8 B`, `4 KiB`, `64 MiB`.
pub fn bytes(v: f64) -> String {
    let v = v.round() as u64;
    if v >= 1 << 20 && v % (1 << 20) == 0 {
        format!("{} MiB", v >> 20)
    } else if v >= 1 << 10 && v % (1 << 10) == 0 {
        format!("{} KiB", v >> 10)
    } else {
        format!("{v} B")
    }
}

fn header(s: &mut String, title: &str) {
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="{W}" height="{H}" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="22" text-anchor="middle" font-size="15">{}</text>"#,
        LEFT + (W - LEFT - RIGHT) / 2.0,
        escape(title)
    );
}

fn legend(s: &mut String, i: usize, name: &str, dashed: bool) {
    let y = TOP + 10.0 + 18.0 * i as f64;
    let x = W - RIGHT + 15.0;
    let dash = if dashed {
        r#" stroke-dasharray="5,4""#
    } else {
        ""
    };
    let _ = writeln!(
        s,
        r#"<line x1="{x}" y1="{y}" x2="{}" y2="{y}" stroke="{}" stroke-width="2"{dash}/><text x="{}" y="{}">{}</text>"#,
        x + 22.0,
        COLOURS[i % COLOURS.len()],
        x + 28.0,
        y + 4.0,
        escape(name)
    );
}

impl Lines<'_> {
    /// The chart of `series` as an SVG document.
    #[must_use]
    pub fn render(&self, series: &[Series]) -> String {
        let all = || series.iter().flat_map(|s| s.points.iter());
        let (x0, x1) = range(self.x_scale, all().map(|p| p.0));
        let (y0, y1) = range(self.y_scale, all().map(|p| p.1));
        let px = |x: f64| LEFT + (to_axis(self.x_scale, x) - x0) / (x1 - x0) * (W - LEFT - RIGHT);
        let py =
            |y: f64| H - BOTTOM - (to_axis(self.y_scale, y) - y0) / (y1 - y0) * (H - TOP - BOTTOM);
        let mut s = String::new();
        header(&mut s, self.title);
        for t in ticks(self.x_scale, x0, x1) {
            let v = if self.x_scale == Scale::Log {
                10f64.powf(t)
            } else {
                t
            };
            let x = px(v);
            let _ = writeln!(
                s,
                r##"<line x1="{x:.1}" y1="{TOP}" x2="{x:.1}" y2="{}" stroke="#ddd"/><text x="{x:.1}" y="{}" text-anchor="middle">{}</text>"##,
                H - BOTTOM,
                H - BOTTOM + 16.0,
                escape(&(self.x_tick)(v))
            );
        }
        for t in ticks(self.y_scale, y0, y1) {
            let v = if self.y_scale == Scale::Log {
                10f64.powf(t)
            } else {
                t
            };
            let y = py(v);
            let _ = writeln!(
                s,
                r##"<line x1="{LEFT}" y1="{y:.1}" x2="{}" y2="{y:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" text-anchor="end">{}</text>"##,
                W - RIGHT,
                LEFT - 6.0,
                y + 4.0,
                short(v)
            );
        }
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}" text-anchor="middle">{}</text>"#,
            LEFT + (W - LEFT - RIGHT) / 2.0,
            H - 18.0,
            escape(self.x_label)
        );
        let _ = writeln!(
            s,
            r#"<text transform="translate(18,{}) rotate(-90)" text-anchor="middle">{}</text>"#,
            TOP + (H - TOP - BOTTOM) / 2.0,
            escape(self.y_label)
        );
        for (i, line) in series.iter().enumerate() {
            let colour = COLOURS[i % COLOURS.len()];
            let pts: Vec<(f64, f64)> = line
                .points
                .iter()
                .copied()
                .filter(|&(x, y)| usable(self.x_scale, x) && usable(self.y_scale, y))
                .collect();
            let path: Vec<String> = pts
                .iter()
                .map(|&(x, y)| format!("{:.1},{:.1}", px(x), py(y)))
                .collect();
            let dash = if line.dashed {
                r#" stroke-dasharray="5,4""#
            } else {
                ""
            };
            let _ = writeln!(
                s,
                r#"<polyline fill="none" stroke="{colour}" stroke-width="2"{dash} points="{}"/>"#,
                path.join(" ")
            );
            for &(x, y) in &pts {
                let _ = writeln!(
                    s,
                    r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{colour}"><title>{}: {} = {}</title></circle>"#,
                    px(x),
                    py(y),
                    escape(&line.name),
                    escape(&(self.x_tick)(x)),
                    short(y)
                );
            }
            legend(&mut s, i, &line.name, line.dashed);
        }
        s.push_str("</svg>\n");
        s
    }
}

/// Grouped bars: one group per category, one bar per series.
pub fn bars(title: &str, y_label: &str, categories: &[String], series: &[Series]) -> String {
    let (_, top) = range(
        Scale::Linear,
        series.iter().flat_map(|s| s.points.iter().map(|p| p.1)),
    );
    let mut s = String::new();
    header(&mut s, title);
    let plot_w = W - LEFT - RIGHT;
    let plot_h = H - TOP - BOTTOM;
    let y = |v: f64| H - BOTTOM - v / top * plot_h;
    for t in ticks(Scale::Linear, 0.0, top) {
        let _ = writeln!(
            s,
            r##"<line x1="{LEFT}" y1="{:.1}" x2="{}" y2="{:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" text-anchor="end">{}</text>"##,
            y(t),
            W - RIGHT,
            y(t),
            LEFT - 6.0,
            y(t) + 4.0,
            short(t)
        );
    }
    let _ = writeln!(
        s,
        r#"<text transform="translate(18,{}) rotate(-90)" text-anchor="middle">{}</text>"#,
        TOP + plot_h / 2.0,
        escape(y_label)
    );
    let group_w = plot_w / categories.len().max(1) as f64;
    let bar_w = group_w * 0.8 / series.len().max(1) as f64;
    for (g, cat) in categories.iter().enumerate() {
        let gx = LEFT + g as f64 * group_w;
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{}" text-anchor="middle">{}</text>"#,
            gx + group_w / 2.0,
            H - BOTTOM + 16.0,
            escape(cat)
        );
        for (i, line) in series.iter().enumerate() {
            let Some(&(_, v)) = line.points.get(g) else {
                continue;
            };
            if !v.is_finite() {
                continue;
            }
            let x = gx + group_w * 0.1 + i as f64 * bar_w;
            let _ = writeln!(
                s,
                r#"<rect x="{x:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="{}"><title>{}: {} = {}</title></rect>"#,
                y(v),
                bar_w * 0.92,
                (H - BOTTOM - y(v)).max(0.0),
                COLOURS[i % COLOURS.len()],
                escape(&line.name),
                escape(cat),
                short(v)
            );
        }
    }
    for (i, line) in series.iter().enumerate() {
        legend(&mut s, i, &line.name, false);
    }
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_point_is_drawn_with_its_value() {
        let chart = Lines {
            title: "t",
            x_label: "bytes",
            y_label: "µs",
            x_scale: Scale::Log,
            y_scale: Scale::Log,
            x_tick: bytes,
        };
        let svg = chart.render(&[Series {
            name: "shm <2>".into(),
            points: vec![(8.0, 0.25), (4096.0, 3.5), (1048576.0, 120.0), (0.0, 1.0)],
            dashed: false,
        }]);
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>\n"));
        assert_eq!(
            svg.matches("<circle").count(),
            3,
            "x = 0 has no place on a log axis"
        );
        for v in ["8 B = 0.25", "4 KiB = 3.5", "1 MiB = 120"] {
            assert!(svg.contains(v), "{v} missing");
        }
        assert!(svg.contains("shm &lt;2&gt;"));
        let b = bars(
            "m",
            "MB",
            &["shared".into(), "replicated".into()],
            &[Series {
                name: "node PSS".into(),
                points: vec![(0.0, 12.5), (1.0, 40.0)],
                dashed: false,
            }],
        );
        assert!(b.contains("shared = 12.5") && b.contains("replicated = 40"));
    }

    #[test]
    fn labels() {
        assert_eq!(bytes(8.0), "8 B");
        assert_eq!(bytes(65536.0), "64 KiB");
        assert_eq!(bytes(67108864.0), "64 MiB");
        assert_eq!(short(0.25), "0.25");
        assert_eq!(short(1234.0), "1234");
    }
}
