//! Learning curves: the notebook's two panels, accuracy and loss per epoch, training against
//! validation, as PNG and SVG.

use super::{draw_error, encode_png, register_fonts, EpochRecord};
use crate::error::Result;
use crate::files::write_atomic;
use plotters::coord::Shift;
use plotters::prelude::*;
use std::error::Error as StdError;
use std::path::Path;

/// Size of both curve images, in pixels.
pub const CURVES_SIZE: (u32, u32) = (1200, 500);

/// matplotlib's first two default colours, so the panels look like the notebook's.
const TRAIN_COLOR: RGBColor = RGBColor(0x1f, 0x77, 0xb4);
const VAL_COLOR: RGBColor = RGBColor(0xff, 0x7f, 0x0e);

type DrawResult = std::result::Result<(), Box<dyn StdError>>;

/// Writes the learning curves to `png` and `svg` (both [`CURVES_SIZE`]): an "Accuracy"
/// panel (training and validation accuracy in %, per epoch) beside a "Loss" panel, under
/// `title`. Non-finite values leave gaps in the lines; a single epoch shows as dots.
pub fn write_curves(png: &Path, svg: &Path, records: &[EpochRecord], title: &str) -> Result<()> {
    register_fonts();
    let (w, h) = CURVES_SIZE;

    // rgb (h, w, 3)
    let mut rgb = vec![255u8; (w * h * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut rgb, (w, h)).into_drawing_area();
        draw_curves(&root, records, title)
            .and_then(|()| Ok(root.present()?))
            .map_err(|e| draw_error(png, e))?;
    }
    let bytes = encode_png(png, &rgb, w, h, image::ExtendedColorType::Rgb8)?;
    write_atomic(png, &bytes)?;

    let mut text = String::new();
    {
        let root = SVGBackend::with_string(&mut text, (w, h)).into_drawing_area();
        draw_curves(&root, records, title)
            .and_then(|()| Ok(root.present()?))
            .map_err(|e| draw_error(svg, e))?;
    }
    write_atomic(svg, text.as_bytes())
}

/// One panel's content: its caption, y-axis name and the two series.
struct Panel {
    caption: &'static str,
    y_desc: &'static str,
    train: Vec<(i32, f64)>,
    val: Vec<(i32, f64)>,
    /// The y range may not leave these bounds (accuracy stays in 0..=100, loss ≥ 0).
    bounds: (f64, f64),
    legend_at: SeriesLabelPosition,
}

fn draw_curves<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    records: &[EpochRecord],
    title: &str,
) -> DrawResult
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE)?;
    let body = if title.is_empty() {
        root.clone()
    } else {
        root.titled(title, ("sans-serif", 26))?
    };
    let halves = body.split_evenly((1, 2));
    let epochs = |f: fn(&EpochRecord) -> f64| -> Vec<(i32, f64)> {
        records.iter().map(|r| (r.epoch as i32, f(r))).collect()
    };
    let accuracy = Panel {
        caption: "Accuracy",
        y_desc: "Accuracy (%)",
        train: epochs(|r| 100.0 * r.train_acc),
        val: epochs(|r| 100.0 * r.val_acc),
        bounds: (0.0, 100.0),
        legend_at: SeriesLabelPosition::LowerRight,
    };
    let loss = Panel {
        caption: "Loss",
        y_desc: "Loss",
        train: epochs(|r| r.train_loss),
        val: epochs(|r| r.val_loss),
        bounds: (0.0, f64::INFINITY),
        legend_at: SeriesLabelPosition::UpperRight,
    };
    draw_panel(&halves[0], &accuracy)?;
    draw_panel(&halves[1], &loss)?;
    Ok(())
}

fn draw_panel<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, panel: &Panel) -> DrawResult
where
    DB::ErrorType: 'static,
{
    let xs = panel.train.iter().map(|p| p.0);
    let (x_lo, x_hi) = x_range(xs);
    let ys = panel.train.iter().chain(&panel.val).map(|p| p.1);
    let (y_lo, y_hi) = y_range(ys, panel.bounds);
    // A little room either side so the first and last epochs' dots are not cut in half.
    let x_pad = 0.03 * f64::from(x_hi - x_lo).max(1.0);
    let y_decimals = label_decimals(y_hi - y_lo);

    let mut chart = ChartBuilder::on(area)
        .caption(panel.caption, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(50)
        .y_label_area_size(70)
        .build_cartesian_2d(f64::from(x_lo) - x_pad..f64::from(x_hi) + x_pad, y_lo..y_hi)?;
    chart
        .configure_mesh()
        .x_desc("Epoch")
        .y_desc(panel.y_desc)
        .x_labels(((x_hi - x_lo) as usize + 1).min(12))
        .x_label_formatter(&epoch_label)
        .y_labels(8)
        .y_label_formatter(&|v: &f64| format!("{v:.y_decimals$}"))
        .label_style(("sans-serif", 15))
        .axis_desc_style(("sans-serif", 17))
        .light_line_style(WHITE.mix(0.0))
        .bold_line_style(BLACK.mix(0.1))
        .draw()?;

    for (name, points, color) in [
        ("Training", &panel.train, TRAIN_COLOR),
        ("Validation", &panel.val, VAL_COLOR),
    ] {
        draw_series(&mut chart, name, points, color)?;
    }
    chart
        .configure_series_labels()
        .position(panel.legend_at.clone())
        .margin(12)
        .label_font(("sans-serif", 16))
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK.mix(0.4))
        .draw()?;
    Ok(())
}

