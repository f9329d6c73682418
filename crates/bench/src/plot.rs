//! The report's charts: PNG, log-log, one line per program, drawn with `plotters`' bitmap
//! backend.
//!
//! A key design decision is that text is rendered with `plotters`' `ab_glyph` feature and the
//! DejaVu Sans font compiled into the binary (the `dejavu` crate), not through fontconfig and
//! FreeType: the charts then look the same on every machine, and a clean Debian install needs
//! no font or `-dev` package to build or run the suite.

use std::path::Path;
use std::sync::Once;

use anyhow::{Result, anyhow};
use plotters::prelude::*;
use plotters::style::{FontStyle, register_font};

use crate::report::{Scaling, count};

static FONTS: Once = Once::new();

fn fonts() {
    FONTS.call_once(|| {
        // Both faces are valid TrueType files shipped inside the `dejavu` crate.
        let _ = register_font("sans-serif", FontStyle::Normal, dejavu::sans::regular());
        let _ = register_font("sans-serif", FontStyle::Bold, dejavu::sans::bold());
    });
}

/// Colour-blind-safe palette (Okabe–Ito); portwarden is always the first, blue.
const PALETTE: [RGBColor; 7] = [
    RGBColor(0, 114, 178),
    RGBColor(230, 159, 0),
    RGBColor(0, 158, 115),
    RGBColor(213, 94, 0),
    RGBColor(204, 121, 167),
    RGBColor(86, 180, 233),
    RGBColor(0, 0, 0),
];

fn bounds(values: impl Iterator<Item = f64>) -> Option<(f64, f64)> {
    let v: Vec<f64> = values.filter(|v| v.is_finite() && *v > 0.0).collect();
    let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = v.iter().copied().fold(0.0, f64::max);
    (lo.is_finite() && hi > 0.0).then_some((lo, hi))
}

/// Tick values 1, 2 and 5 times a power of ten within `lo..=hi`; only the powers of ten when
/// that would be more than `most` ticks.
pub fn ticks_125(lo: f64, hi: f64, most: usize) -> Vec<f64> {
    if !(lo > 0.0 && hi >= lo && lo.is_finite() && hi.is_finite()) {
        return Vec::new();
    }
    let mut all = Vec::new();
    for k in (lo.log10().floor() as i32)..=(hi.log10().ceil() as i32) {
        for m in [1.0, 2.0, 5.0] {
            let v = if k < 0 {
                m / 10f64.powi(-k)
            } else {
                m * 10f64.powi(k)
            };
            if v >= lo * (1.0 - 1e-9) && v <= hi * (1.0 + 1e-9) {
                all.push(v);
            }
        }
    }
    if all.len() > most {
        all.retain(|v| (v.log10() - v.log10().round()).abs() < 1e-9);
    }
    all
}

/// A time axis label: `50 ms`, `1 s`, `2.5 s`, `200 s`.
pub fn axis_secs(s: f64) -> String {
    let trim = |x: f64| {
        let t = format!("{x:.3}");
        t.trim_end_matches('0').trim_end_matches('.').to_string()
    };
    if s >= 1.0 {
        format!("{} s", trim(s))
    } else {
        format!("{} ms", trim(s * 1e3))
    }
}

/// Width and height of every chart in pixels.
pub const SIZE: (u32, u32) = (1000, 620);

/// Draws `s` as a log-log chart of median time against size into `path` (PNG).
///
/// # Errors
/// When there is nothing to draw or the file cannot be written.
pub fn draw(s: &Scaling, path: &Path) -> Result<()> {
    let root = BitMapBackend::new(path, SIZE).into_drawing_area();
    paint(s, root).map_err(|e| anyhow!("drawing {}: {e}", path.display()))
}

/// Draws `s` into an RGB buffer of [`SIZE`] (for tests and previews).
///
/// # Errors
/// When there is nothing to draw.
pub fn draw_rgb(s: &Scaling) -> Result<Vec<u8>> {
    let mut buf = vec![0u8; (SIZE.0 * SIZE.1 * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buf, SIZE).into_drawing_area();
        paint(s, root).map_err(|e| anyhow!("drawing {}: {e}", s.title))?;
    }
    Ok(buf)
}

