//! Frontal faces in photos, found by the SeetaFace detector (the `rustface` crate, a Rust
//! port of SeetaFace Detection, BSD 2-Clause). Its model file is built into the binary
//! (`assets/seetaface/`), so an installed `fergpu` needs no extra file.

use image::GrayImage;
use std::borrow::Cow;

/// The SeetaFace frontal face model (funnel-structured cascade, 1.2 MB), embedded.
static MODEL: &[u8] = include_bytes!("../../assets/seetaface/seeta_fd_frontal_v1.0.bin");

/// Side of the detector's sliding window at each pyramid level: a face smaller than this
/// (in the image the detector sees) is not found.
const WINDOW: u32 = 40;
/// Scale between pyramid levels (SeetaFace's example value).
const PYRAMID_STEP: f32 = 0.8;
/// Detections scoring below this are dropped. 2.0 is the value of SeetaFace's and
/// rustface's examples; 3.85, rustface's default, misses some clear faces.
pub const SCORE_THRESHOLD: f64 = 2.0;
/// Photos larger than this (longer side, pixels) are shrunk for detection only, which keeps
/// a 12-megapixel photo to about a second; faces are then found from about
/// `40 · longer side / DETECT_MAX_SIDE` pixels up, and cropped from the full photo.
pub const DETECT_MAX_SIDE: u32 = 1600;

/// A face the detector found, in the photo's pixel coordinates. The box may reach past the
/// photo's edges.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct FaceBox {
    /// Left column.
    pub x: i64,
    /// Top row.
    pub y: i64,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels (SeetaFace's boxes are square).
    pub height: u32,
    /// The detector's confidence (summed cascade scores; at least [`SCORE_THRESHOLD`]).
    pub score: f64,
}

/// A face detector with fergpu's settings. Not shareable between threads: make one per
/// thread (construction parses the embedded model, a few milliseconds).
pub struct FaceDetector {
    inner: Box<dyn rustface::Detector>,
}

impl Default for FaceDetector {
    fn default() -> Self {
        FaceDetector::new()
    }
}

impl FaceDetector {
    /// A detector using the embedded SeetaFace model.
    pub fn new() -> FaceDetector {
        let model = rustface::read_model(MODEL).expect("the embedded SeetaFace model parses");
        let mut inner = rustface::create_detector_with_model(model);
        inner.set_min_face_size(20);
        inner.set_score_thresh(SCORE_THRESHOLD);
        inner.set_pyramid_scale_factor(PYRAMID_STEP);
        inner.set_slide_window_step(4, 4);
        FaceDetector { inner }
    }

    /// The faces in `gray`, left to right (then top to bottom). Photos larger than
    /// [`DETECT_MAX_SIDE`] are searched at a smaller size and the boxes scaled back.
    pub fn detect(&mut self, gray: &GrayImage) -> Vec<FaceBox> {
        let (w, h) = gray.dimensions();
        if w.min(h) < WINDOW {
            return vec![];
        }
        let longer = w.max(h);
        let (small, scale) = if longer > DETECT_MAX_SIDE {
            let s = f64::from(DETECT_MAX_SIDE) / f64::from(longer);
            let sw = ((f64::from(w) * s).round() as u32).max(1);
            let sh = ((f64::from(h) * s).round() as u32).max(1);
            let img = image::imageops::resize(gray, sw, sh, image::imageops::FilterType::Triangle);
            (Cow::Owned(img), f64::from(w) / f64::from(sw))
        } else {
            (Cow::Borrowed(gray), 1.0)
        };
        let padded = pad_for_pyramid(small);
        let data = rustface::ImageData::new(padded.as_raw(), padded.width(), padded.height());
        let mut faces: Vec<FaceBox> = self
            .inner
            .detect(&data)
            .into_iter()
            .map(|f| {
                let b = f.bbox();
                FaceBox {
                    x: (f64::from(b.x()) * scale).round() as i64,
                    y: (f64::from(b.y()) * scale).round() as i64,
                    width: (f64::from(b.width()) * scale).round() as u32,
                    height: (f64::from(b.height()) * scale).round() as u32,
                    score: f.score(),
                }
            })
            .collect();
        faces.sort_by_key(|f| (f.x, f.y));
        faces
    }
}

/// rustface computes each pyramid level's size as `(side · scale) as u32` in `f32` and
/// subtracts the 40-pixel window from it unsigned, so a level that rounds to 39 pixels
/// overflows. Such sizes are rare; adding a column or row on the right or bottom (copies of
/// the edge, which move no box) avoids them.
fn pad_for_pyramid(mut img: Cow<'_, GrayImage>) -> Cow<'_, GrayImage> {
    while let Some((grow_w, grow_h)) = pyramid_overflow(img.width(), img.height()) {
        let (w, h) = img.dimensions();
        let (nw, nh) = (w + u32::from(grow_w), h + u32::from(grow_h));
        let padded = GrayImage::from_fn(nw, nh, |x, y| *img.get_pixel(x.min(w - 1), y.min(h - 1)));
        img = Cow::Owned(padded);
    }
    img
}

/// Whether some pyramid level of a `w`×`h` image would be narrower (first) or lower
/// (second) than the window, replaying rustface's arithmetic; `None` when none would.
fn pyramid_overflow(w: u32, h: u32) -> Option<(bool, bool)> {
    let min_scale = WINDOW as f32 / w.min(h) as f32;
    let mut scale = 1.0f32;
    while scale >= min_scale {
        let narrow = ((w as f32 * scale) as u32) < WINDOW;
        let low = ((h as f32 * scale) as u32) < WINDOW;
        if narrow || low {
            return Some((narrow, low));
        }
        scale *= PYRAMID_STEP;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_blank_image_and_one_below_the_window_have_no_face() {
        let mut d = FaceDetector::new();
        assert!(d
            .detect(&GrayImage::from_pixel(200, 150, image::Luma([128])))
            .is_empty());
        assert!(d
            .detect(&GrayImage::from_pixel(39, 300, image::Luma([128])))
            .is_empty());
    }

    #[test]
    fn no_image_size_overflows_the_pyramid_after_padding() {
        for w in 40..400 {
            for h in [40, 41, 50, 99, 100, 257, 399] {
                let img = pad_for_pyramid(Cow::Owned(GrayImage::new(w, h)));
                assert_eq!(pyramid_overflow(img.width(), img.height()), None, "{w}×{h}");
                assert!(img.width() - w <= 3 && img.height() - h <= 3, "{w}×{h}");
            }
        }
    }
}