type Chart<'a, DB> = ChartContext<
    'a,
    DB,
    Cartesian2d<plotters::coord::types::RangedCoordf64, plotters::coord::types::RangedCoordf64>,
>;

/// Epochs are whole numbers: a tick between two of them gets no label.
fn epoch_label(x: &f64) -> String {
    if (x - x.round()).abs() < 1e-6 && *x >= 0.0 {
        format!("{}", x.round() as i64)
    } else {
        String::new()
    }
}

/// Enough decimals that neighbouring labels of an axis spanning `span` differ (about 8
/// labels), and no more.
fn label_decimals(span: f64) -> usize {
    let raw = span / 8.0;
    if !(raw.is_finite() && raw > 0.0) {
        return 2;
    }
    // plotters steps by 1, 2 or 5 times a power of ten, at least `raw`.
    let magnitude = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * magnitude)
        .find(|&s| s >= raw * (1.0 - 1e-9))
        .unwrap_or(10.0 * magnitude);
    (-(step.log10() + 1e-9).floor()).clamp(0.0, 6.0) as usize
}

/// Draws `points` as lines broken at non-finite values, with a dot per point, and adds a
/// legend entry (even when every value is missing, so both panels read the same).
fn draw_series<DB: DrawingBackend>(
    chart: &mut Chart<'_, DB>,
    name: &str,
    points: &[(i32, f64)],
    color: RGBColor,
) -> DrawResult
where
    DB::ErrorType: 'static,
{
    let line = color.stroke_width(3);
    let finite: Vec<(f64, f64)> = points
        .iter()
        .filter(|p| p.1.is_finite())
        .map(|&(e, v)| (f64::from(e), v))
        .collect();
    chart
        .draw_series(finite.iter().map(|&p| Circle::new(p, 4, color.filled())))?
        .label(name)
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], line));
    for run in points.split(|p| !p.1.is_finite()) {
        if run.len() > 1 {
            let run = run.iter().map(|&(e, v)| (f64::from(e), v));
            chart.draw_series(LineSeries::new(run, line))?;
        }
    }
    Ok(())
}

/// Epoch axis range, widened by one on each side when there is a single epoch.
fn x_range(epochs: impl Iterator<Item = i32>) -> (i32, i32) {
    let (lo, hi) = epochs.fold((i32::MAX, i32::MIN), |(lo, hi), e| (lo.min(e), hi.max(e)));
    match (lo, hi) {
        (i32::MAX, _) => (0, 1),
        (lo, hi) if lo == hi => (lo - 1, hi + 1),
        range => range,
    }
}

/// The finite values' range padded by 8 % (or ±5 % of the value when flat), kept within
/// `bounds`; `(0, 1)` when no value is finite.
fn y_range(values: impl Iterator<Item = f64>, bounds: (f64, f64)) -> (f64, f64) {
    let (lo, hi) = values
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
    if lo > hi {
        return (0.0, 1.0);
    }
    let pad = if hi - lo > 1e-9 {
        0.08 * (hi - lo)
    } else {
        (0.05 * hi.abs()).max(0.05)
    };
    let lo = (lo - pad).max(bounds.0);
    let hi = (hi + pad).min(bounds.1);
    if hi > lo {
        (lo, hi)
    } else {
        (lo, lo + 1.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axis_labels_are_whole_epochs_with_just_enough_decimals() {
        assert_eq!(epoch_label(&3.0), "3");
        assert_eq!(epoch_label(&2.5), "");
        assert_eq!(epoch_label(&-0.2), "");
        assert_eq!(label_decimals(12.0), 0); // accuracy in %, steps of 1-2
        assert_eq!(label_decimals(0.2), 2); // loss 1.70..1.90
        assert_eq!(label_decimals(1.6), 1);
        assert_eq!(label_decimals(0.0064), 3); // steps of 0.001
        assert_eq!(label_decimals(100.0), 0);
    }

    #[test]
    fn ranges_survive_single_points_and_nan() {
        assert_eq!(x_range([3].into_iter()), (2, 4));
        assert_eq!(x_range(std::iter::empty()), (0, 1));
        assert_eq!(y_range([f64::NAN].into_iter(), (0.0, 100.0)), (0.0, 1.0));
        let (lo, hi) = y_range([50.0, f64::NAN].into_iter(), (0.0, 100.0));
        assert!(lo < 50.0 && hi > 50.0);
        let (lo, hi) = y_range([0.0, 100.0].into_iter(), (0.0, 100.0));
        assert_eq!((lo, hi), (0.0, 100.0));
    }
}
