//! SVG charts for the benchmark and training reports, drawn with `plotters`
//! (SVG backend, no font feature): small multiples of line charts over
//! linear or log axes, grouped bars, and an SDDP convergence chart.
//!
//! `plotters` without a font feature cannot measure text, so every layout
//! decision that depends on text size (tick density, label areas, legend
//! columns, wrapping) uses [`text_width`], a per-character estimate for a
//! DejaVu-Sans-like sans-serif (the widest common default; Helvetica and Arial
//! are narrower, so the estimate errs on the roomy side).
#![forbid(unsafe_code)]

use plotters::coord::ranged1d::{KeyPointHint, NoDefaultFormatting, Ranged, ValueFormatter};
use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use std::fmt;

/// A chart could not be drawn.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChartError(pub String);

impl fmt::Display for ChartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "chart: {}", self.0)
    }
}

impl std::error::Error for ChartError {}

impl<E: std::error::Error + Send + Sync> From<DrawingAreaErrorKind<E>> for ChartError {
    fn from(e: DrawingAreaErrorKind<E>) -> Self {
        ChartError(e.to_string())
    }
}

/// One named line of `(x, y)` points.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Legend label; the same name has the same colour in every panel.
    pub name: String,
    /// Points in drawing order; a point that has no place on an axis
    /// (non-finite, or non-positive on a log axis) is skipped and breaks the line.
    pub points: Vec<(f64, f64)>,
    /// Dashed (a reference such as a memcpy ceiling).
    pub dashed: bool,
}

/// Axis scale.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scale {
    /// Linear.
    Linear,
    /// Logarithmic.
    Log,
}

/// One panel of [`small_multiples`].
#[derive(Debug, Clone, PartialEq)]
pub struct Panel {
    /// Title above the panel (may be empty for a single panel).
    pub title: String,
    /// Lines of the panel.
    pub series: Vec<Series>,
}

// ---------------------------------------------------------------- numbers

/// Bytes in binary units: `8 B`, `64 B`, `1 KiB`, `1.5 KiB`, `256 KiB`, `4 MiB`, `1 GiB`.
#[must_use]
pub fn bytes(v: f64) -> String {
    if !v.is_finite() {
        return format!("{v}");
    }
    let sign = if v < 0.0 { "-" } else { "" };
    let a = v.abs();
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut i = 0;
    let mut m = a;
    while m >= 1024.0 * (1.0 - 1e-9) && i + 1 < UNITS.len() {
        m /= 1024.0;
        i += 1;
    }
    if i == 0 {
        return format!("{sign}{} B", a.round());
    }
    format!("{sign}{} {}", sig3(m), UNITS[i])
}

/// `m` with three significant digits, trailing zeros dropped (`m` in 1..1024).
fn sig3(m: f64) -> String {
    let decimals = if m >= 100.0 {
        0
    } else if m >= 10.0 {
        1
    } else {
        2
    };
    trim(format!("{m:.decimals$}"))
}

fn trim(s: String) -> String {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// A number in few characters: `0.25`, `1234`, `12.3k`, `4.5M`, `1.2e-4`.
#[must_use]
pub fn short(v: f64) -> String {
    compact(v, 1e4)
}

/// [`short`] with the k, M, G suffixes from `k_from` on.
fn compact(v: f64, k_from: f64) -> String {
    let a = v.abs();
    if !v.is_finite() || a == 0.0 {
        return if a == 0.0 { "0".into() } else { format!("{v}") };
    }
    if a < 1e-3 {
        return format!("{v:.1e}").replace(".0e", "e");
    }
    if a < k_from {
        let decimals = (2 - a.log10().floor() as i32).clamp(0, 6) as usize;
        return trim(format!("{v:.decimals$}"));
    }
    let sign = if v < 0.0 { "-" } else { "" };
    for (unit, suffix) in [(1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")] {
        if a >= unit * (1.0 - 1e-9) && a / unit < 999.5 {
            return format!("{sign}{}{suffix}", sig3(a / unit));
        }
    }
    format!("{v:.2e}")
}

/// Labels for ticks `step` apart: as many decimals as the step needs, in a
/// common unit (k, M, G) when the ticks are large.
fn step_labels(ticks: &[f64], step: f64) -> Vec<String> {
    let top = ticks.iter().fold(0.0f64, |m, t| m.max(t.abs()));
    let (unit, suffix) = [(1e12, "T"), (1e9, "G"), (1e6, "M"), (1e4, "k")]
        .into_iter()
        .find(|(u, _)| top >= *u)
        .map_or((1.0, ""), |(u, s)| (if s == "k" { 1e3 } else { u }, s));
    let s = step / unit;
    let decimals = (0..9usize)
        .find(|&d| {
            let scaled = s * 10f64.powi(d as i32);
            (scaled - scaled.round()).abs() < 1e-6 * scaled.max(1.0)
        })
        .unwrap_or(9);
    ticks
        .iter()
        .map(|&t| {
            if t.abs() < step * 1e-6 && !suffix.is_empty() {
                return "0".to_string();
            }
            let v = if t.abs() < step * 1e-6 { 0.0 } else { t / unit };
            format!("{v:.decimals$}{suffix}")
        })
        .collect()
}

// ---------------------------------------------------------------- text metrics

const FONT: &str = "sans-serif";
const INK: RGBColor = RGBColor(34, 34, 34);
const SOFT: RGBColor = RGBColor(110, 110, 110);
const GRID: RGBColor = RGBColor(226, 226, 226);
const TITLE_PX: f64 = 18.0;
const PANEL_TITLE_PX: f64 = 15.0;
const TICK_PX: f64 = 12.0;
const DESC_PX: f64 = 13.0;
const LEGEND_PX: f64 = 12.5;
const LEGEND_ROW: i32 = 19;
const SWATCH: i32 = 26;

/// Estimated width in pixels of `s` at font size `px`, for a sans-serif font
/// as wide as DejaVu Sans.
#[must_use]
pub fn text_width(s: &str, px: f64) -> f64 {
    s.chars()
        .map(|c| match c {
            'i' | 'j' | 'l' | '.' | ',' | ':' | ';' | '\'' | '!' | '|' | 'I' | '·' => 0.30,
            ' ' | 'f' | 't' | 'r' | '(' | ')' | '[' | ']' | '-' | '/' => 0.42,
            'm' | 'w' | 'M' | 'W' | '×' | '%' | '—' => 0.95,
            'A'..='Z' => 0.74,
            '0'..='9' | 'µ' => 0.64,
            _ => 0.63,
        })
        .sum::<f64>()
        * px
}

/// A text style whose SVG `font-size` is `px` (the SVG backend divides by 1.24).
fn font(px: f64) -> TextStyle<'static> {
    (FONT, px * 1.24).into_font().color(&INK)
}

fn anchored(px: f64, h: HPos, v: VPos) -> TextStyle<'static> {
    font(px).pos(Pos::new(h, v))
}

