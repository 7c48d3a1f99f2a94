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

/// One image's prediction as a line of text (`path: Happy 81.2% | Angry 1.0% …`) or, with
/// `json`, a JSON object `{"image", "emotion", "probabilities": {name: p}}`.
pub fn prediction_text(path: &Path, probs: &[f32], json: bool) -> String {
    use crate::data::EMOTIONS;
    let top = crate::metrics::argmax(probs);
    if json {
        let p: serde_json::Map<String, serde_json::Value> = EMOTIONS
            .iter()
            .zip(probs)
            .map(|(n, &p)| (n.to_string(), serde_json::json!(p)))
            .collect();
        serde_json::json!({
            "image": path.display().to_string(),
            "emotion": EMOTIONS[top],
            "probabilities": p,
        })
        .to_string()
    } else {
        let all: Vec<String> = EMOTIONS
            .iter()
            .zip(probs)
            .map(|(n, p)| format!("{n} {:.1}%", 100.0 * p))
            .collect();
        format!("{}: {} ({})", path.display(), EMOTIONS[top], all.join(", "))
    }
}
