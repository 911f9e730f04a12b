//! The benchmark drawn: failover times (median bars, min–max whiskers) beside write throughput
//! (a bar per system at each client count), as one PNG. Text needs a TrueType font file (the
//! PNG backend has none of its own); Debian's DejaVu Sans is the default.

use std::path::Path;

use anyhow::Context;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters::style::{FontStyle, register_font};

use super::BenchReport;
use super::measure::Fault;

/// One colour per system in both panels: halab's greens, etcd's blues, Redis red.
fn colour(system: &str) -> RGBColor {
    match system {
        s if s.starts_with("halab store") => RGBColor(46, 125, 50),
        s if s.starts_with("halab") => RGBColor(102, 187, 106),
        s if s.starts_with("etcd") && s.contains("50/250") => RGBColor(100, 181, 246),
        s if s.starts_with("etcd") => RGBColor(21, 101, 192),
        s if s.starts_with("Redis") => RGBColor(198, 40, 40),
        _ => RGBColor(120, 120, 120),
    }
}

pub fn draw(report: &BenchReport, font: &Path, out: &Path) -> anyhow::Result<()> {
    let bytes =
        std::fs::read(font).with_context(|| format!("no font at {} (--font)", font.display()))?;
    // plotters keeps registered fonts for the whole process.
    let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
    register_font("sans-serif", FontStyle::Normal, bytes)
        .map_err(|_| anyhow::anyhow!("{} is not a TrueType font", font.display()))?;
    let root = BitMapBackend::new(out, (1400, 560)).into_drawing_area();
    root.fill(&WHITE)?;
    let (left, right) = root.split_horizontally(700);
    failover_panel(report, &left)?;
    throughput_panel(report, &right)?;
    root.present()
        .with_context(|| format!("cannot write {}", out.display()))?;
    Ok(())
}

type Area<'a> = DrawingArea<BitMapBackend<'a>, plotters::coord::Shift>;

fn failover_panel(report: &BenchReport, area: &Area) -> anyhow::Result<()> {
    let rows = &report.failover;
    // One group per system, in the report's order: its kill bar, then its pause bar.
    let mut systems: Vec<&str> = Vec::new();
    for row in rows {
        if !systems.contains(&row.system.as_str()) {
            systems.push(&row.system);
        }
    }
    let top = rows.iter().map(|r| r.spread.max_ms).max().unwrap_or(1) as f64 * 1.15;
    let mut chart = ChartBuilder::on(area)
        .caption(
            "leader / primary killed | paused: ms until it works again",
            ("sans-serif", 20),
        )
        .margin(16)
        .x_label_area_size(70)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..systems.len() as f64, 0f64..top)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(0)
        .y_desc("ms (bar: median, left kill, right pause; line: min–max)")
        .draw()?;
    for row in rows {
        let group = systems.iter().position(|s| *s == row.system).unwrap_or(0);
        let (offset, colour) = match row.fault {
            Fault::Kill => (0.08, colour(&row.system).to_rgba()),
            Fault::Pause => (0.52, colour(&row.system).mix(0.45)),
        };
        let x = group as f64 + offset;
        let s = &row.spread;
        chart.draw_series([Rectangle::new(
            [(x, 0.0), (x + 0.4, s.median_ms as f64)],
            ShapeStyle::from(&colour).filled(),
        )])?;
        chart.draw_series([PathElement::new(
            [(x + 0.2, s.min_ms as f64), (x + 0.2, s.max_ms as f64)],
            BLACK.stroke_width(2),
        )])?;
        chart.draw_series([Text::new(
            format!("{}", s.median_ms),
            (x + 0.02, s.median_ms as f64 + top * 0.03),
            ("sans-serif", 14),
        )])?;
    }
    for (group, system) in systems.iter().enumerate() {
        let (px, py) = chart.backend_coord(&(group as f64 + 0.5, 0.0));
        for (line, text) in system.split(" (").enumerate() {
            let text = if line == 0 {
                text.to_string()
            } else {
                format!("({text}")
            };
            label_below(area, &text, (px, py + 8 + 16 * line as i32))?;
        }
    }
    Ok(())
}

