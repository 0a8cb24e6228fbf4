//! `fedsim plot`: one line per run of a metric from `metrics.jsonl`, or of the distribution (CDF) of
//! the per-client accuracies of the run's last federated evaluation, as an SVG.
//!
//! On a logarithmic y axis the bounds are ticks, so the ticks cover the data; the legend goes to a
//! corner of the plot that no curve crosses (or above the curves, with headroom on the y axis).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use plotters::prelude::*;

/// What to plot.
#[derive(Debug, Clone)]
pub(crate) struct PlotSpec {
    /// Run directories (each with a `metrics.jsonl`).
    pub(crate) runs: Vec<PathBuf>,
    /// Legend labels, one per run (default: the directory name).
    pub(crate) labels: Vec<String>,
    /// Metric on the y axis: any numeric key of `metrics.jsonl`.
    pub(crate) metric: String,
    /// x axis: `round`, `wall_s`, `virtual_time_s` (the `[system]` clock), `bytes` (uplink + downlink,
    /// cumulative) or `bytes_up` (cumulative).
    pub(crate) x: String,
    /// Logarithmic y axis.
    pub(crate) log_y: bool,
    /// Plot the CDF of the last federated evaluation's per-client accuracies instead of a metric.
    pub(crate) per_client: bool,
    /// Title (default: the metric).
    pub(crate) title: Option<String>,
    /// Output file (`.svg`).
    pub(crate) out: PathBuf,
}

/// One run's points.
pub(crate) fn series(run: &Path, metric: &str, x: &str) -> Result<Vec<(f64, f64)>> {
    let path = run.join("metrics.jsonl");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let mut out = Vec::new();
    let (mut up, mut down) = (0.0, 0.0);
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let v: serde_json::Value = serde_json::from_str(line)
            .with_context(|| format!("{} line {}: not JSON", path.display(), i + 1))?;
        let num = |k: &str| v.get(k).and_then(serde_json::Value::as_f64);
        up += num("bytes_up").unwrap_or(0.0);
        down += num("bytes_down").unwrap_or(0.0);
        let xv = match x {
            "round" => num("round"),
            "wall_s" => num("wall_s"),
            "virtual_time_s" => num("virtual_time_s"),
            "bytes" => Some(up + down),
            "bytes_up" => Some(up),
            other => {
                bail!("--x must be round, wall_s, virtual_time_s, bytes or bytes_up, got `{other}`")
            }
        };
        if let (Some(xv), Some(yv)) = (xv, num(metric))
            && yv.is_finite()
        {
            out.push((xv, yv));
        }
    }
    Ok(out)
}

/// One run's empirical CDF of its last federated evaluation's per-client accuracies (`client_evals`
/// in `summary.json`), as the corners of its step function: (accuracy, fraction of clients at or
/// below it).
pub(crate) fn client_cdf(run: &Path) -> Result<Vec<(f64, f64)>> {
    let path = run.join("summary.json");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let v: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{}: not JSON", path.display()))?;
    let mut acc: Vec<f64> = v
        .get("client_evals")
        .and_then(serde_json::Value::as_array)
        .map(|a| {
            a.iter()
                .filter(|e| e.get("samples").and_then(serde_json::Value::as_u64) > Some(0))
                .filter_map(|e| e.get("accuracy").and_then(serde_json::Value::as_f64))
                .filter(|a| a.is_finite())
                .collect()
        })
        .unwrap_or_default();
    acc.sort_by(f64::total_cmp);
    let n = acc.len() as f64;
    let mut out = Vec::with_capacity(2 * acc.len());
    for (i, &a) in acc.iter().enumerate() {
        out.push((a, i as f64 / n));
        out.push((a, (i + 1) as f64 / n));
    }
    Ok(out)
}

/// Size of the SVG in pixels.
const SIZE: (u32, u32) = (900, 560);

