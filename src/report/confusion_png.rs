//! The confusion matrix as a PNG heatmap: true classes down, predicted across, counts in the
//! cells, shading by the share of the row (so rare classes such as Disgust read as well as
//! common ones).

use super::{draw_error, encode_png, register_fonts};
use crate::data::EMOTIONS;
use crate::error::Result;
use crate::files::write_atomic;
use crate::metrics::Confusion;
use crate::shape::NUM_CLASSES;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use std::error::Error as StdError;
use std::path::Path;

/// Size of the confusion image, in pixels.
pub const CONFUSION_SIZE: (u32, u32) = (880, 840);

/// Side of one cell, and where the grid starts, in pixels.
const CELL: i32 = 95;
const GRID_LEFT: i32 = 170;
const GRID_TOP: i32 = 95;

/// Secondary text colour.
const GREY_TEXT: RGBColor = RGBColor(77, 77, 77);

type DrawResult = std::result::Result<(), Box<dyn StdError>>;

/// Writes `c` as a [`CONFUSION_SIZE`] heatmap under `title`: emotion names on both axes
/// (rows true, columns predicted), the count and row share in each cell.
pub fn write_confusion_png(path: &Path, c: &Confusion, title: &str) -> Result<()> {
    register_fonts();
    let (w, h) = CONFUSION_SIZE;
    // rgb (h, w, 3)
    let mut rgb = vec![255u8; (w * h * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut rgb, (w, h)).into_drawing_area();
        draw_confusion(&root, c, title)
            .and_then(|()| Ok(root.present()?))
            .map_err(|e| draw_error(path, e))?;
    }
    let bytes = encode_png(path, &rgb, w, h, image::ExtendedColorType::Rgb8)?;
    write_atomic(path, &bytes)
}

/// Share of row `t` in column `p` (0 for an empty row).
pub(crate) fn row_share(c: &Confusion, t: usize, p: usize) -> f64 {
    let row: u64 = c.counts[t].iter().sum();
    if row == 0 {
        0.0
    } else {
        c.counts[t][p] as f64 / row as f64
    }
}

/// A light-to-dark blue ramp (matplotlib's "Blues" end and middle points) for `share` in
/// `[0, 1]`.
pub(crate) fn shade(share: f64) -> (u8, u8, u8) {
    const STOPS: [(f64, f64, f64); 3] = [
        (247.0, 251.0, 255.0),
        (107.0, 174.0, 214.0),
        (8.0, 48.0, 107.0),
    ];
    let s = share.clamp(0.0, 1.0) * 2.0;
    let (a, b, t) = if s <= 1.0 {
        (STOPS[0], STOPS[1], s)
    } else {
        (STOPS[1], STOPS[2], s - 1.0)
    };
    let mix = |x: f64, y: f64| (x + (y - x) * t).round() as u8;
    (mix(a.0, b.0), mix(a.1, b.1), mix(a.2, b.2))
}

/// Text on a shaded cell stays readable: white on the dark half of the ramp.
pub(crate) fn text_is_light(share: f64) -> bool {
    share > 0.55
}

fn centered<'a>(size: f64, color: RGBColor) -> TextStyle<'a> {
    TextStyle {
        font: ("sans-serif", size).into_font(),
        color: color.to_backend_color(),
        pos: Pos::new(HPos::Center, VPos::Center),
    }
}

fn draw_confusion<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    c: &Confusion,
    title: &str,
) -> DrawResult
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE)?;
    let (w, _) = root.dim_in_pixel();
    let mid = w as i32 / 2;
    root.draw_text(title, &centered(24.0, BLACK), (mid, 28))?;
    let note = format!(
        "{} images · accuracy {:.1}% · shading: share of the true class's row",
        c.total(),
        100.0 * c.accuracy()
    );
    root.draw_text(&note, &centered(15.0, GREY_TEXT), (mid, 60))?;
    draw_axes(root)?;
    for t in 0..NUM_CLASSES {
        for p in 0..NUM_CLASSES {
            draw_cell(root, c, t, p)?;
        }
    }
    let side = CELL * NUM_CLASSES as i32;
    root.draw(&Rectangle::new(
        [(GRID_LEFT, GRID_TOP), (GRID_LEFT + side, GRID_TOP + side)],
        BLACK.mix(0.5),
    ))?;
    Ok(())
}

fn draw_axes<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>) -> DrawResult
where
    DB::ErrorType: 'static,
{
    let side = CELL * NUM_CLASSES as i32;
    let names = TextStyle::from(("sans-serif", 17).into_font())
        .color(&BLACK)
        .pos(Pos::new(HPos::Right, VPos::Center));
    for (i, name) in EMOTIONS.iter().enumerate() {
        let y = GRID_TOP + CELL * i as i32 + CELL / 2;
        root.draw_text(name, &names, (GRID_LEFT - 12, y))?;
        let x = GRID_LEFT + CELL * i as i32 + CELL / 2;
        root.draw_text(name, &centered(17.0, BLACK), (x, GRID_TOP + side + 20))?;
    }
    root.draw_text(
        "Predicted",
        &centered(19.0, BLACK),
        (GRID_LEFT + side / 2, GRID_TOP + side + 55),
    )?;
    let vertical = TextStyle::from(
        ("sans-serif", 19)
            .into_font()
            .transform(FontTransform::Rotate270),
    )
    .color(&BLACK)
    .pos(Pos::new(HPos::Center, VPos::Center));
    root.draw_text("True", &vertical, (32, GRID_TOP + side / 2))?;
    Ok(())
}

fn draw_cell<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    c: &Confusion,
    t: usize,
    p: usize,
) -> DrawResult
where
    DB::ErrorType: 'static,
{
    let share = row_share(c, t, p);
    let (r, g, b) = shade(share);
    let x0 = GRID_LEFT + CELL * p as i32;
    let y0 = GRID_TOP + CELL * t as i32;
    root.draw(&Rectangle::new(
        [(x0, y0), (x0 + CELL, y0 + CELL)],
        RGBColor(r, g, b).filled(),
    ))?;
    root.draw(&Rectangle::new(
        [(x0, y0), (x0 + CELL, y0 + CELL)],
        WHITE.stroke_width(1),
    ))?;
    let ink = if text_is_light(share) { WHITE } else { BLACK };
    let (cx, cy) = (x0 + CELL / 2, y0 + CELL / 2);
    root.draw_text(
        &c.counts[t][p].to_string(),
        &centered(21.0, ink),
        (cx, cy - 10),
    )?;
    root.draw_text(
        &format!("{:.1}%", 100.0 * share),
        &centered(14.0, ink),
        (cx, cy + 16),
    )?;
    Ok(())
}