/// Text centred at a pixel of the backend (below the x axis, outside the chart's coordinates).
fn label_below(area: &Area, text: &str, (x, y): (i32, i32)) -> anyhow::Result<()> {
    let (base_x, base_y) = area.get_base_pixel();
    let style =
        TextStyle::from(("sans-serif", 14).into_font()).pos(Pos::new(HPos::Center, VPos::Top));
    area.draw(&Text::new(
        text.to_string(),
        (x - base_x, y - base_y),
        style,
    ))?;
    Ok(())
}

fn throughput_panel(report: &BenchReport, area: &Area) -> anyhow::Result<()> {
    let systems = &report.throughput;
    let counts: Vec<usize> = systems
        .first()
        .map(|s| s.rows.iter().map(|r| r.clients).collect())
        .unwrap_or_default();
    let top = systems
        .iter()
        .flat_map(|s| s.rows.iter().map(|r| r.ops_per_s))
        .fold(1.0, f64::max)
        * 1.15;
    let mut chart = ChartBuilder::on(area)
        .caption(
            "synchronous replicated writes, fsync always: ops/s",
            ("sans-serif", 20),
        )
        .margin(16)
        .x_label_area_size(70)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..counts.len() as f64, 0f64..top)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(0)
        .y_desc("writes acknowledged per second")
        .draw()?;
    let width = 0.8 / systems.len().max(1) as f64;
    for (group, clients) in counts.iter().enumerate() {
        let (px, py) = chart.backend_coord(&(group as f64 + 0.5, 0.0));
        let plural = if *clients == 1 { "" } else { "s" };
        label_below(area, &format!("{clients} client{plural}"), (px, py + 8))?;
    }
    for (k, system) in systems.iter().enumerate() {
        let colour = colour(&system.system);
        for (group, row) in system.rows.iter().enumerate() {
            let x = group as f64 + 0.1 + width * k as f64;
            chart.draw_series([Rectangle::new(
                [(x, 0.0), (x + width * 0.9, row.ops_per_s)],
                colour.filled(),
            )])?;
        }
        chart
            .draw_series([Rectangle::new([(0.0, 0.0), (0.0, 0.0)], colour.filled())])?
            .label(system.system.clone())
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], colour.filled()));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .border_style(BLACK)
        .background_style(WHITE.mix(0.9))
        .label_font(("sans-serif", 14))
        .draw()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::measure::{Spread, Throughput};
    use crate::bench::{SystemFailover, SystemThroughput};

    #[test]
    fn the_chart_is_a_png_with_both_panels() {
        let ms = |v: &[u64]| {
            let all: Vec<_> = v
                .iter()
                .map(|m| std::time::Duration::from_millis(*m))
                .collect();
            Spread::of(&all)
        };
        let rows = |base: f64| {
            [1, 16, 64]
                .map(|clients| Throughput {
                    clients,
                    ops_per_s: base * clients as f64,
                    p50_ms: 1.0,
                    p99_ms: 2.0,
                    errors: 0,
                })
                .to_vec()
        };
        let report = BenchReport {
            throughput: vec![
                SystemThroughput {
                    system: "halab store".into(),
                    rows: rows(300.0),
                },
                SystemThroughput {
                    system: "etcd (100/1000 ms)".into(),
                    rows: rows(120.0),
                },
            ],
            failover: vec![
                SystemFailover {
                    system: "halab store".into(),
                    fault: Fault::Kill,
                    until: "w",
                    spread: ms(&[160, 170, 180]),
                },
                SystemFailover {
                    system: "etcd (100/1000 ms)".into(),
                    fault: Fault::Kill,
                    until: "w",
                    spread: ms(&[900, 1000, 1500]),
                },
                SystemFailover {
                    system: "halab store".into(),
                    fault: Fault::Pause,
                    until: "w",
                    spread: ms(&[200, 220, 240]),
                },
                SystemFailover {
                    system: "etcd (100/1000 ms)".into(),
                    fault: Fault::Pause,
                    until: "w",
                    spread: ms(&[1100, 1200, 1300]),
                },
            ],
        };
        let out = std::env::temp_dir().join(format!("halab-chart-{}.png", std::process::id()));
        let font = Path::new("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf");
        draw(&report, font, &out).expect("drawn");
        let png = std::fs::read(&out).unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
        // IHDR: width and height, big-endian, after the signature and the chunk header.
        assert_eq!(&png[16..24], [0, 0, 5, 120, 0, 0, 2, 48]);
        if std::env::var_os("HALAB_KEEP_CHART").is_none() {
            std::fs::remove_file(&out).unwrap();
        }
    }
}