/// Refuses an output file `plot` would not write as its name says: only SVG is written.
fn check_output(out: &Path) -> Result<()> {
    let svg = out
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("svg"));
    if !svg {
        bail!(
            "{}: fedsim plot writes SVG only; name the output FILE.svg (convert it afterwards, \
             e.g. `rsvg-convert -o plot.png plot.svg`)",
            out.display()
        );
    }
    Ok(())
}

/// The chart layout shared by the real drawing and [`plot_area_px`].
fn chart_builder<'a, 'b, DB: DrawingBackend>(
    root: &'a DrawingArea<DB, plotters::coord::Shift>,
    title: &'b str,
) -> ChartBuilder<'a, 'b, DB> {
    let mut builder = ChartBuilder::on(root);
    builder
        .caption(title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(44)
        .y_label_area_size(70);
    builder
}

/// Width and height in pixels of the plotting area (inside the axes) of a chart titled `title`
/// (drawn into a throwaway string; the label areas have fixed sizes, so the data do not matter).
fn plot_area_px(title: &str) -> Result<(f64, f64)> {
    let mut svg = String::new();
    let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
    let chart = chart_builder(&root, title).build_cartesian_2d(0f64..1f64, 0f64..1f64)?;
    let (w, h) = chart.plotting_area().dim_in_pixel();
    Ok((f64::from(w), f64::from(h)))
}

/// A logarithmic y axis: bounds and ticks.
#[derive(Debug, Clone, PartialEq)]
struct LogAxis {
    /// Lower bound, the first tick (at most the smallest value).
    lo: f64,
    /// Upper bound, the last tick (at least the largest value).
    hi: f64,
    /// Ticks from `lo` to `hi`.
    ticks: Vec<f64>,
}

/// `m · 10^d`, rounded once (`3 · 10^-1` is the same `f64` as `0.3`).
fn scaled(m: f64, d: i32) -> f64 {
    if d >= 0 {
        m * 10f64.powi(d)
    } else {
        m / 10f64.powi(-d)
    }
}

/// The log axis for positive data in `[y0, y1]`: its bounds are ticks, so the ticks cover the data
/// (plotters' own log ticks are the powers of ten inside the range, which left data within one
/// decade without any tick and data between powers of ten outside the ticks). Ticks are powers of
/// ten when the data span at least three decades, else 1-2-5 steps, else 1…9 steps.
fn log_axis(y0: f64, y1: f64) -> LogAxis {
    let d0 = (y0.log10() + 1e-9).floor() as i32;
    let d1 = ((y1.log10() - 1e-9).ceil() as i32).max(d0 + 1);
    let decades = d1 - d0;
    if decades >= 3 {
        // At most 11 ticks: every k-th power of ten from 10^d0 until one reaches y1.
        let k = (decades + 9) / 10;
        let n = (decades + k - 1) / k;
        let ticks: Vec<f64> = (0..=n).map(|j| scaled(1.0, d0 + j * k)).collect();
        return LogAxis {
            lo: ticks[0],
            hi: ticks[ticks.len() - 1],
            ticks,
        };
    }
    let grids: [&[f64]; 2] = [
        &[1.0, 2.0, 5.0],
        &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0],
    ];
    let mut ticks = Vec::new();
    for grid in grids {
        let all: Vec<f64> = (d0..=d1)
            .flat_map(|d| grid.iter().map(move |&m| scaled(m, d)))
            .collect();
        let first = all.iter().rposition(|&v| v <= y0).unwrap_or(0);
        let last = all
            .iter()
            .position(|&v| v >= y1)
            .unwrap_or(all.len() - 1)
            .max(first);
        ticks = all[first..=last].to_vec();
        if ticks.len() >= 4 {
            break;
        }
    }
    LogAxis {
        lo: ticks[0],
        hi: ticks[ticks.len() - 1],
        ticks,
    }
}

/// A corner of the plotting area.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Corner {
    LowerRight,
    UpperRight,
    UpperLeft,
    LowerLeft,
}

impl Corner {
    /// In the order tried.
    const ALL: [Corner; 4] = [
        Corner::LowerRight,
        Corner::UpperRight,
        Corner::UpperLeft,
        Corner::LowerLeft,
    ];

