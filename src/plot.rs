//! `fedsim plot`: one line per run of a metric from `metrics.jsonl`, as an SVG.

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
    /// x axis: `round`, `wall_s`, `bytes` (uplink + downlink, cumulative) or `bytes_up` (cumulative).
    pub(crate) x: String,
    /// Logarithmic y axis.
    pub(crate) log_y: bool,
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
            "bytes" => Some(up + down),
            "bytes_up" => Some(up),
            other => bail!("--x must be round, wall_s, bytes or bytes_up, got `{other}`"),
        };
        if let (Some(xv), Some(yv)) = (xv, num(metric))
            && yv.is_finite()
        {
            out.push((xv, yv));
        }
    }
    Ok(out)
}

/// Draws the plot.
pub(crate) fn plot(spec: &PlotSpec) -> Result<()> {
    if spec.runs.is_empty() {
        bail!("give at least one run directory");
    }
    let mut all = Vec::new();
    for (i, run) in spec.runs.iter().enumerate() {
        let pts = series(run, &spec.metric, &spec.x)?;
        if pts.is_empty() {
            eprintln!(
                "warning: {} has no values of `{}`",
                run.display(),
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
    let pts = all.iter().flat_map(|(_, p)| p.iter());
    let (mut x0, mut x1, mut y0, mut y1) = (
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::INFINITY,
        f64::NEG_INFINITY,
    );
    for &(x, y) in pts {
        if spec.log_y && y <= 0.0 {
            continue;
        }
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    if !x0.is_finite() {
        bail!("no data points of `{}` in the given runs", spec.metric);
    }
    if x1 <= x0 {
        x1 = x0 + 1.0;
    }
    if y1 <= y0 {
        y1 = y0 + 1e-9_f64.max(y0.abs() * 0.01);
    }
    let root = SVGBackend::new(&spec.out, (900, 560)).into_drawing_area();
    root.fill(&WHITE)?;
    let title = spec.title.clone().unwrap_or_else(|| spec.metric.clone());
    let x_label = match spec.x.as_str() {
        "round" => "round",
        "wall_s" => "wall time (s)",
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
    let mut builder = ChartBuilder::on(&root);
    builder
        .caption(&title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(44)
        .y_label_area_size(70);
    macro_rules! draw {
        ($chart:expr) => {{
            let mut chart = $chart;
            chart
                .configure_mesh()
                .x_desc(x_label)
                .y_desc(&spec.metric)
                .x_label_formatter(&|v| tick_label(*v))
                .y_label_formatter(&|v| tick_label(*v))
                .draw()?;
            for (i, (label, p)) in all.iter().enumerate() {
                let c = colors[i % colors.len()];
                let p: Vec<(f64, f64)> = p
                    .iter()
                    .copied()
                    .filter(|&(_, y)| !spec.log_y || y > 0.0)
                    .collect();
                chart
                    .draw_series(LineSeries::new(p, c.stroke_width(2)))?
                    .label(label.clone())
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 18, y)], c.stroke_width(2))
                    });
            }
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK)
                .position(SeriesLabelPosition::LowerRight)
                .draw()?;
        }};
    }
    if spec.log_y {
        draw!(builder.build_cartesian_2d(x0..x1, (y0..y1).log_scale())?);
    } else {
        draw!(builder.build_cartesian_2d(x0..x1, y0..y1)?);
    }
    root.present()
        .with_context(|| format!("writing {}", spec.out.display()))?;
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
    use super::{default_label, tick_label};
    use std::path::PathBuf;

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
}