fn px(v: f64) -> i32 {
    v.round() as i32
}

// ---------------------------------------------------------------- colours and markers

const PALETTE: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(23, 190, 207),
    RGBColor(188, 189, 34),
    RGBColor(127, 127, 127),
];

/// Colours of dashed reference lines, kept apart from the data colours.
const REFERENCE: [RGBColor; 3] = [
    RGBColor(80, 80, 80),
    RGBColor(140, 86, 75),
    RGBColor(188, 189, 34),
];

#[derive(Clone, Copy)]
struct Look {
    colour: RGBColor,
    /// Circle, triangle, square or diamond; none on dashed or dense lines.
    marker: Option<usize>,
    dashed: bool,
}

/// The look of the `index`-th solid (or, if `dashed`, dashed) series.
fn look(index: usize, dashed: bool) -> Look {
    if dashed {
        Look {
            colour: REFERENCE[index % REFERENCE.len()],
            marker: None,
            dashed,
        }
    } else {
        Look {
            colour: PALETTE[index % PALETTE.len()],
            marker: Some(index % 4),
            dashed,
        }
    }
}

type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;

/// A marker centred on pixel `at`: circle, triangle, square or diamond.
fn marker(area: &Area<'_>, at: (i32, i32), l: Look) -> Result<(), ChartError> {
    let style = ShapeStyle::from(&l.colour).filled();
    let base = EmptyElement::at(at);
    match l.marker.unwrap_or(4) {
        4.. => {}
        0 => area.draw(&(base + Circle::new((0, 0), 3, style)))?,
        1 => area.draw(&(base + Polygon::new(vec![(0, -4), (4, 3), (-4, 3)], style)))?,
        2 => area.draw(&(base + Rectangle::new([(-3, -3), (3, 3)], style)))?,
        _ => area.draw(&(base + Polygon::new(vec![(0, -4), (4, 0), (0, 4), (-4, 0)], style)))?,
    }
    Ok(())
}