    fn position(self) -> SeriesLabelPosition {
        match self {
            Corner::LowerRight => SeriesLabelPosition::LowerRight,
            Corner::UpperRight => SeriesLabelPosition::UpperRight,
            Corner::UpperLeft => SeriesLabelPosition::UpperLeft,
            Corner::LowerLeft => SeriesLabelPosition::LowerLeft,
        }
    }

    /// The legend's box in this corner, in unit coordinates (x right, y up): `[x0, x1] × [y0, y1]`.
    fn rect(self, (w, h): (f64, f64)) -> [f64; 4] {
        let (x0, x1) = match self {
            Corner::LowerLeft | Corner::UpperLeft => (0.0, w),
            _ => (1.0 - w, 1.0),
        };
        let (y0, y1) = match self {
            Corner::LowerLeft | Corner::LowerRight => (0.0, h),
            _ => (1.0 - h, 1.0),
        };
        [x0, x1, y0, y1]
    }
}

/// The legend's size in pixels, its margin to the plot's edge included: plotters' layout (12 px
/// labels, a 30 px line sample, 10 px margins, 5 px from the edge) with generous text metrics, since
/// the viewer's font may be wider than plotters' estimate.
fn legend_px(labels: &[String]) -> (f64, f64) {
    let chars = labels.iter().map(|l| l.chars().count()).max().unwrap_or(0);
    // Text, line sample, margins, distance to the edge, and 8 px of clearance to the curves.
    let w = 7.0 * chars as f64 + 30.0 + 20.0 + 5.0 + 8.0;
    let h = 15.0 * labels.len() as f64 + 20.0 + 5.0 + 8.0;
    (w, h)
}

/// Whether the segment `a`–`b` meets the rectangle `[x0, x1] × [y0, y1]` (Liang–Barsky clipping).
fn segment_meets(a: (f64, f64), b: (f64, f64), [x0, x1, y0, y1]: [f64; 4]) -> bool {
    let (dx, dy) = (b.0 - a.0, b.1 - a.1);
    let (mut t0, mut t1) = (0.0f64, 1.0f64);
    for (p, q) in [
        (-dx, a.0 - x0),
        (dx, x1 - a.0),
        (-dy, a.1 - y0),
        (dy, y1 - a.1),
    ] {
        if p == 0.0 {
            if q < 0.0 {
                return false;
            }
        } else {
            let t = q / p;
            if p < 0.0 {
                t0 = t0.max(t);
            } else {
                t1 = t1.min(t);
            }
            if t0 > t1 {
                return false;
            }
        }
    }
    true
}

/// The first corner (lower right, upper right, upper left, lower left) where a legend of `size`
/// (a fraction of the plotting area's width and height) meets none of the curves, given in unit
/// coordinates; `None` when every corner is crossed.
fn legend_corner(curves: &[Vec<(f64, f64)>], size: (f64, f64)) -> Option<Corner> {
    Corner::ALL.into_iter().find(|c| {
        let r = c.rect(size);
        !curves.iter().any(|p| match p.as_slice() {
            [] => false,
            [one] => segment_meets(*one, *one, r),
            _ => p.windows(2).any(|s| segment_meets(s[0], s[1], r)),
        })
    })
}

