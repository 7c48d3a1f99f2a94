//! Where a face's 48×48 input comes from: the square around a detected face that frames it
//! as FER2013 frames its faces, or the centred square of a photo that is already a face.
//!
//! FER2013's faces were registered so that the face fills most of the 48×48 frame, from
//! the top of the forehead to below the chin. The face detector's box is tighter (brows to
//! chin, cheek to cheek), so the crop is a larger square, centred a little differently.
//! [`FER_SCALE`], [`FER_SHIFT_X`] and [`FER_SHIFT_Y`] were measured by running the detector
//! on FER2013 faces themselves (`examples/calibrate_crop.rs`, see `assets/seetaface/README.md`):
//! the crop rule is the inverse of where the detector puts its box inside a FER2013 frame.

use super::faces::FaceBox;
use crate::shape::IMAGE_SIDE;
use image::imageops::FilterType;
use image::GrayImage;

/// Side of the FER2013 frame over the side of the detector's box around the same face
/// (the median over FER2013 PublicTest faces the detector finds).
pub const FER_SCALE: f32 = 1.10;
/// Horizontal offset of the frame's centre from the box's centre, in box sides (median).
pub const FER_SHIFT_X: f32 = 0.0;
/// Vertical offset of the frame's centre from the box's centre, in box sides (median;
/// positive is down).
pub const FER_SHIFT_Y: f32 = 0.0;

/// Images whose sides are both in this range (pixels) are taken as already-cropped faces
/// unless told otherwise: FER2013-style crops, too small for the detector's 40-pixel window
/// to find a face that fills them.
pub const FACE_SIZED: std::ops::RangeInclusive<u32> = 48..=64;

/// True for an image of 48×48 to 64×64 pixels (see [`FACE_SIZED`]).
pub fn is_face_sized(width: u32, height: u32) -> bool {
    FACE_SIZED.contains(&width) && FACE_SIZED.contains(&height)
}

/// A square of image pixels: columns `x..x + side`, rows `y..y + side`. It may reach past
/// the image; pixels outside repeat the nearest edge pixel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Square {
    /// Left column (may be negative).
    pub x: i64,
    /// Top row (may be negative).
    pub y: i64,
    /// Side in pixels, at least 1.
    pub side: u32,
}

impl Square {
    /// True when the square lies entirely inside a `width`×`height` image.
    pub fn is_inside(&self, width: u32, height: u32) -> bool {
        self.x >= 0
            && self.y >= 0
            && self.x + i64::from(self.side) <= i64::from(width)
            && self.y + i64::from(self.side) <= i64::from(height)
    }
}

/// The FER2013-style square around a detected face: [`FER_SCALE`] times the box's side,
/// centred [`FER_SHIFT_X`], [`FER_SHIFT_Y`] box sides from the box's centre.
pub fn fer_square(b: &FaceBox) -> Square {
    let w = b.width as f64;
    let h = b.height as f64;
    let box_side = w.max(h);
    let side = (box_side * f64::from(FER_SCALE)).round().max(1.0);
    let cx = b.x as f64 + w / 2.0 + f64::from(FER_SHIFT_X) * box_side;
    let cy = b.y as f64 + h / 2.0 + f64::from(FER_SHIFT_Y) * box_side;
    Square {
        x: (cx - side / 2.0).round() as i64,
        y: (cy - side / 2.0).round() as i64,
        side: side as u32,
    }
}

/// The centred square of a `width`×`height` image: the shorter side is kept, the longer one
/// trimmed equally on both ends (the whole-image mode).
pub fn centre_square(width: u32, height: u32) -> Square {
    let side = width.min(height);
    Square {
        x: i64::from((width - side) / 2),
        y: i64::from((height - side) / 2),
        side,
    }
}

/// The pixels of `sq` in `gray`, resized to 48×48 with a triangle (bilinear, widened when
/// shrinking) filter: `(48·48)` row-major. Pixels outside the image repeat its edge.
pub fn crop_to_input(gray: &GrayImage, sq: Square) -> Vec<u8> {
    let (w, h) = gray.dimensions();
    assert!(w > 0 && h > 0, "an image has pixels");
    let patch = if sq.is_inside(w, h) {
        image::imageops::crop_imm(gray, sq.x as u32, sq.y as u32, sq.side, sq.side).to_image()
    } else {
        GrayImage::from_fn(sq.side, sq.side, |px, py| {
            let x = (sq.x + i64::from(px)).clamp(0, i64::from(w) - 1);
            let y = (sq.y + i64::from(py)).clamp(0, i64::from(h) - 1);
            *gray.get_pixel(x as u32, y as u32)
        })
    };
    let side = IMAGE_SIDE as u32;
    image::imageops::resize(&patch, side, side, FilterType::Triangle).into_raw()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn centre_square_keeps_the_shorter_side() {
        assert_eq!(
            centre_square(100, 60),
            Square {
                x: 20,
                y: 0,
                side: 60
            }
        );
        assert_eq!(
            centre_square(60, 151),
            Square {
                x: 0,
                y: 45,
                side: 60
            }
        );
    }

    #[test]
    fn face_sized_is_48_to_64_on_both_sides() {
        assert!(is_face_sized(48, 48) && is_face_sized(64, 48) && is_face_sized(50, 60));
        assert!(!is_face_sized(47, 48) && !is_face_sized(48, 65) && !is_face_sized(640, 480));
    }

    #[test]
    fn pixels_outside_the_image_repeat_the_edge() {
        // A 4×4 image whose columns are 0, 10, 20, 30; a 48-pixel square far to the left
        // sees only column 0, one far to the right only column 30.
        let g = GrayImage::from_fn(4, 4, |x, _| image::Luma([(x * 10) as u8]));
        let left = crop_to_input(
            &g,
            Square {
                x: -100,
                y: 0,
                side: 48,
            },
        );
        assert!(left.iter().all(|&v| v == 0));
        let right = crop_to_input(
            &g,
            Square {
                x: 4,
                y: -10,
                side: 48,
            },
        );
        assert!(right.iter().all(|&v| v == 30));
    }
}