/// Paints one scaling study: axes from the points' bounds, one line per series (measured
/// points filled, extrapolated ones dashed and hollow), the legend.
///
/// One function on purpose: it is plotters' builder sequence for a single chart, top to
/// bottom, and a step of it taken out would have to name the chart's generic coordinate type
/// (`ChartContext<DB, Cartesian2d<WithKeyPoints<LogCoord<f64>>, ...>>`), which says less than
/// the lines it would replace.
fn paint<DB: DrawingBackend>(
    s: &Scaling,
    root: DrawingArea<DB, plotters::coord::Shift>,
) -> Result<(), String> {
    fonts();
    let err = |e: &dyn std::fmt::Display| e.to_string();
    let points = || s.series.iter().flat_map(|x| x.points.iter());
    let (x0, x1) = bounds(points().map(|p| p.x)).ok_or("no points to draw")?;
    let (y0, y1) = bounds(points().map(|p| p.y)).ok_or("no points to draw")?;
    // Label the sizes that were measured, and times at 1-2-5 steps.
    let mut xs: Vec<f64> = points().map(|p| p.x).collect();
    xs.sort_by(f64::total_cmp);
    xs.dedup();
    let (ylo, yhi) = (y0 / 1.6, y1 * 1.6);
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            &s.title,
            ("sans-serif", 26).into_font().style(FontStyle::Bold),
        )
        .margin(16)
        .x_label_area_size(52)
        .y_label_area_size(84)
        .build_cartesian_2d(
            (x0 / 1.3..x1 * 1.3).log_scale().with_key_points(xs),
            (ylo..yhi)
                .log_scale()
                .with_key_points(ticks_125(ylo, yhi, 14)),
        )
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .x_desc(format!("{} (log scale)", s.unit))
        .y_desc("median wall time (log scale)")
        .x_label_formatter(&|x| count(*x))
        .y_label_formatter(&|y| axis_secs(*y))
        .label_style(("sans-serif", 15))
        .axis_desc_style(("sans-serif", 17))
        .light_line_style(RGBColor(235, 235, 235))
        .draw()
        .map_err(|e| err(&e))?;
    for (i, series) in s.series.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        let width = if series.ours { 4 } else { 2 };
        let style = color.stroke_width(width);
        let measured: Vec<(f64, f64)> = series
            .points
            .iter()
            .filter(|p| !p.extrapolated)
            .map(|p| (p.x, p.y))
            .collect();
        chart
            .draw_series(LineSeries::new(measured.clone(), style))
            .map_err(|e| err(&e))?
            .label(series.name.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], style));
        chart
            .draw_series(
                measured
                    .iter()
                    .map(|&p| Circle::new(p, width + 2, color.filled())),
            )
            .map_err(|e| err(&e))?;
        // Extrapolated points: dashed from the last measured point, hollow markers.
        let estimated: Vec<(f64, f64)> = series
            .points
            .iter()
            .filter(|p| p.extrapolated)
            .map(|p| (p.x, p.y))
            .collect();
        if !estimated.is_empty() {
            let path: Vec<(f64, f64)> = measured
                .last()
                .into_iter()
                .copied()
                .chain(estimated.clone())
                .collect();
            chart
                .draw_series(DashedLineSeries::new(path, 8, 6, style))
                .map_err(|e| err(&e))?;
            chart
                .draw_series(
                    estimated
                        .iter()
                        .map(|&p| Circle::new(p, width + 3, color.stroke_width(2))),
                )
                .map_err(|e| err(&e))?;
        }
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.9))
        .border_style(RGBColor(160, 160, 160))
        .label_font(("sans-serif", 16))
        .draw()
        .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{Point, Series};

    fn scaling() -> Scaling {
        let pts = |k: f64, extra: bool| {
            let mut v: Vec<Point> = [1000.0, 10000.0, 50000.0]
                .iter()
                .map(|&x: &f64| Point {
                    x,
                    y: 1e-4 * x.powf(k),
                    cpu: None,
                    extrapolated: false,
                })
                .collect();
            if extra {
                v[2].extrapolated = true;
            }
            v
        };
        Scaling {
            title: "Apply time against rule count".into(),
            unit: "entries".into(),
            series: vec![
                Series {
                    name: "portwarden".into(),
                    ours: true,
                    points: pts(0.9, false),
                },
                Series {
                    name: "iptables -A per rule".into(),
                    ours: false,
                    points: pts(1.2, true),
                },
            ],
            chart: None,
            analysis: vec![],
        }
    }

    /// Pixels that are not white in rows `rows` of an RGB buffer of [`SIZE`].
    fn inked(buf: &[u8], rows: std::ops::Range<u32>) -> usize {
        let w = SIZE.0 as usize * 3;
        rows.flat_map(|y| buf[y as usize * w..(y as usize + 1) * w].chunks(3))
            .filter(|px| px.iter().any(|&c| c < 200))
            .count()
    }

    #[test]
    fn tick_values() {
        assert_eq!(ticks_125(0.15, 12.0, 14), [0.2, 0.5, 1.0, 2.0, 5.0, 10.0]);
        assert_eq!(ticks_125(0.009, 600.0, 14), [0.01, 0.1, 1.0, 10.0, 100.0]);
        assert!(ticks_125(0.0, 1.0, 14).is_empty());
        assert_eq!(axis_secs(0.05), "50 ms");
        assert_eq!(axis_secs(0.0005), "0.5 ms");
        assert_eq!(axis_secs(2.5), "2.5 s");
        assert_eq!(axis_secs(200.0), "200 s");
    }

    #[test]
    fn draws_a_png() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("chart.png");
        draw(&scaling(), &path).expect("draws");
        let bytes = std::fs::read(&path).expect("written");
        assert_eq!(&bytes[1..4], b"PNG");
    }

    #[test]
    fn text_is_rendered_with_the_embedded_font() {
        // The caption band (below the 16 px margin, above the plot) holds only the title: ink
        // there means glyphs were drawn, with no system font involved (a missing font is an
        // error from plotters, not a blank).
        let with_title = draw_rgb(&scaling()).expect("draws");
        assert!(inked(&with_title, 16..44) > 200, "no title pixels");
    }

    #[test]
    fn nothing_to_draw_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut s = scaling();
        s.series.clear();
        assert!(draw(&s, &dir.path().join("x.png")).is_err());
    }
}
