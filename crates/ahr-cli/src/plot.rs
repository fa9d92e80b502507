//! Plots (plotters): the Pareto plot (task metric against KV bytes per token, one colour per
//! family, the front joined by a line) and the analysis's grouped bar charts.

use std::path::Path;

use anyhow::{Result, anyhow};
use plotters::coord::Shift;
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;

use ahr_eval::{EvalOutput, Point};

const COLORS: [RGBColor; 12] = [
    RGBColor(214, 39, 40),
    RGBColor(31, 119, 180),
    RGBColor(44, 160, 44),
    RGBColor(255, 127, 14),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
    RGBColor(0, 0, 128),
    RGBColor(128, 128, 0),
];

/// The legend entry of a point: its rule family, or the policy's or model's own name.
fn family(p: &Point) -> &str {
    match p.family() {
        Some(f) => f.name(),
        None => &p.name,
    }
}

/// The series legend both plots use: a framed, translucent box at `position`.
fn legend<'a, DB: DrawingBackend + 'a>(
    chart: &mut ChartContext<'a, DB, Cartesian2d<RangedCoordf64, RangedCoordf64>>,
    position: SeriesLabelPosition,
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    chart
        .configure_series_labels()
        .position(position)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(|e| anyhow!("plot: {e}"))
}

fn draw<DB: DrawingBackend>(root: DrawingArea<DB, Shift>, o: &EvalOutput) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| anyhow!("plot: {e}");
    root.fill(&WHITE).map_err(err)?;
    let max_x = o.points.iter().map(|p| p.kv_bytes_per_token).fold(1.0, f64::max) * 1.05;
    let (lo, hi) = o.points.iter().fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.metric), b.max(p.metric)));
    let pad = ((hi - lo) * 0.08).max(1e-3);
    let mut chart = ChartBuilder::on(&root)
        .caption(format!("{} vs time-averaged KV bytes per token", o.metric), ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..max_x, (lo - pad)..(hi + pad))
        .map_err(err)?;
    chart.configure_mesh().x_desc("KV bytes per token (all layers)").y_desc(o.metric.name()).draw().map_err(err)?;
    let mut front: Vec<&Point> = o.points.iter().filter(|p| p.on_front).collect();
    front.sort_by(|a, b| a.kv_bytes_per_token.total_cmp(&b.kv_bytes_per_token));
    chart
        .draw_series(LineSeries::new(front.iter().map(|p| (p.kv_bytes_per_token, p.metric)), BLACK.stroke_width(1)))
        .map_err(err)?
        .label("Pareto front")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], BLACK));
    let mut families: Vec<&str> = Vec::new();
    for p in &o.points {
        if !families.contains(&family(p)) {
            families.push(family(p));
        }
    }
    for (i, f) in families.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let pts: Vec<(f64, f64)> =
            o.points.iter().filter(|p| family(p) == *f).map(|p| (p.kv_bytes_per_token, p.metric)).collect();
        let size = if f.starts_with("policy:") { 7 } else { 4 };
        chart
            .draw_series(pts.iter().map(|&(x, y)| Circle::new((x, y), size, color.filled())))
            .map_err(err)?
            .label(*f)
            .legend(move |(x, y)| Circle::new((x + 8, y), 4, color.filled()));
    }
    legend(&mut chart, SeriesLabelPosition::LowerRight)?;
    root.present().map_err(err)?;
    Ok(())
}

/// Write the Pareto plot as SVG and PNG.
pub fn pareto(svg: &Path, png: &Path, o: &EvalOutput) -> Result<()> {
    draw(SVGBackend::new(svg, (800, 560)).into_drawing_area(), o)?;
    draw(BitMapBackend::new(png, (800, 560)).into_drawing_area(), o)?;
    Ok(())
}

fn draw_bars<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    title: &str,
    y_desc: &str,
    groups: &[String],
    series: &[String],
    values: &[Vec<f64>],
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| anyhow!("plot: {e}");
    root.fill(&WHITE).map_err(err)?;
    let (g_n, s_n) = (groups.len(), series.len().max(1));
    let top = values.iter().flatten().copied().fold(0.0, f64::max).max(1e-9) * 1.1;
    // Group g occupies [g, g+1); its bars split the middle 80%.
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(if g_n > 8 { 70 } else { 40 })
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..g_n as f64, 0.0..top)
        .map_err(err)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(g_n * 2 + 1)
        .x_label_formatter(&|x| {
            let g = x.floor() as usize;
            if (x - g as f64 - 0.5).abs() < 1e-6 && g < g_n { groups[g].clone() } else { String::new() }
        })
        .x_label_style(("sans-serif", if g_n > 8 { 11 } else { 14 }))
        .y_desc(y_desc)
        .draw()
        .map_err(err)?;
    let width = 0.8 / s_n as f64;
    for (s, name) in series.iter().enumerate() {
        let color = COLORS[s % COLORS.len()];
        let bars = values.iter().enumerate().map(move |(g, row)| {
            let x0 = g as f64 + 0.1 + s as f64 * width;
            Rectangle::new([(x0, 0.0), (x0 + width * 0.9, row.get(s).copied().unwrap_or(0.0))], color.filled())
        });
        let series = chart.draw_series(bars).map_err(err)?;
        if s_n > 1 {
            series
                .label(name.as_str())
                .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], color.filled()));
        }
    }
    if s_n > 1 {
        legend(&mut chart, SeriesLabelPosition::UpperRight)?;
    }
    root.present().map_err(err)?;
    Ok(())
}

/// A grouped bar chart as PNG: `values[group][series]`, one colour per series.
pub fn bars(
    png: &Path,
    title: &str,
    y_desc: &str,
    groups: &[String],
    series: &[String],
    values: &[Vec<f64>],
) -> Result<()> {
    draw_bars(BitMapBackend::new(png, (900, 520)).into_drawing_area(), title, y_desc, groups, series, values)
}