/// A polyline in pixels, solid or dashed.
fn polyline(area: &Area<'_>, pts: &[(i32, i32)], l: Look, width: u32) -> Result<(), ChartError> {
    let style = ShapeStyle::from(&l.colour).stroke_width(width);
    if !l.dashed {
        area.draw(&PathElement::new(pts.to_vec(), style))?;
        return Ok(());
    }
    // Dashes of 7 px with 5 px gaps, continued across vertices.
    let (dash, gap) = (7.0, 5.0);
    let mut phase = 0.0f64;
    for w in pts.windows(2) {
        let (a, b) = (
            (f64::from(w[0].0), f64::from(w[0].1)),
            (f64::from(w[1].0), f64::from(w[1].1)),
        );
        let len = ((b.0 - a.0).powi(2) + (b.1 - a.1).powi(2)).sqrt();
        let at = |t: f64| {
            (
                px(a.0 + (b.0 - a.0) * t / len),
                px(a.1 + (b.1 - a.1) * t / len),
            )
        };
        let mut t = 0.0;
        while t < len {
            let in_period = phase % (dash + gap);
            if in_period < dash {
                let end = (t + dash - in_period).min(len);
                area.draw(&PathElement::new(vec![at(t), at(end)], style))?;
                phase += end - t;
                t = end;
            } else {
                let end = (t + dash + gap - in_period).min(len);
                phase += end - t;
                t = end;
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------- axes

/// One axis: the range and ticks are in axis units (log10 of the value on a
/// log axis), labels are for the values.
struct Axis {
    scale: Scale,
    lo: f64,
    hi: f64,
    ticks: Vec<f64>,
    labels: Vec<String>,
}

fn to_axis(scale: Scale, v: f64) -> Option<f64> {
    match scale {
        Scale::Linear if v.is_finite() => Some(v),
        Scale::Log if v.is_finite() && v > 0.0 => Some(v.log10()),
        _ => None,
    }
}

struct AxisSpec<'a> {
    scale: Scale,
    /// Pixels along the axis.
    length: f64,
    horizontal: bool,
    /// Formatter of tick values; by default [`short`]-like on log axes,
    /// step-aware decimals on linear ones.
    labels: Option<&'a dyn Fn(f64) -> String>,
    /// Data are powers of two: binary ticks (1, 16, 256, 4 Ki, ...).
    binary: bool,
    /// Linear ticks only at integers.
    integer: bool,
}

impl<'a> AxisSpec<'a> {
    fn y(scale: Scale, length: f64) -> Self {
        AxisSpec {
            scale,
            length,
            horizontal: false,
            labels: None,
            binary: false,
            integer: false,
        }
    }

    fn x(scale: Scale, length: f64, labels: &'a dyn Fn(f64) -> String) -> Self {
        AxisSpec {
            horizontal: true,
            labels: Some(labels),
            ..AxisSpec::y(scale, length)
        }
    }
}

impl Axis {
    /// An axis over the axis-unit range `lo..=hi` (already padded).
    fn new(spec: &AxisSpec<'_>, (lo, hi): (f64, f64)) -> Axis {
        let candidates = match spec.scale {
            Scale::Log => log_candidates(lo, hi, spec.binary),
            Scale::Linear => linear_candidates(lo, hi, spec.integer),
        };
        let mut best: Option<(Vec<f64>, Vec<String>)> = None;
        for (ticks, step) in candidates {
            if ticks.is_empty() {
                continue;
            }
            let labels = label(spec, &ticks, step);
            let fits = fits(spec, lo, hi, &ticks, &labels);
            let enough = ticks.len() >= 2;
            let better = match &best {
                None => true,
                Some((b, _)) => b.len() < 2 && enough,
            };
            if fits && enough {
                best = Some((ticks, labels));
                break;
            }
            if better || fits {
                best = Some((ticks, labels));
            }
        }
        let (ticks, labels) = best.unwrap_or_default();
        Axis {
            scale: spec.scale,
            lo,
            hi,
            ticks,
            labels,
        }
    }

    fn widest_label(&self, px: f64) -> f64 {
        self.labels
            .iter()
            .map(|l| text_width(l, px))
            .fold(0.0, f64::max)
    }

    fn coord(&self) -> Ticked {
        Ticked {
            inner: (self.lo..self.hi).into(),
            ticks: self.ticks.clone(),
            labels: self.labels.clone(),
        }
    }

    fn value(&self, v: f64) -> Option<f64> {
        to_axis(self.scale, v)
    }
}

/// A plotters coordinate with our ticks and their labels (plotters' own
/// `with_key_points` loses the f64 label formatter).
struct Ticked {
    inner: RangedCoordf64,
    ticks: Vec<f64>,
    labels: Vec<String>,
}

impl Ranged for Ticked {
    type FormatOption = NoDefaultFormatting;
    type ValueType = f64;

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        self.inner.map(value, limit)
    }

    fn key_points<Hint: KeyPointHint>(&self, hint: Hint) -> Vec<f64> {
        if hint.weight().allow_light_points() {
            Vec::new()
        } else {
            self.ticks.clone()
        }
    }

    fn range(&self) -> std::ops::Range<f64> {
        self.inner.range()
    }
}

impl ValueFormatter<f64> for Ticked {
    fn format_ext(&self, value: &f64) -> String {
        let r = self.inner.range();
        let tol = (r.end - r.start).abs() * 1e-6;
        self.ticks
            .iter()
            .position(|t| (t - value).abs() <= tol)
            .and_then(|i| self.labels.get(i).cloned())
            .unwrap_or_default()
    }
}

fn label(spec: &AxisSpec<'_>, ticks: &[f64], step: f64) -> Vec<String> {
    let real = |t: f64| match spec.scale {
        Scale::Log => 10f64.powf(t),
        Scale::Linear => t,
    };
    match (spec.labels, spec.scale) {
        (Some(f), _) => ticks.iter().map(|&t| f(real(t))).collect(),
        (None, Scale::Log) => ticks.iter().map(|&t| compact(real(t), 1e3)).collect(),
        (None, Scale::Linear) => step_labels(ticks, step),
    }
}

/// Whether labels at `ticks` keep clear of each other.
fn fits(spec: &AxisSpec<'_>, lo: f64, hi: f64, ticks: &[f64], labels: &[String]) -> bool {
    let per_unit = spec.length / (hi - lo);
    ticks.windows(2).zip(labels.windows(2)).all(|(t, l)| {
        let room = (t[1] - t[0]) * per_unit;
        let need = if spec.horizontal {
            (text_width(&l[0], TICK_PX) + text_width(&l[1], TICK_PX)) / 2.0 + 14.0
        } else {
            TICK_PX * 2.2
        };
        room >= need
    }) && ticks.len() <= if spec.horizontal { 9 } else { 8 }
}

/// Tick sets for a log axis, densest first, in axis units (log10).
fn log_candidates(lo: f64, hi: f64, binary: bool) -> Vec<(Vec<f64>, f64)> {
    let mut out = Vec::new();
    let multiples = |step: f64| -> Vec<f64> {
        let first = (lo / step - 1e-9).ceil() as i64;
        let last = (hi / step + 1e-9).floor() as i64;
        (first..=last).map(|k| k as f64 * step).collect()
    };
    if binary {
        for s in [1.0, 2.0, 4.0, 10.0, 20.0, 30.0] {
            out.push((multiples(s * 2f64.log10()), 0.0));
        }
    }
    for mantissas in [
        &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0][..],
        &[1.0, 2.0, 5.0],
        &[1.0, 3.0],
    ] {
        let mut v = Vec::new();
        for d in (lo.floor() as i64 - 1)..=(hi.ceil() as i64) {
            for m in mantissas {
                let t = d as f64 + f64::log10(*m);
                if t >= lo - 1e-9 && t <= hi + 1e-9 {
                    v.push(t);
                }
            }
        }
        out.push((v, 0.0));
    }
    for s in [1.0, 2.0, 3.0, 5.0, 10.0] {
        out.push((multiples(s), 0.0));
    }
    // Very narrow ranges: linear steps within the range, densest first.
    if hi - lo < 0.3 {
        let (a, b) = (10f64.powf(lo), 10f64.powf(hi));
        for (ticks, step) in linear_candidates(a, b, false) {
            out.push((ticks.iter().map(|t| t.log10()).collect(), step));
        }
    }
    out
}

/// Tick sets for a linear axis with 1-2-2.5-5 steps, densest first.
fn linear_candidates(lo: f64, hi: f64, integer: bool) -> Vec<(Vec<f64>, f64)> {
    let span = hi - lo;
    if !(span > 0.0 && span.is_finite()) {
        return vec![(vec![lo], 1.0)];
    }
    let mut out = Vec::new();
    let mut mag = 10f64.powf((span / 30.0).log10().floor());
    for _ in 0..4 {
        for m in [1.0, 2.0, 2.5, 5.0] {
            let step = m * mag;
            if integer && (step < 1.0 || step.fract() != 0.0) {
                continue;
            }
            if step < span / 30.0 || step > span {
                continue;
            }
            let first = (lo / step - 1e-9).ceil() as i64;
            let last = (hi / step + 1e-9).floor() as i64;
            out.push(((first..=last).map(|k| k as f64 * step).collect(), step));
        }
        mag *= 10.0;
    }
    out
}

/// Axis-unit range of the values, padded by `pad` of the span on each side.
fn span_of(
    scale: Scale,
    values: impl Iterator<Item = f64>,
    pad: f64,
    with_zero: bool,
) -> Option<(f64, f64)> {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for a in values.filter_map(|v| to_axis(scale, v)) {
        lo = lo.min(a);
        hi = hi.max(a);
    }
    if !lo.is_finite() {
        return None;
    }
    let zero = with_zero && scale == Scale::Linear;
    if zero {
        lo = lo.min(0.0);
        hi = hi.max(0.0);
    }
    if hi - lo < 1e-12 {
        let d = match scale {
            Scale::Log => 0.3,
            Scale::Linear => (lo.abs() * 0.1).max(1.0),
        };
        return Some((lo - d, hi + d));
    }
    let p = (hi - lo) * pad;
    let lo = if zero && lo == 0.0 { 0.0 } else { lo - p };
    let hi = if zero && hi == 0.0 { 0.0 } else { hi + p };
    Some((lo, hi))
}

fn all_powers_of_two(values: impl Iterator<Item = f64>) -> bool {
    let mut any = false;
    for v in values.filter(|v| v.is_finite() && *v > 0.0) {
        any = true;
        let l = v.log2();
        if (l - l.round()).abs() > 1e-9 {
            return false;
        }
    }
    any
}

// ---------------------------------------------------------------- one plot

/// Pixel rectangle `(left, top, right, bottom)`.
type Rect = (i32, i32, i32, i32);

fn shift(r: Rect, dx: i32, dy: i32) -> Rect {
    (r.0 + dx, r.1 + dy, r.2 + dx, r.3 + dy)
}

/// Layout of one x/y plot inside a block of the figure.
#[derive(Clone, Copy)]
struct PlotBox {
    block: Rect,
    /// The plotting area (inside the axes).
    plot: Rect,
    x_area: i32,
    y_area: i32,
    right: i32,
    top: i32,
}

const X_AREA: i32 = 44;

impl PlotBox {
    /// Place axes in `block`: y labels of width `y_label_w`, an x label
    /// area of `x_area`, room on the right for half of the last x label.
    fn new(block: Rect, y_label_w: f64, x_area: i32, right: i32, top: i32) -> PlotBox {
        let y_area = px(y_label_w) + 12 + px(DESC_PX * 1.6);
        let plot = (
            block.0 + y_area,
            block.1 + top,
            block.2 - right,
            block.3 - x_area,
        );
        PlotBox {
            block,
            plot,
            x_area,
            y_area,
            right,
            top,
        }
    }

    /// The same box moved by `(dx, dy)` pixels.
    fn shift(&self, dx: i32, dy: i32) -> PlotBox {
        PlotBox {
            block: shift(self.block, dx, dy),
            plot: shift(self.plot, dx, dy),
            ..*self
        }
    }

    fn map(&self, x: &Axis, y: &Axis, p: (f64, f64)) -> (f64, f64) {
        let (l, t, r, b) = self.plot;
        (
            f64::from(l) + (p.0 - x.lo) / (x.hi - x.lo) * f64::from(r - l),
            f64::from(b) - (p.1 - y.lo) / (y.hi - y.lo) * f64::from(b - t),
        )
    }
}

/// Axes, grid, ticks and axis descriptions of `b`, drawn by plotters; the
/// returned chart maps data (axis units) to pixels.
fn draw_axes<'a, 'b>(
    root: &'a Area<'b>,
    b: &PlotBox,
    x: &Axis,
    y: &Axis,
    x_desc: &str,
    y_desc: &str,
    x_grid: bool,
) -> Result<ChartContext<'a, SVGBackend<'b>, Cartesian2d<Ticked, Ticked>>, ChartError> {
    let (l, t, r, bt) = b.block;
    let (w, h) = root.dim_in_pixel();
    let mut chart = ChartBuilder::on(root)
        .margin_top(t + b.top)
        .margin_left(l)
        .margin_right(w as i32 - r + b.right)
        .margin_bottom(h as i32 - bt)
        .x_label_area_size(b.x_area)
        .y_label_area_size(b.y_area)
        .build_cartesian_2d(x.coord(), y.coord())?;
    let mut mesh = chart.configure_mesh();
    mesh.x_label_style(font(TICK_PX))
        .y_label_style(font(TICK_PX))
        .axis_desc_style(font(DESC_PX))
        .bold_line_style(GRID)
        .axis_style(SOFT)
        .max_light_lines(0)
        .x_desc(x_desc)
        .y_desc(y_desc);
    if !x_grid {
        mesh.disable_x_mesh();
    }
    mesh.draw()?;
    Ok(chart)
}

// ---------------------------------------------------------------- legends

struct Entry<'s> {
    name: &'s str,
    look: Look,
    /// Drawn as a filled swatch (a band or a bar) instead of a line.
    fill: Option<RGBAColor>,
}