/// Draws the plot.
pub(crate) fn plot(spec: &PlotSpec) -> Result<()> {
    if spec.runs.is_empty() {
        bail!("give at least one run directory");
    }
    check_output(&spec.out)?;
    let mut all = Vec::new();
    for (i, run) in spec.runs.iter().enumerate() {
        let mut pts = if spec.per_client {
            client_cdf(run)?
        } else {
            series(run, &spec.metric, &spec.x)?
        };
        if spec.log_y {
            pts.retain(|&(_, y)| y > 0.0);
        }
        if pts.is_empty() && spec.per_client {
            eprintln!(
                "warning: {} has no per-client accuracies (summary.json `client_evals`: set eval.federated)",
                run.display()
            );
        } else if pts.is_empty() {
            eprintln!(
                "warning: {} has no {}values of `{}`",
                run.display(),
                if spec.log_y { "positive " } else { "" },
                spec.metric
            );
        }
        let label = spec
            .labels
            .get(i)
            .cloned()
            .unwrap_or_else(|| default_label(&spec.runs, i));
        all.push((label, pts));
    }
    let (mut x0, mut x1, mut y0, mut y1) = (
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::INFINITY,
        f64::NEG_INFINITY,
    );
    for &(x, y) in all.iter().flat_map(|(_, p)| p.iter()) {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    let y_desc = if spec.per_client {
        "fraction of clients"
    } else {
        spec.metric.as_str()
    };
    if !x0.is_finite() {
        bail!("no data points of `{y_desc}` in the given runs");
    }
    if x1 <= x0 {
        x1 = x0 + 1.0;
    }
    if y1 <= y0 {
        y1 = y0 + 1e-9_f64.max(y0.abs() * 0.01);
    }
    let log_axis = spec.log_y.then(|| log_axis(y0, y1));
    if let Some(a) = &log_axis {
        (y0, y1) = (a.lo, a.hi);
    }
    let title = spec.title.clone().unwrap_or_else(|| {
        if spec.per_client {
            "per-client accuracy (last federated evaluation)".into()
        } else {
            spec.metric.clone()
        }
    });

    // The legend goes to a corner no curve crosses; when there is none, the y axis gets headroom
    // above the data for it.
    let unit_y = |y: f64, top: f64| {
        if spec.log_y {
            (y.ln() - y0.ln()) / (top.ln() - y0.ln())
        } else {
            (y - y0) / (top - y0)
        }
    };
    let curves: Vec<Vec<(f64, f64)>> = all
        .iter()
        .map(|(_, p)| {
            p.iter()
                .map(|&(x, y)| ((x - x0) / (x1 - x0), unit_y(y, y1)))
                .collect()
        })
        .collect();
    let labels: Vec<String> = all.iter().map(|(l, _)| l.clone()).collect();
    let (area_w, area_h) = plot_area_px(&title)?;
    let (legend_w, legend_h) = legend_px(&labels);
    let size = (legend_w / area_w, (legend_h / area_h).min(0.9));
    let corner = match legend_corner(&curves, size) {
        Some(c) => c,
        None => {
            // Stretch the axis so the data end below the legend's box: (y1 - y0) / (1 - h).
            y1 = if spec.log_y {
                (y0.ln() + (y1.ln() - y0.ln()) / (1.0 - size.1)).exp()
            } else {
                y0 + (y1 - y0) / (1.0 - size.1)
            };
            Corner::UpperRight
        }
    };

    let root = SVGBackend::new(&spec.out, SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let x_label = match spec.x.as_str() {
        _ if spec.per_client => "client accuracy",
        "round" => "round",
        "wall_s" => "wall time (s)",
        "virtual_time_s" => "virtual time (s)",
        "bytes" => "bytes sent (up + down)",
        _ => "bytes sent (up)",
    };
    let colors = [
        RGBColor(31, 119, 180),
        RGBColor(255, 127, 14),
        RGBColor(44, 160, 44),
        RGBColor(214, 39, 40),
        RGBColor(148, 103, 189),
        RGBColor(140, 86, 75),
        RGBColor(227, 119, 194),
        RGBColor(127, 127, 127),
        RGBColor(188, 189, 34),
        RGBColor(23, 190, 207),
    ];
    let mut builder = chart_builder(&root, &title);
    macro_rules! draw {
        ($chart:expr) => {{
            let mut chart = $chart;
            chart
                .configure_mesh()
                .x_desc(x_label)
                .y_desc(y_desc)
                .x_label_formatter(&|v| tick_label(*v))
                .y_label_formatter(&|v| tick_label(*v))
                .draw()?;
            for (i, (label, p)) in all.iter().enumerate() {
                let c = colors[i % colors.len()];
                chart
                    .draw_series(LineSeries::new(p.iter().copied(), c.stroke_width(2)))?
                    .label(label.clone())
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 18, y)], c.stroke_width(2))
                    });
            }
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK)
                .position(corner.position())
                .draw()?;
        }};
    }
    match log_axis {
        Some(a) => draw!(
            builder.build_cartesian_2d(x0..x1, (y0..y1).log_scale().with_key_points(a.ticks))?
        ),
        None => draw!(builder.build_cartesian_2d(x0..x1, y0..y1)?),
    }
    root.present()
        .with_context(|| format!("writing {}", spec.out.display()))?;
    println!("wrote {}", spec.out.display());
    Ok(())
}

