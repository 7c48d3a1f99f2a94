//! One image's predictions as a text block, a JSON object (one per line with `--json`) and
//! CSV rows (one per face, `--csv`).

use super::crop::Square;
use super::faces::FaceBox;
use crate::data::EMOTIONS;
use crate::metrics::argmax;
use crate::shape::NUM_CLASSES;
use std::path::PathBuf;

/// How an image became model inputs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Crop {
    /// Faces found by the detector, each cropped as FER2013 crops faces.
    Faces,
    /// The centred square of the whole image, as asked with `--whole-image`.
    WholeImage,
    /// The centred square of the whole image, because it is 48×48 to 64×64 pixels.
    WholeImageAuto,
}

impl Crop {
    /// The name used in JSON and CSV: `faces`, `whole-image`, `whole-image-auto`.
    pub fn name(self) -> &'static str {
        match self {
            Crop::Faces => "faces",
            Crop::WholeImage => "whole-image",
            Crop::WholeImageAuto => "whole-image-auto",
        }
    }
}

/// One face's prediction.
#[derive(Clone, Debug, PartialEq)]
pub struct FacePrediction {
    /// The detector's box (none in whole-image modes).
    pub face: Option<FaceBox>,
    /// The square that was resized to 48×48.
    pub square: Square,
    /// Probabilities of the 7 emotions, in class order.
    pub probs: [f32; NUM_CLASSES],
}

impl FacePrediction {
    /// The most probable class.
    pub fn top(&self) -> usize {
        argmax(&self.probs)
    }

    /// The box reported for this face: the detector's, or the square in whole-image modes,
    /// as `(x, y, width, height)`.
    pub fn region(&self) -> (i64, i64, u32, u32) {
        match self.face {
            Some(f) => (f.x, f.y, f.width, f.height),
            None => (
                self.square.x,
                self.square.y,
                self.square.side,
                self.square.side,
            ),
        }
    }
}

/// One image's predictions.
#[derive(Clone, Debug, PartialEq)]
pub struct ImagePrediction {
    /// The file.
    pub path: PathBuf,
    /// Width in pixels (after EXIF orientation).
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// How it was cropped.
    pub crop: Crop,
    /// Its faces, left to right; empty when the detector found none.
    pub faces: Vec<FacePrediction>,
}

fn percentages(probs: &[f32]) -> String {
    EMOTIONS
        .iter()
        .zip(probs)
        .map(|(n, p)| format!("{n} {:.1}%", 100.0 * p))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `{name: p}`, each `p` written with the shortest digits that read back as the same `f32`
/// (not the `f64` widening's 17 digits).
fn probabilities_json(probs: &[f32]) -> serde_json::Value {
    EMOTIONS
        .iter()
        .zip(probs)
        .map(|(n, &p)| {
            let short: f64 = p.to_string().parse().expect("a float's digits parse");
            (n.to_string(), serde_json::json!(short))
        })
        .collect::<serde_json::Map<_, _>>()
        .into()
}

impl ImagePrediction {
    /// Text for people: `path: Happy (Angry 1.0%, …) [whole image …]` in whole-image modes;
    /// `path: N faces` then one indented line per face (`face 1 at x=…, y=…, 96×96: Happy
    /// (…)`); `path: no face found …` when there is none.
    pub fn text(&self) -> String {
        let shown = self.path.display().to_string();
        // A file name may hold escape sequences; the terminal gets them written out.
        let path = crate::report::printable(&shown);
        match self.crop {
            Crop::WholeImage | Crop::WholeImageAuto => {
                let f = &self.faces[0];
                let why = if self.crop == Crop::WholeImage {
                    "whole image, as asked"
                } else {
                    "whole image: 48 to 64 pixels a side is taken as a cropped face"
                };
                format!(
                    "{path}: {} ({}) [{why}]",
                    EMOTIONS[f.top()],
                    percentages(&f.probs)
                )
            }
            Crop::Faces if self.faces.is_empty() => format!(
                "{path}: no face found ({}×{}; a photo that is already a cropped face needs \
                 --whole-image)",
                self.width, self.height
            ),
            Crop::Faces => {
                let n = self.faces.len();
                let mut s = format!("{path}: {n} face{}", if n == 1 { "" } else { "s" });
                for (i, f) in self.faces.iter().enumerate() {
                    let (x, y, w, h) = f.region();
                    s.push_str(&format!(
                        "\n  face {} at x={x}, y={y}, {w}×{h}: {} ({})",
                        i + 1,
                        EMOTIONS[f.top()],
                        percentages(&f.probs)
                    ));
                }
                s
            }
        }
    }

    /// `{"image", "width", "height", "crop", "faces": [{"face", "box": {"x", "y", "width",
    /// "height"}, "score", "crop": {"x", "y", "side"}, "emotion", "probabilities": {name:
    /// p}}]}`; `score` is null in whole-image modes.
    pub fn json(&self) -> serde_json::Value {
        let faces: Vec<serde_json::Value> = self
            .faces
            .iter()
            .enumerate()
            .map(|(i, f)| {
                let (x, y, w, h) = f.region();
                serde_json::json!({
                    "face": i + 1,
                    "box": {"x": x, "y": y, "width": w, "height": h},
                    "score": f.face.map(|b| b.score),
                    "crop": f.square,
                    "emotion": EMOTIONS[f.top()],
                    "probabilities": probabilities_json(&f.probs),
                })
            })
            .collect();
        serde_json::json!({
            "image": self.path.display().to_string(),
            "width": self.width,
            "height": self.height,
            "crop": self.crop.name(),
            "faces": faces,
        })
    }

    /// One CSV row per face, in the columns of [`csv_header`].
    pub fn csv_rows(&self) -> Vec<Vec<String>> {
        self.faces
            .iter()
            .enumerate()
            .map(|(i, f)| {
                let (x, y, w, h) = f.region();
                let mut row = vec![
                    self.path.display().to_string(),
                    (i + 1).to_string(),
                    self.crop.name().to_string(),
                    x.to_string(),
                    y.to_string(),
                    w.to_string(),
                    h.to_string(),
                    f.face
                        .map(|b| format!("{:.3}", b.score))
                        .unwrap_or_default(),
                    EMOTIONS[f.top()].to_string(),
                ];
                row.extend(f.probs.iter().map(|p| format!("{p:.6}")));
                row
            })
            .collect()
    }
}

/// The `--csv` columns: `image,face,crop,x,y,width,height,score,emotion,p_Angry,…,p_Neutral`.
pub fn csv_header() -> Vec<String> {
    let mut h: Vec<String> = [
        "image", "face", "crop", "x", "y", "width", "height", "score", "emotion",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    h.extend(EMOTIONS.iter().map(|e| format!("p_{e}")));
    h
}