fn entry_width(e: &Entry<'_>) -> f64 {
    f64::from(SWATCH) + 7.0 + text_width(e.name, LEGEND_PX)
}

fn draw_entry(root: &Area<'_>, e: &Entry<'_>, at: (i32, i32)) -> Result<(), ChartError> {
    let (x, y) = at;
    if let Some(fill) = e.fill {
        root.draw(&Rectangle::new(
            [(x, y - 6), (x + SWATCH, y + 6)],
            ShapeStyle::from(&fill).filled(),
        ))?;
        if e.look.dashed {
            polyline(root, &[(x, y), (x + SWATCH, y)], e.look, 2)?;
        }
    } else {
        polyline(root, &[(x, y), (x + SWATCH, y)], e.look, 2)?;
        marker(root, (x + SWATCH / 2, y), e.look)?;
    }
    root.draw(&Text::new(
        e.name.to_string(),
        (x + SWATCH + 7, y),
        anchored(LEGEND_PX, HPos::Left, VPos::Center),
    ))?;
    Ok(())
}

/// Columns of a legend strip `width` wide: `(rows, column widths)`.
fn strip_layout(entries: &[Entry<'_>], width: f64) -> (usize, Vec<f64>) {
    let n = entries.len();
    if n == 0 {
        return (0, Vec::new());
    }
    for cols in (1..=n).rev() {
        let rows = n.div_ceil(cols);
        let cols = n.div_ceil(rows);
        let widths: Vec<f64> = (0..cols)
            .map(|c| {
                entries[c * rows..((c + 1) * rows).min(n)]
                    .iter()
                    .map(entry_width)
                    .fold(0.0, f64::max)
            })
            .collect();
        let total = widths.iter().sum::<f64>() + 22.0 * (cols as f64 - 1.0);
        if total <= width || cols == 1 {
            return (rows, widths);
        }
    }
    (n, vec![entries.iter().map(entry_width).fold(0.0, f64::max)])
}

fn strip_height(rows: usize) -> i32 {
    if rows == 0 {
        0
    } else {
        rows as i32 * LEGEND_ROW + 10
    }
}

/// A legend strip centred in `width` from `(left, top)`, column by column.
fn draw_strip(
    root: &Area<'_>,
    entries: &[Entry<'_>],
    left: i32,
    top: i32,
    width: f64,
) -> Result<(), ChartError> {
    let (rows, widths) = strip_layout(entries, width);
    if rows == 0 {
        return Ok(());
    }
    let total = widths.iter().sum::<f64>() + 22.0 * (widths.len() as f64 - 1.0);
    let mut x = f64::from(left) + ((width - total) / 2.0).max(0.0);
    for (c, w) in widths.iter().enumerate() {
        for (r, e) in entries.iter().skip(c * rows).take(rows).enumerate() {
            draw_entry(
                root,
                e,
                (px(x), top + 5 + LEGEND_ROW / 2 + r as i32 * LEGEND_ROW),
            )?;
        }
        x += w + 22.0;
    }
    Ok(())
}

/// A corner of `plot` where a one-column legend box clears every polyline,
/// if there is one.
fn free_corner(plot: Rect, lines: &[Vec<(f64, f64)>], entries: &[Entry<'_>]) -> Option<Rect> {
    let w = entries.iter().map(entry_width).fold(0.0, f64::max) + 16.0;
    let h = f64::from(LEGEND_ROW) * entries.len() as f64 + 10.0;
    let (l, t, r, b) = (
        f64::from(plot.0),
        f64::from(plot.1),
        f64::from(plot.2),
        f64::from(plot.3),
    );
    if w > 0.62 * (r - l) || h > 0.62 * (b - t) || entries.is_empty() {
        return None;
    }
    let inset = 6.0;
    let corners = [
        (l + inset, t + inset),
        (r - inset - w, t + inset),
        (r - inset - w, b - inset - h),
        (l + inset, b - inset - h),
    ];
    let clear = |x0: f64, y0: f64| {
        let (x1, y1) = (x0 + w, y0 + h);
        let inside = |p: (f64, f64)| {
            p.0 >= x0 - 5.0 && p.0 <= x1 + 5.0 && p.1 >= y0 - 5.0 && p.1 <= y1 + 5.0
        };
        lines.iter().all(|line| {
            line.iter().all(|&p| !inside(p))
                && line.windows(2).all(|s| {
                    let len = ((s[1].0 - s[0].0).powi(2) + (s[1].1 - s[0].1).powi(2)).sqrt();
                    let n = (len / 2.0).ceil().max(1.0) as usize;
                    (0..=n).all(|i| {
                        let f = i as f64 / n as f64;
                        !inside((
                            s[0].0 + (s[1].0 - s[0].0) * f,
                            s[0].1 + (s[1].1 - s[0].1) * f,
                        ))
                    })
                })
        })
    };
    corners
        .iter()
        .find(|(x, y)| clear(*x, *y))
        .map(|&(x, y)| (px(x), px(y), px(x + w), px(y + h)))
}

fn draw_box_legend(root: &Area<'_>, entries: &[Entry<'_>], rect: Rect) -> Result<(), ChartError> {
    root.draw(&Rectangle::new(
        [(rect.0, rect.1), (rect.2, rect.3)],
        ShapeStyle::from(&WHITE.mix(0.9)).filled(),
    ))?;
    root.draw(&Rectangle::new(
        [(rect.0, rect.1), (rect.2, rect.3)],
        ShapeStyle::from(&GRID).stroke_width(1),
    ))?;
    for (i, e) in entries.iter().enumerate() {
        draw_entry(
            root,
            e,
            (
                rect.0 + 8,
                rect.1 + 5 + LEGEND_ROW / 2 + i as i32 * LEGEND_ROW,
            ),
        )?;
    }
    Ok(())
}

// ---------------------------------------------------------------- figure

fn title(root: &Area<'_>, text: &str, x: i32, y: i32, size: f64) -> Result<(), ChartError> {
    let style = font(size).pos(Pos::new(HPos::Center, VPos::Top));
    root.draw(&Text::new(text.to_string(), (x, y), style))?;
    Ok(())
}

/// Draw into a new white `w`×`h` SVG document.
fn document(
    w: i32,
    h: i32,
    draw: impl FnOnce(&Area<'_>) -> Result<(), ChartError>,
) -> Result<String, ChartError> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (w.max(1) as u32, h.max(1) as u32))
            .into_drawing_area();
        root.fill(&WHITE)?;
        draw(&root)?;
        root.present()?;
    }
    Ok(svg)
}

