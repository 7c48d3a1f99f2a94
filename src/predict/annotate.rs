//! Annotated copies of photos (`--annotate DIR`): each face's detector box (thick) and the
//! square the model was given (thin), in a colour per emotion, labelled with the face's
//! number, top emotion and its probability.

use super::crop::Square;
use super::faces::FaceBox;
use crate::data::EMOTIONS;
use crate::error::{Error, Result};
use crate::files::write_atomic;
use crate::report::{draw_error, register_fonts};
use image::{ImageFormat, RgbImage};
use plotters::prelude::*;
use std::path::Path;

/// What to draw for one face.
#[derive(Clone, Debug, PartialEq)]
pub struct Mark {
    /// The detector's box, when the face was detected.
    pub face: Option<FaceBox>,
    /// The square cropped and resized to 48×48.
    pub square: Square,
    /// 1-based face number in the image.
    pub number: usize,
    /// Top emotion (class index).
    pub class: usize,
    /// Its probability.
    pub probability: f32,
}

/// Box colour of each emotion, in class order.
const COLOURS: [RGBColor; 7] = [
    RGBColor(230, 40, 40),   // Angry
    RGBColor(120, 170, 30),  // Disgust
    RGBColor(160, 80, 220),  // Fear
    RGBColor(255, 200, 0),   // Happy
    RGBColor(40, 110, 240),  // Sad
    RGBColor(0, 200, 200),   // Surprise
    RGBColor(200, 200, 200), // Neutral
];

/// Draws `marks` onto `rgb` `(h, w, 3)`; `path` only names the file in errors.
pub fn draw(path: &Path, rgb: &mut RgbImage, marks: &[Mark]) -> Result<()> {
    register_fonts();
    let (w, h) = rgb.dimensions();
    let short = w.min(h) as i32;
    let thick = (short / 250).max(2) as u32;
    let root = BitMapBackend::with_buffer(rgb.as_mut(), (w, h)).into_drawing_area();
    for m in marks {
        let colour = COLOURS[m.class];
        let sq = (
            (m.square.x as i32, m.square.y as i32),
            (
                (m.square.x + i64::from(m.square.side)) as i32,
                (m.square.y + i64::from(m.square.side)) as i32,
            ),
        );
        root.draw(&Rectangle::new([sq.0, sq.1], colour.stroke_width(1)))
            .map_err(|e| draw_error(path, e))?;
        if let Some(f) = m.face {
            let corner = (f.x as i32, f.y as i32);
            let far = (corner.0 + f.width as i32, corner.1 + f.height as i32);
            root.draw(&Rectangle::new([corner, far], colour.stroke_width(thick)))
                .map_err(|e| draw_error(path, e))?;
        }
        let label = format!(
            "{} {} {:.0}%",
            m.number,
            EMOTIONS[m.class],
            100.0 * m.probability
        );
        // A label about a quarter of the face's height: readable, yet not hiding the
        // neighbours in a group photo.
        let font_px =
            (f64::from(m.square.side) * 0.25).clamp(11.0, f64::from((short / 25).max(11)));
        let font = ("sans-serif", font_px).into_font().color(&BLACK);
        let (tw, th) = root
            .estimate_text_size(&label, &font)
            .map_err(|e| draw_error(path, e))?;
        let (tw, th) = (tw as i32 + 6, th as i32 + 4);
        // Above the square when there is room, else inside its top edge.
        let top = if sq.0 .1 - th >= 0 {
            sq.0 .1 - th
        } else {
            sq.0 .1.max(0)
        };
        let left = sq.0 .0.clamp(0, (w as i32 - tw).max(0));
        root.draw(&Rectangle::new(
            [(left, top), (left + tw, top + th)],
            colour.filled(),
        ))
        .map_err(|e| draw_error(path, e))?;
        root.draw(&Text::new(label, (left + 3, top + 2), font))
            .map_err(|e| draw_error(path, e))?;
    }
    root.present().map_err(|e| draw_error(path, e))?;
    Ok(())
}

/// Writes `rgb` to `path` in the format its extension names (PNG, JPEG at quality 90, BMP;
/// PNG for anything else), atomically.
pub fn write(path: &Path, rgb: &RgbImage) -> Result<()> {
    let format = ImageFormat::from_path(path).unwrap_or(ImageFormat::Png);
    let mut bytes = Vec::new();
    let encoded = match format {
        ImageFormat::Jpeg => {
            let enc = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, 90);
            rgb.write_with_encoder(enc)
        }
        ImageFormat::Bmp => rgb.write_to(&mut std::io::Cursor::new(&mut bytes), format),
        _ => rgb.write_to(&mut std::io::Cursor::new(&mut bytes), ImageFormat::Png),
    };
    encoded.map_err(|e| Error::io(path, std::io::Error::other(format!("encoding failed: {e}"))))?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    write_atomic(path, &bytes)
}
