//! `fergpu predict`: emotions of photos of any size and colour.
//!
//! Each photo is converted to 8-bit grayscale (the `image` crate's luma, Rec. 709 weights),
//! centre-cropped to a square (the shorter side is kept, the longer one trimmed equally on
//! both ends), and resized to 48×48 with a triangle (bilinear) filter, then classified.

use crate::data::{Dataset, Usage};
use crate::error::{Error, Result};
use crate::shape::IMAGE_SIDE;
use image::imageops::FilterType;
use std::path::Path;

/// Reads a photo and turns it into the 48×48 grayscale pixels `(48·48)` a model takes.
pub fn load_face(path: &Path) -> Result<Vec<u8>> {
    let img = image::open(path).map_err(|e| Error::BadData {
        path: path.into(),
        problem: format!("not a readable image (PNG, JPEG or BMP): {e}"),
    })?;
    let gray = img.to_luma8();
    let (w, h) = gray.dimensions();
    let side = w.min(h);
    let cropped =
        image::imageops::crop_imm(&gray, (w - side) / 2, (h - side) / 2, side, side).to_image();
    let small = image::imageops::resize(
        &cropped,
        IMAGE_SIDE as u32,
        IMAGE_SIDE as u32,
        FilterType::Triangle,
    );
    Ok(small.into_raw())
}

/// The photos that could be read as a data set (labels are placeholders), and for each
/// path either its row in that set or the error that kept it out.
pub fn load_faces(paths: &[impl AsRef<Path>]) -> (Dataset, Vec<Result<usize>>) {
    let mut ds = Dataset::default();
    let rows = paths
        .iter()
        .map(|p| {
            let pixels = load_face(p.as_ref())?;
            ds.push(&pixels, 0, Usage::PublicTest);
            Ok(ds.len() - 1)
        })
        .collect();
    (ds, rows)
}