// ---------------------------------------------------------------- small multiples

const CELL_W: f64 = 470.0;
const PLOT_BLOCK_H: i32 = 290;
const FIGURE_TITLE_H: i32 = 42;

/// A grid of line charts, one panel per entry of `panels`, sharing axis
/// labels and scales (each panel has its own ranges). The same series name
/// has the same colour and marker in every panel. Each panel's legend goes
/// in a corner of the panel that no line crosses, or in a strip under it.
///
/// # Errors
/// When plotters fails to draw (not expected with the SVG backend).
#[allow(clippy::too_many_arguments)]
pub fn small_multiples(
    title_text: &str,
    x_label: &str,
    y_label: &str,
    x_scale: Scale,
    y_scale: Scale,
    x_tick: fn(f64) -> String,
    panels: &[Panel],
) -> Result<String, ChartError> {
    // Colours by first appearance of a name.
    let mut names: Vec<(&str, bool)> = Vec::new();
    for s in panels.iter().flat_map(|p| p.series.iter()) {
        if !names.contains(&(s.name.as_str(), s.dashed)) {
            names.push((&s.name, s.dashed));
        }
    }
    let look_of = |s: &Series| {
        let same_kind = names.iter().filter(|n| n.1 == s.dashed);
        look(same_kind.take_while(|n| n.0 != s.name).count(), s.dashed)
    };
    let usable =
        |p: &(f64, f64)| to_axis(x_scale, p.0).is_some() && to_axis(y_scale, p.1).is_some();

    let widest = panels
        .iter()
        .flat_map(|p| p.series.iter())
        .map(|s| {
            entry_width(&Entry {
                name: &s.name,
                look: look(0, false),
                fill: None,
            })
        })
        .fold(0.0, f64::max);
    let cell_w = if panels.len() == 1 { 720.0 } else { CELL_W }.max(widest + 40.0);
    let n = panels.len().max(1);
    let cols = match n {
        1 => 1,
        2 | 4 => 2,
        _ => 3.min(n),
    };
    let rows = n.div_ceil(cols);
    let binary = all_powers_of_two(
        panels
            .iter()
            .flat_map(|p| p.series.iter())
            .flat_map(|s| s.points.iter().map(|p| p.0)),
    );
    let tick_fmt = |v: f64| x_tick(v);

    // Lay out every panel first: axes, legend placement, cell heights.
    struct Laid<'p> {
        title_h: i32,
        drawn: Vec<&'p Series>,
        plot: Option<(PlotBox, Axis, Axis)>,
        entries: Vec<Entry<'p>>,
        corner: Option<Rect>,
        strip_rows: usize,
    }
    let mut laid: Vec<Laid<'_>> = Vec::new();
    for p in panels {
        let title_h = if p.title.is_empty() { 0 } else { 26 };
        let drawn: Vec<&Series> = p
            .series
            .iter()
            .filter(|s| s.points.iter().any(usable))
            .collect();
        let entries: Vec<Entry<'_>> = drawn
            .iter()
            .map(|s| Entry {
                name: &s.name,
                look: look_of(s),
                fill: None,
            })
            .collect();
        let pts = || {
            drawn
                .iter()
                .flat_map(|s| s.points.iter().filter(|p| usable(p)))
        };
        let (Some((x0, x1)), Some((y0, y1))) = (
            span_of(x_scale, pts().map(|p| p.0), 0.04, false),
            span_of(y_scale, pts().map(|p| p.1), 0.06, y_scale == Scale::Linear),
        ) else {
            laid.push(Laid {
                title_h,
                drawn,
                plot: None,
                entries: Vec::new(),
                corner: None,
                strip_rows: 0,
            });
            continue;
        };
        let plot_h = f64::from(PLOT_BLOCK_H - X_AREA - 8);
        let y = Axis::new(&AxisSpec::y(y_scale, plot_h), (y0, y1));
        let block = (0, 0, px(cell_w), PLOT_BLOCK_H);
        let guess = PlotBox::new(block, y.widest_label(TICK_PX), X_AREA, 40, 8);
        let length = f64::from(guess.plot.2 - guess.plot.0);
        let spec = AxisSpec {
            binary,
            ..AxisSpec::x(x_scale, length, &tick_fmt)
        };
        let x = Axis::new(&spec, (x0, x1));
        let last = x.labels.last().map_or(0.0, |l| text_width(l, TICK_PX));
        let right = px((last / 2.0 + 8.0).max(18.0));
        let b = PlotBox::new(block, y.widest_label(TICK_PX), X_AREA, right, 8);
        let lines: Vec<Vec<(f64, f64)>> = drawn
            .iter()
            .flat_map(|s| runs(&s.points, &x, &y))
            .map(|run| run.into_iter().map(|p| b.map(&x, &y, p)).collect())
            .collect();
        let corner = free_corner(b.plot, &lines, &entries);
        let strip_rows = if corner.is_some() {
            0
        } else {
            strip_layout(&entries, cell_w - 20.0).0
        };
        laid.push(Laid {
            title_h,
            drawn,
            plot: Some((b, x, y)),
            entries,
            corner,
            strip_rows,
        });
    }
    let row_h: Vec<i32> = (0..rows)
        .map(|r| {
            laid.iter()
                .skip(r * cols)
                .take(cols)
                .map(|l| l.title_h + PLOT_BLOCK_H + strip_height(l.strip_rows) + 14)
                .max()
                .unwrap_or(PLOT_BLOCK_H)
        })
        .collect();
    let width = px(cell_w * cols as f64) + 20;
    let height = FIGURE_TITLE_H + row_h.iter().sum::<i32>() + 6;

    document(width, height, |root| {
        title(root, title_text, width / 2, 12, TITLE_PX)?;
        let mut top = FIGURE_TITLE_H;
        for (r, h) in row_h.iter().enumerate() {
            for c in 0..cols {
                let Some((p, l)) = panels.get(r * cols + c).zip(laid.get(r * cols + c)) else {
                    continue;
                };
                let left = 10 + px(cell_w * c as f64);
                if l.title_h > 0 {
                    let style = font(PANEL_TITLE_PX).pos(Pos::new(HPos::Center, VPos::Top));
                    root.draw(&Text::new(
                        p.title.clone(),
                        (left + px(cell_w / 2.0), top + 4),
                        style,
                    ))?;
                }
                let block_top = top + l.title_h;
                let Some((b, x, y)) = &l.plot else {
                    let block = (left, block_top, left + px(cell_w), block_top + PLOT_BLOCK_H);
                    let (pl, pt, pr, pb) = PlotBox::new(block, 20.0, X_AREA, 18, 8).plot;
                    root.draw(&Rectangle::new(
                        [(pl, pt), (pr, pb)],
                        ShapeStyle::from(&GRID).stroke_width(1),
                    ))?;
                    let style = font(DESC_PX)
                        .color(&SOFT)
                        .pos(Pos::new(HPos::Center, VPos::Center));
                    root.draw(&Text::new("no data", ((pl + pr) / 2, (pt + pb) / 2), style))?;
                    continue;
                };
                let placed = b.shift(left, block_top);
                let chart = draw_axes(root, &placed, x, y, x_label, y_label, true)?;
                // Dashed references first, so data lines sit on top.
                let mut order = l.drawn.clone();
                order.sort_by_key(|s| !s.dashed);
                for s in order {
                    let lk = look_of(s);
                    for run in runs(&s.points, x, y) {
                        let pix: Vec<(i32, i32)> =
                            run.iter().map(|p| chart.backend_coord(p)).collect();
                        polyline(root, &pix, lk, 2)?;
                        for &q in &pix {
                            marker(root, q, lk)?;
                        }
                    }
                }
                if let Some(rect) = l.corner {
                    draw_box_legend(root, &l.entries, shift(rect, left, block_top))?;
                } else {
                    draw_strip(
                        root,
                        &l.entries,
                        left + 10,
                        block_top + PLOT_BLOCK_H + 2,
                        cell_w - 20.0,
                    )?;
                }
            }
            top += h;
        }
        Ok(())
    })
}

