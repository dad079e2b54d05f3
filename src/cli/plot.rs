//! `bench --plot`: for each run, latency per frame over time (one line per stage and end to end)
//! and a histogram per stage, in one SVG (no fonts needed).

use std::path::Path;

use plotters::prelude::*;

use semask_edge::timing::Stage;

use super::bench::RunReport;

const ROW_HEIGHT: u32 = 420;
const WIDTH: u32 = 1400;

/// Colours of the stages and of end to end, in [`Stage::ALL`] order then end to end.
const COLORS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(40, 40, 40),
];

/// Draws `runs` and writes the SVG to `path` (whole or not at all).
pub fn write_svg(path: &Path, runs: &[RunReport]) -> anyhow::Result<()> {
    if runs.is_empty() {
        anyhow::bail!("no runs to plot");
    }
    let mut svg = String::new();
    {
        let root =
            SVGBackend::with_string(&mut svg, (WIDTH, ROW_HEIGHT * runs.len() as u32)).into_drawing_area();
        root.fill(&WHITE)?;
        for (row, run) in root.split_evenly((runs.len(), 1)).iter().zip(runs) {
            let (left, right) = row.split_horizontally(WIDTH * 3 / 5);
            draw_series(&left, run)?;
            draw_histograms(&right, run)?;
        }
        root.present()?;
    }
    semask_edge::files::write_atomically(path, svg.as_bytes())?;
    Ok(())
}

fn title(run: &RunReport) -> String {
    let model =
        Path::new(&run.model).file_name().map_or(run.model.clone(), |n| n.to_string_lossy().into_owned());
    format!("{model} | {} | upsample {}", run.backend, run.upsample.unwrap_or("-"))
}

fn draw_series<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    run: &RunReport,
) -> anyhow::Result<()>
where
    DB::ErrorType: 'static,
{
    let max_ms = run.series.iter().map(|(_, e2e)| e2e.as_secs_f64() * 1e3).fold(1.0, f64::max) * 1.05;
    let mut chart = ChartBuilder::on(area)
        .caption(format!("{} — latency per frame", title(run)), ("sans-serif", 16))
        .margin(10)
        .x_label_area_size(35)
        .y_label_area_size(55)
        .build_cartesian_2d(0..run.series.len().max(2), 0.0..max_ms)?;
    chart.configure_mesh().x_desc("frame").y_desc("ms").draw()?;
    let mut lines: Vec<(String, Vec<(usize, f64)>)> = Stage::ALL
        .iter()
        .map(|s| {
            (s.name().to_string(), run.series.iter().enumerate().map(|(i, (t, _))| (i, t.ms(*s))).collect())
        })
        .collect();
    lines.push((
        "end to end".into(),
        run.series.iter().enumerate().map(|(i, (_, e2e))| (i, e2e.as_secs_f64() * 1e3)).collect(),
    ));
    for (color, (name, points)) in COLORS.iter().zip(lines) {
        if points.iter().all(|(_, v)| *v == 0.0) {
            continue;
        }
        let color = *color;
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(1)))?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color));
    }
    chart.configure_series_labels().background_style(WHITE.mix(0.8)).border_style(BLACK).draw()?;
    Ok(())
}

fn draw_histograms<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    run: &RunReport,
) -> anyhow::Result<()>
where
    DB::ErrorType: 'static,
{
    let stages: Vec<(usize, Stage)> = Stage::ALL
        .iter()
        .enumerate()
        .filter(|(_, s)| run.series.iter().any(|(t, _)| t.ms(**s) > 0.0))
        .map(|(i, s)| (i, *s))
        .collect();
    if stages.is_empty() {
        return Ok(());
    }
    for (cell, (color_index, stage)) in area.split_evenly((stages.len(), 1)).iter().zip(stages) {
        let values: Vec<f64> = run.series.iter().map(|(t, _)| t.ms(stage)).collect();
        let max = values.iter().copied().fold(0.0, f64::max).max(1e-3);
        const BINS: usize = 40;
        let mut counts = [0u32; BINS];
        for v in &values {
            counts[((v / max) * (BINS as f64 - 1.0)).round() as usize] += 1;
        }
        let top = *counts.iter().max().unwrap_or(&1) as f64;
        let mut chart = ChartBuilder::on(cell)
            .caption(format!("{} (ms)", stage.name()), ("sans-serif", 12))
            .margin(4)
            .x_label_area_size(18)
            .y_label_area_size(40)
            .build_cartesian_2d(0.0..max * 1.02, 0.0..top * 1.1)?;
        chart.configure_mesh().disable_mesh().x_labels(6).y_labels(3).draw()?;
        let color = COLORS[color_index];
        chart.draw_series(counts.iter().enumerate().map(|(b, &n)| {
            let x0 = b as f64 / (BINS as f64 - 1.0) * max;
            let width = max / (BINS as f64 - 1.0);
            Rectangle::new([(x0 - width / 2.0, 0.0), (x0 + width / 2.0, n as f64)], color.filled())
        }))?;
    }
    Ok(())
}