/// The legend label of run `i` without `--label`: its path after the directories all runs share
/// (`runs/fedau/{fedau,mifa}/seed1` → `fedau/seed1`, `mifa/seed1`), or its last component alone.
fn default_label(runs: &[PathBuf], i: usize) -> String {
    let parts = |p: &PathBuf| -> Vec<String> {
        p.components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect()
    };
    let all: Vec<Vec<String>> = runs.iter().map(parts).collect();
    let mine = &all[i];
    let common = (0..mine.len())
        .take_while(|&k| all.iter().all(|p| p.get(k) == mine.get(k)))
        .count();
    let rest = &mine[common.min(mine.len().saturating_sub(1))..];
    if rest.is_empty() {
        runs[i].display().to_string()
    } else {
        rest.join("/")
    }
}

/// An axis tick without floating-point noise: at most 4 significant digits, trailing zeros dropped,
/// scientific notation for very small or large magnitudes ("1e-5", not "9.999999998e-6"; "500", not
/// "500.0").
fn tick_label(v: f64) -> String {
    if v == 0.0 || !v.is_finite() {
        return if v == 0.0 { "0".into() } else { v.to_string() };
    }
    let a = v.abs();
    if !(1e-3..1e6).contains(&a) {
        let s = format!("{v:.3e}");
        let (mantissa, exp) = s.split_once('e').unwrap_or((&s, "0"));
        let mantissa = mantissa.trim_end_matches('0').trim_end_matches('.');
        return format!("{mantissa}e{exp}");
    }
    let decimals = (3 - a.log10().floor() as i32).max(0) as usize;
    let s = format!("{v:.decimals$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use plotters::coord::ranged1d::{BoldPoints, Ranged};

    #[test]
    fn default_labels_drop_the_shared_directories() {
        let runs: Vec<PathBuf> = ["runs/a/fedau/seed1", "runs/a/mifa/seed1"]
            .iter()
            .map(PathBuf::from)
            .collect();
        assert_eq!(default_label(&runs, 0), "fedau/seed1");
        assert_eq!(default_label(&runs, 1), "mifa/seed1");
        let one = vec![PathBuf::from("runs/x/seed3")];
        assert_eq!(default_label(&one, 0), "seed3");
    }

    #[test]
    fn tick_labels_have_no_float_noise() {
        assert_eq!(tick_label(9.999999998e-5), "1e-4");
        assert_eq!(tick_label(1e-7), "1e-7");
        assert_eq!(tick_label(2.5e-7), "2.5e-7");
        assert_eq!(tick_label(500.0), "500");
        assert_eq!(tick_label(0.85), "0.85");
        assert_eq!(tick_label(0.30000000000000004), "0.3");
        assert_eq!(tick_label(0.0), "0");
        assert_eq!(tick_label(2_000_000.0), "2e6");
        assert_eq!(tick_label(-0.125), "-0.125");
    }

    #[test]
    fn log_ticks_cover_the_data() {
        for (y0, y1) in [
            (0.2, 0.5),
            (0.003, 0.04),
            (0.95, 0.97),
            (0.3, 3.0),
            (1e-7, 0.9),
            (0.01, 1.0),
            (2.5e-5, 2.5e-5 * 1.01),
            (1e-30, 1e10),
            (7.0, 7000.0),
        ] {
            let axis = log_axis(y0, y1);
            // The ticks plotters draws for the axis `plot` builds.
            let coord = (axis.lo..axis.hi)
                .log_scale()
                .with_key_points(axis.ticks.clone());
            let ticks = coord.key_points(BoldPoints(10));
            assert!(ticks.len() >= 2, "[{y0}, {y1}]: ticks {ticks:?}");
            assert!(ticks.len() <= 12, "[{y0}, {y1}]: ticks {ticks:?}");
            assert!(ticks[0] <= y0, "[{y0}, {y1}]: first tick {}", ticks[0]);
            assert!(
                ticks[ticks.len() - 1] >= y1,
                "[{y0}, {y1}]: ticks {ticks:?}"
            );
            let range = coord.range();
            assert!(range.start <= ticks[0] && ticks[ticks.len() - 1] <= range.end);
            assert!(ticks.windows(2).all(|w| w[0] < w[1]), "{ticks:?}");
        }
        assert_eq!(log_axis(0.2, 0.5).ticks, vec![0.2, 0.3, 0.4, 0.5]);
        assert_eq!(
            log_axis(0.003, 0.04).ticks,
            vec![0.002, 0.005, 0.01, 0.02, 0.05]
        );
    }

    #[test]
    fn only_svg_output_is_accepted() {
        assert!(check_output(Path::new("a/b.svg")).is_ok());
        assert!(check_output(Path::new("B.SVG")).is_ok());
        for bad in ["x.png", "x.pdf", "plot", "x.svg.png"] {
            let e = check_output(Path::new(bad)).unwrap_err().to_string();
            assert!(e.contains("SVG only") && e.contains(bad), "{e}");
        }
    }

    /// The points of the SVG's polylines drawn 2 px wide (curves and legend samples), and the
    /// legend's frame `[x0, x1, y0, y1]` (the black-bordered rectangle).
    fn curves_and_legend(svg: &str) -> (Vec<Vec<(f64, f64)>>, [f64; 4]) {
        let attr = |el: &str, name: &str| -> Option<String> {
            let start = el.find(&format!(" {name}=\""))? + name.len() + 3;
            Some(el[start..].split('"').next()?.to_string())
        };
        let num = |el: &str, name: &str| attr(el, name).unwrap().parse::<f64>().unwrap();
        let mut curves = Vec::new();
        let mut legend = None;
        for el in svg.split('<') {
            if el.starts_with("polyline") && attr(el, "stroke-width").as_deref() == Some("2") {
                let pts = attr(el, "points").unwrap();
                curves.push(
                    pts.split_whitespace()
                        .map(|p| {
                            let (x, y) = p.split_once(',').unwrap();
                            (x.parse().unwrap(), y.parse().unwrap())
                        })
                        .collect(),
                );
            }
            if el.starts_with("rect") && attr(el, "stroke").as_deref() == Some("#000000") {
                let (x, y) = (num(el, "x"), num(el, "y"));
                legend = Some([x, x + num(el, "width"), y, y + num(el, "height")]);
            }
        }
        (curves, legend.expect("a legend"))
    }

    /// Writes runs with the given metric values, plots them and checks that no curve crosses the
    /// legend.
    fn legend_clear_of(runs: &[Vec<f64>], log_y: bool) {
        let tmp = tempfile::tempdir().unwrap();
        let mut dirs = Vec::new();
        for (k, values) in runs.iter().enumerate() {
            let dir = tmp.path().join(format!("run{k}"));
            std::fs::create_dir_all(&dir).unwrap();
            let lines: Vec<String> = values
                .iter()
                .enumerate()
                .map(|(i, v)| format!("{{\"round\": {}, \"train_loss\": {v}}}", i + 1))
                .collect();
            std::fs::write(dir.join("metrics.jsonl"), lines.join("\n")).unwrap();
            dirs.push(dir);
        }
        let out = tmp.path().join("plot.svg");
        plot(&PlotSpec {
            runs: dirs,
            labels: vec![],
            metric: "train_loss".into(),
            x: "round".into(),
            log_y,
            per_client: false,
            title: None,
            out: out.clone(),
        })
        .unwrap();
        let (lines, legend) = curves_and_legend(&std::fs::read_to_string(&out).unwrap());
        // Legend samples are 2-point strokes; curves have one point per round.
        let curves: Vec<_> = lines.iter().filter(|p| p.len() > 2).collect();
        assert_eq!(curves.len(), runs.len());
        for c in curves {
            for s in c.windows(2) {
                assert!(
                    !segment_meets(s[0], s[1], legend),
                    "segment {s:?} crosses the legend {legend:?} (log_y {log_y})"
                );
            }
        }
    }

    #[test]
    fn per_client_accuracies_plot_as_a_cdf() {
        let tmp = tempfile::tempdir().unwrap();
        let run = tmp.path().join("run");
        std::fs::create_dir(&run).unwrap();
        // Client 2 has no test samples: left out, as in the run's statistics.
        std::fs::write(
            run.join("summary.json"),
            r#"{"client_evals": [
                {"client": 0, "samples": 10, "accuracy": 0.9, "loss": 0.1},
                {"client": 1, "samples": 5, "accuracy": 0.5, "loss": 0.7},
                {"client": 2, "samples": 0, "accuracy": 0.0, "loss": 0.0}]}"#,
        )
        .unwrap();
        assert_eq!(
            client_cdf(&run).unwrap(),
            [(0.5, 0.0), (0.5, 0.5), (0.9, 0.5), (0.9, 1.0)]
        );
        let out = tmp.path().join("cdf.svg");
        plot(&PlotSpec {
            runs: vec![run],
            labels: vec![],
            metric: String::new(),
            x: "round".into(),
            log_y: false,
            per_client: true,
            title: None,
            out: out.clone(),
        })
        .unwrap();
        let svg = std::fs::read_to_string(&out).unwrap();
        assert!(svg.contains("client accuracy") && svg.contains("fraction of clients"));
    }

    #[test]
    fn the_legend_does_not_cover_the_curves() {
        let falling = |a: f64| {
            (0..30)
                .map(|i| a * 0.9f64.powi(i) + 0.01)
                .collect::<Vec<f64>>()
        };
        let rising = |a: f64| {
            (0..30)
                .map(|i| a - a * 0.9f64.powi(i))
                .collect::<Vec<f64>>()
        };
        // Falling losses end in the lower right corner (where the legend used to be).
        legend_clear_of(&[falling(2.0), falling(1.5)], false);
        legend_clear_of(&[falling(2.0), falling(1.5)], true);
        legend_clear_of(&[rising(0.9), rising(0.8)], false);
        // A curve through all four corners: the legend goes above it.
        let zigzag: Vec<f64> = (0..30)
            .map(|i| if i % 2 == 0 { 1.0 } else { 0.1 })
            .collect();
        legend_clear_of(&[zigzag.clone(), falling(0.5)], false);
        legend_clear_of(&[zigzag, falling(0.5)], true);
    }

    #[test]
    fn a_legend_goes_to_a_free_corner() {
        let size = (0.2, 0.2);
        let falling = vec![vec![(0.0, 1.0), (0.5, 0.3), (1.0, 0.0)]];
        assert_eq!(legend_corner(&falling, size), Some(Corner::UpperRight));
        let rising = vec![vec![(0.0, 0.0), (0.5, 0.7), (1.0, 1.0)]];
        assert_eq!(legend_corner(&rising, size), Some(Corner::LowerRight));
        let zigzag = vec![vec![(0.0, 0.0), (0.0, 1.0), (1.0, 0.0), (1.0, 1.0)]];
        assert_eq!(legend_corner(&zigzag, size), None);
        // A segment crossing a box without an end inside it counts.
        let across = vec![vec![(0.5, 0.1), (1.0, 0.1)], vec![(0.5, 0.9), (1.0, 0.9)]];
        assert_eq!(legend_corner(&across, size), Some(Corner::UpperLeft));
    }
}