/// The runs of consecutive usable points of `points`, in axis units.
fn runs(points: &[(f64, f64)], x: &Axis, y: &Axis) -> Vec<Vec<(f64, f64)>> {
    let mut out = vec![Vec::new()];
    for &(a, b) in points {
        match (x.value(a), y.value(b)) {
            (Some(u), Some(v)) => {
                if let Some(run) = out.last_mut() {
                    run.push((u, v));
                }
            }
            _ => out.push(Vec::new()),
        }
    }
    out.retain(|r| !r.is_empty());
    out
}

// ---------------------------------------------------------------- bars

/// Words of `s` wrapped into lines at most `width` pixels wide (a word
/// wider than that stays whole on its own line).
fn wrap(s: &str, width: f64, px_size: f64) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    for word in s.split_whitespace() {
        match lines.last_mut() {
            Some(line) if text_width(&format!("{line} {word}"), px_size) <= width => {
                line.push(' ');
                line.push_str(word);
            }
            _ => lines.push(word.to_string()),
        }
    }
    lines
}

/// Grouped bars: one group per category, one bar per series (the series'
/// `i`-th point's y is the value for category `i`; x is ignored). Non-finite
/// values are marked "n/a". Long category labels are wrapped, or turned
/// vertical when a single word does not fit its group.
///
/// # Errors
/// When plotters fails to draw (not expected with the SVG backend).
pub fn bars(
    title_text: &str,
    y_label: &str,
    categories: &[String],
    series: &[Series],
) -> Result<String, ChartError> {
    let n = categories.len().max(1);
    let per_group = series.len().max(1);
    let group_px = (per_group as f64 * 30.0 + 34.0).max(96.0);
    let value = |s: &Series, g: usize| s.points.get(g).map(|p| p.1).filter(|v| v.is_finite());
    let values: Vec<f64> = series
        .iter()
        .flat_map(|s| (0..n).filter_map(move |g| value(s, g)))
        .collect();
    let (y0, y1) = span_of(Scale::Linear, values.iter().copied(), 0.1, true).unwrap_or((0.0, 1.0));
    let plot_h = 300.0;
    let y = Axis::new(&AxisSpec::y(Scale::Linear, plot_h), (y0, y1));
    let y_w = y.widest_label(TICK_PX);
    let y_area = px(y_w) + 12 + px(DESC_PX * 1.6);
    let plot_w = group_px * n as f64;
    let width = (px(plot_w) + y_area + 50).max(560);

    // Category labels: wrapped lines, or vertical when a word is too wide.
    let room = group_px - 10.0;
    let wrapped: Vec<Vec<String>> = categories.iter().map(|c| wrap(c, room, TICK_PX)).collect();
    let vertical = wrapped
        .iter()
        .flatten()
        .any(|l| text_width(l, TICK_PX) > room);
    let label_h = if vertical {
        categories
            .iter()
            .map(|c| text_width(c, TICK_PX))
            .fold(0.0, f64::max)
            + 12.0
    } else {
        wrapped.iter().map(Vec::len).max().unwrap_or(1) as f64 * (TICK_PX * 1.3) + 10.0
    };
    let x_area = px(label_h);
    let entries: Vec<Entry<'_>> = series
        .iter()
        .enumerate()
        .map(|(i, s)| Entry {
            name: &s.name,
            look: look(i, false),
            fill: Some(look(i, false).colour.to_rgba()),
        })
        .collect();
    let legend_rows = if series.len() > 1 {
        strip_layout(&entries, f64::from(width) - 40.0).0
    } else {
        0
    };
    let legend_h = strip_height(legend_rows);
    let block_top = FIGURE_TITLE_H + legend_h;
    let height = block_top + px(plot_h) + 10 + x_area + 10;
    let x = Axis {
        scale: Scale::Linear,
        lo: 0.0,
        hi: n as f64,
        ticks: Vec::new(),
        labels: Vec::new(),
    };

    document(width, height, |root| {
        title(root, title_text, width / 2, 12, TITLE_PX)?;
        if legend_rows > 0 {
            draw_strip(
                root,
                &entries,
                20,
                FIGURE_TITLE_H - 4,
                f64::from(width) - 40.0,
            )?;
        }
        let b = PlotBox {
            block: (10, block_top, width, height - 10),
            plot: (
                10 + y_area,
                block_top + 10,
                width - 40,
                height - 10 - x_area,
            ),
            x_area,
            y_area,
            right: 40,
            top: 10,
        };
        let chart = draw_axes(root, &b, &x, &y, "", y_label, false)?;
        let pitch = 0.8 / per_group as f64;
        let bar_px =
            f64::from(chart.backend_coord(&(pitch, 0.0)).0 - chart.backend_coord(&(0.0, 0.0)).0);
        let value_px = TICK_PX * 0.92;
        let show_values = series
            .iter()
            .flat_map(|s| (0..n).filter_map(move |g| value(s, g)))
            .all(|v| text_width(&short(v), value_px) <= bar_px - 2.0);
        let base = 0f64.clamp(y.lo, y.hi);
        for (i, s) in series.iter().enumerate() {
            let colour = look(i, false).colour;
            for g in 0..n {
                let x0 = g as f64 + 0.1 + pitch * i as f64;
                let x1 = x0 + pitch * 0.9;
                let Some(v) = value(s, g) else {
                    let at = chart.backend_coord(&((x0 + x1) / 2.0, base));
                    let style = font(value_px)
                        .color(&SOFT)
                        .pos(Pos::new(HPos::Center, VPos::Bottom));
                    root.draw(&Text::new("n/a", (at.0, at.1 - 3), style))?;
                    continue;
                };
                let (a, c) = (
                    chart.backend_coord(&(x0, base)),
                    chart.backend_coord(&(x1, v)),
                );
                root.draw(&Rectangle::new([a, c], ShapeStyle::from(&colour).filled()))?;
                if show_values {
                    let (anchor, dy) = if v >= 0.0 {
                        (VPos::Bottom, -3)
                    } else {
                        (VPos::Top, 3)
                    };
                    let style = font(value_px).pos(Pos::new(HPos::Center, anchor));
                    root.draw(&Text::new(short(v), ((a.0 + c.0) / 2, c.1 + dy), style))?;
                }
            }
        }
        // Category labels under the axis.
        let axis_y = chart.backend_coord(&(0.0, y.lo)).1;
        for (g, lines) in wrapped.iter().enumerate() {
            let cx = chart.backend_coord(&(g as f64 + 0.5, y.lo)).0;
            if vertical {
                let style = font(TICK_PX)
                    .pos(Pos::new(HPos::Right, VPos::Center))
                    .transform(FontTransform::Rotate270);
                root.draw(&Text::new(categories[g].clone(), (cx, axis_y + 8), style))?;
            } else {
                for (k, line) in lines.iter().enumerate() {
                    let style = font(TICK_PX).pos(Pos::new(HPos::Center, VPos::Top));
                    root.draw(&Text::new(
                        line.clone(),
                        (cx, axis_y + 6 + px(k as f64 * TICK_PX * 1.3)),
                        style,
                    ))?;
                }
            }
        }
        Ok(())
    })
}

// ---------------------------------------------------------------- convergence

/// SDDP bounds per iteration from rows `(iteration, lower bound, upper-bound
/// mean, 95% CI half width)`: the lower bound, the upper-bound mean and its
/// confidence band. Non-finite values are left out (the band breaks there).
///
/// # Errors
/// When plotters fails to draw (not expected with the SVG backend).
pub fn convergence(
    title_text: &str,
    rows: &[(usize, f64, f64, f64)],
) -> Result<String, ChartError> {
    let (width, height) = (760, 440);
    let lb = Look {
        colour: RGBColor(36, 113, 163),
        marker: None,
        dashed: false,
    };
    let ub = Look {
        colour: RGBColor(192, 57, 43),
        marker: None,
        dashed: false,
    };
    let band = RGBColor(192, 57, 43).mix(0.18);
    let entries = [
        Entry {
            name: "lower bound",
            look: lb,
            fill: None,
        },
        Entry {
            name: "upper bound (mean)",
            look: ub,
            fill: None,
        },
        Entry {
            name: "upper bound 95% CI",
            look: ub,
            fill: Some(band),
        },
    ];
    let legend_h = strip_height(strip_layout(&entries, f64::from(width) - 40.0).0);
    let block = (10, FIGURE_TITLE_H + legend_h, width, height - 8);
    let xs = rows.iter().map(|r| r.0 as f64);
    let ys = rows.iter().flat_map(|r| {
        let ci = if r.3.is_finite() { r.3.abs() } else { 0.0 };
        [r.1, r.2 - ci, r.2 + ci]
    });
    let (x0, x1) = span_of(Scale::Linear, xs, 0.02, false).unwrap_or((0.0, 1.0));
    let (y0, y1) = span_of(Scale::Linear, ys, 0.06, false).unwrap_or((0.0, 1.0));
    let plot_h = f64::from(block.3 - block.1 - X_AREA - 8);
    let y = Axis::new(&AxisSpec::y(Scale::Linear, plot_h), (y0, y1));
    let guess = PlotBox::new(block, y.widest_label(TICK_PX), X_AREA, 24, 8);
    let int_fmt = |v: f64| format!("{}", v.round());
    let length = f64::from(guess.plot.2 - guess.plot.0);
    let spec = AxisSpec {
        integer: true,
        ..AxisSpec::x(Scale::Linear, length, &int_fmt)
    };
    let x = Axis::new(&spec, (x0, x1));
    let b = PlotBox::new(block, y.widest_label(TICK_PX), X_AREA, 24, 8);

    document(width, height, |root| {
        title(root, title_text, width / 2, 12, TITLE_PX)?;
        draw_strip(
            root,
            &entries,
            20,
            FIGURE_TITLE_H - 4,
            f64::from(width) - 40.0,
        )?;
        if rows.is_empty() {
            let style = font(DESC_PX)
                .color(&SOFT)
                .pos(Pos::new(HPos::Center, VPos::Center));
            root.draw(&Text::new("no data", (width / 2, height / 2), style))?;
            return Ok(());
        }
        let chart = draw_axes(root, &b, &x, &y, "iteration", "bound", true)?;
        // The band, one polygon per run of rows with a finite mean and CI.
        let mut run: Vec<(f64, f64, f64)> = Vec::new();
        let mut bands: Vec<Vec<(f64, f64, f64)>> = Vec::new();
        for r in rows {
            if r.2.is_finite() && r.3.is_finite() {
                run.push((r.0 as f64, r.2 - r.3.abs(), r.2 + r.3.abs()));
            } else if !run.is_empty() {
                bands.push(std::mem::take(&mut run));
            }
        }
        bands.push(run);
        for band_run in bands.iter().filter(|r| r.len() >= 2) {
            let mut outline: Vec<(i32, i32)> = band_run
                .iter()
                .map(|p| chart.backend_coord(&(p.0, p.2)))
                .collect();
            outline.extend(
                band_run
                    .iter()
                    .rev()
                    .map(|p| chart.backend_coord(&(p.0, p.1))),
            );
            root.draw(&Polygon::new(outline, ShapeStyle::from(&band).filled()))?;
        }
        for (lk, pick) in [(ub, 2usize), (lb, 1usize)] {
            let pts: Vec<(f64, f64)> = rows
                .iter()
                .map(|r| (r.0 as f64, if pick == 1 { r.1 } else { r.2 }))
                .collect();
            for segment in runs(&pts, &x, &y) {
                let pix: Vec<(i32, i32)> = segment.iter().map(|p| chart.backend_coord(p)).collect();
                polyline(root, &pix, lk, 2)?;
            }
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_labels() {
        let cases = [
            (8.0, "8 B"),
            (64.0, "64 B"),
            (1024.0, "1 KiB"),
            (1536.0, "1.5 KiB"),
            (262_144.0, "256 KiB"),
            (4_194_304.0, "4 MiB"),
            (1_073_741_824.0, "1 GiB"),
        ];
        for (v, s) in cases {
            assert_eq!(bytes(v), s);
        }
    }

    #[test]
    fn short_numbers() {
        assert_eq!(short(0.25), "0.25");
        assert_eq!(short(1234.0), "1234");
        assert_eq!(short(12_345.0), "12.3k");
        assert_eq!(short(4_500_000.0), "4.5M");
        assert_eq!(short(0.0), "0");
        assert_eq!(short(0.00012), "1.2e-4");
    }

    #[test]
    fn binary_ticks_do_not_crowd() {
        let f = |v: f64| bytes(v);
        let spec = AxisSpec {
            binary: true,
            ..AxisSpec::x(Scale::Log, 380.0, &f)
        };
        let a = Axis::new(&spec, (8f64.log10(), 16_777_216f64.log10()));
        assert!(a.ticks.len() >= 4 && a.ticks.len() <= 8, "{:?}", a.labels);
        assert!(a.labels.iter().all(|l| !l.contains('.')), "{:?}", a.labels);
    }

    #[test]
    fn documents_are_svg() {
        let s = |name: &str, pts: Vec<(f64, f64)>| Series {
            name: name.into(),
            points: pts,
            dashed: false,
        };
        let svg = small_multiples(
            "t <&>",
            "bytes",
            "µs",
            Scale::Log,
            Scale::Log,
            bytes,
            &[
                Panel {
                    title: "a".into(),
                    series: vec![s(
                        "x",
                        vec![(8.0, 1.0), (0.0, 2.0), (64.0, f64::NAN), (4096.0, 3.0)],
                    )],
                },
                Panel {
                    title: "empty".into(),
                    series: vec![s("x", vec![(0.0, 1.0)])],
                },
            ],
        )
        .expect("draws");
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("no data") && svg.contains("t &lt;&amp;&gt;"));
        let b = bars(
            "b",
            "y",
            &["one".into(), "two".into()],
            &[s("v", vec![(0.0, 1.0), (1.0, f64::NAN)])],
        )
        .expect("bars");
        assert!(b.contains("n/a"));
        let c = convergence(
            "c",
            &[
                (1, 1.0, 3.0, 0.5),
                (2, 1.5, 2.0, f64::NAN),
                (3, 1.8, 1.9, 0.1),
            ],
        )
        .expect("conv");
        assert!(c.contains("lower bound"));
        assert!(convergence("none", &[]).expect("empty").contains("no data"));
    }

    #[test]
    fn awkward_inputs_still_draw() {
        let s = |name: &str, pts: Vec<(f64, f64)>| Series {
            name: name.into(),
            points: pts,
            dashed: false,
        };
        let lin =
            |p: &[Panel]| small_multiples("t", "x", "y", Scale::Linear, Scale::Linear, short, p);
        assert!(lin(&[]).is_ok());
        let many: Vec<Series> = (0..14)
            .map(|i| {
                s(
                    &format!("series number {i} with a rather long name indeed"),
                    vec![(f64::from(i), -f64::from(i))],
                )
            })
            .collect();
        let extreme = vec![s(
            "e",
            vec![(1e300, 1e-300), (-1e300, f64::INFINITY), (2.0, 2.0)],
        )];
        for panels in [
            vec![Panel {
                title: "one point".into(),
                series: vec![s("p", vec![(3.0, 4.0)])],
            }],
            vec![Panel {
                title: "many".into(),
                series: many,
            }],
            vec![Panel {
                title: "extreme".into(),
                series: extreme,
            }],
        ] {
            let svg = lin(&panels).expect("draws");
            if let Ok(dir) = std::env::var("CHART_DUMP") {
                let name = format!("{dir}/{}.svg", panels[0].title.replace(' ', "_"));
                std::fs::write(name, &svg).expect("dump");
            }
            assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        }
        assert!(bars("b", "y", &[], &[]).is_ok());
        let nan = [
            (1, f64::NAN, f64::NAN, f64::NAN),
            (2, f64::NAN, f64::NAN, f64::NAN),
        ];
        assert!(convergence("c", &nan).is_ok());
    }

    #[test]
    fn linear_labels_carry_the_step() {
        assert_eq!(
            step_labels(&[12_340_000.0, 12_345_000.0], 5000.0),
            ["12.340M", "12.345M"]
        );
        assert_eq!(step_labels(&[0.0, 2.5, 5.0], 2.5), ["0.0", "2.5", "5.0"]);
        assert_eq!(step_labels(&[0.0, 20_000.0], 20_000.0), ["0", "20k"]);
    }
}
