//! Training-time data augmentation: flips and shifts packed into the order buffer, and
//! scale, rotation and random erasing in a per-image warp buffer.
//!
//! Augmentation is drawn on the host, once per epoch, from the same seeded generator as the
//! shuffle, and reaches the gather kernel in buffers uploaded once per epoch (never per
//! batch):
//! - the order: each `u32` entry packs a row index with a flip and a shift (see [`pack`]);
//! - the warp, only when scale, rotation or erasing is on ([`Warp`]): [`WARP_WORDS`] words
//!   per order position, an [`ImageWarp`], drawn after every flip and shift of the epoch, so
//!   a run with only flips and shifts draws exactly what it drew before the warp existed.
//!
//! Both backends decode both buffers with the same integer arithmetic and end with the same
//! single `f32` multiply, so augmented batches are bit-identical on the CPU and the GPU, and
//! a resumed run redraws exactly the augmentation it would have drawn.
//!
//! # Flip and shift (`Backend::gather_batch`)
//!
//! The image read for output pixel `(y, x)` of an entry is source pixel
//! `(clamp(y + dy), clamp(x' + dx))` with `x' = 47 − x` when flipped, else `x`, and clamp to
//! `0..=47`: a shift repeats the edge pixels (Keras's `fill_mode="nearest"`).
//!
//! # Scale and rotation (`Backend::gather_batch_warped`)
//!
//! Each output pixel is mapped back to a source position: mirrored first, then scaled and
//! rotated about the image centre `c = (23.5, 23.5)`, then shifted. With `y` pointing down,
//! ```text
//! src = c + (dx, dy) + (1/s)·R·((x', y) − c),   R = [[cos θ, −sin θ], [sin θ, cos θ]]
//! ```
//! so `s > 1` zooms in (the face looks larger) and a positive `θ` turns the picture
//! counter-clockwise on screen (as PIL, Keras and torchvision rotate). In fixed point, with
//! `A = round(65536·cos θ / s)` and `B = round(65536·sin θ / s)` ([`ImageWarp`]),
//! `u = 2x' − 47` and `v = 2y − 47` (the offset from the centre in half pixels):
//! ```text
//! X = ((A·u − B·v + 256) >> 9) + 128·47 + 256·dx      position in 1/256 pixel (>> floors)
//! Y = ((B·u + A·v + 256) >> 9) + 128·47 + 256·dy
//! ```
//! The value is bilinear between the four pixels around `(X/256, Y/256)`: with
//! `x0 = X >> 8`, `fx = X & 255` (the same for `y`) and each tap's row and column clamped to
//! `0..=47` (edge pixels repeat, as for the shift),
//! ```text
//! sum = (256 − fy)·((256 − fx)·p[y0, x0] + fx·p[y0, x0+1])
//!     +        fy ·((256 − fx)·p[y0+1, x0] + fx·p[y0+1, x0+1])
//! ```
//! an integer below 2²⁴, so `f32(sum)` is exact, and the gathered value is
//! `f32(sum)·(PIXEL_SCALE / 65536)`. With no scale and no rotation (`A = 65536`, `B = 0`)
//! that is `f32(p)·PIXEL_SCALE`, the plain gather's value, bit for bit.
//!
//! # Random erasing
//!
//! After the transform, a rectangle of output pixels `x0 ≤ x < x0 + w`, `y0 ≤ y < y0 + h`
//! ([`EraseRect`]) is replaced by uniform noise (Zhong et al. 2020, "Random Erasing Data
//! Augmentation", whose default fill is random values): output pixel `px = y·48 + x` gets the
//! byte [`erase_noise`]`(key, px)` of an integer hash of the image's drawn key, the same on
//! both backends (`sum = byte·65536` above).
//!
//! # What is drawn
//!
//! For each order position in turn, each draw only when its setting is on: the scale
//! `s` uniform in `1 − S..1 + S`; the angle `θ` uniform in `−N..N` degrees; whether to erase
//! (probability `p`), and then, as torchvision's `RandomErasing`, up to 10 tries of an area
//! uniform in the area range (a share of the 48×48 image) and an aspect ratio `h/w`
//! log-uniform in `0.3..1/0.3`, giving `h = round(√(area·ratio))`, `w = round(√(area/ratio))`;
//! the first try with `1 ≤ h, w < 48` places the rectangle uniformly and draws its noise key,
//! and if none fits nothing is erased.

use crate::rng::Rng;
use crate::shape::IMAGE_SIDE;
use crate::{Error, Result};

/// Bits of an order entry that hold the row index; rows must be below `1 << ROW_BITS`.
pub const ROW_BITS: u32 = 23;
/// Mask of the row index in an order entry.
pub const ROW_MASK: u32 = (1 << ROW_BITS) - 1;
/// The largest shift, in pixels, an order entry can carry (4-bit two's complement).
pub const MAX_SHIFT: u32 = 7;

/// Which augmentations a training run draws. The default draws none (the notebook's recipe).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Augment {
    /// Mirror each image left–right with probability 1/2.
    pub flip: bool,
    /// Shift each image by up to this many pixels along each axis (uniform in `−s..=s`).
    pub shift: u32,
}

/// One entry of an order buffer: row `row`, mirrored when `flip`, shifted by `(dx, dy)`.
///
/// Layout: bits 0–22 the row, bits 23–26 `dx` and 27–30 `dy` as 4-bit two's complement,
/// bit 31 the flip. An entry with no augmentation is the bare row index.
pub fn pack(row: u32, flip: bool, dx: i32, dy: i32) -> u32 {
    assert!(row <= ROW_MASK, "row {row} does not fit an order entry");
    let s = MAX_SHIFT as i32;
    assert!((-s..=s).contains(&dx) && (-s..=s).contains(&dy));
    row | ((dx as u32 & 0xf) << ROW_BITS)
        | ((dy as u32 & 0xf) << (ROW_BITS + 4))
        | (u32::from(flip) << 31)
}

/// The inverse of [`pack`]: `(row, flip, dx, dy)`.
pub fn unpack(entry: u32) -> (u32, bool, i32, i32) {
    let signed = |bits: u32| ((bits & 0xf) as i32 ^ 8) - 8;
    (
        entry & ROW_MASK,
        entry >> 31 == 1,
        signed(entry >> ROW_BITS),
        signed(entry >> (ROW_BITS + 4)),
    )
}

/// Source index `(y · 48 + x)` of output pixel `px` for an entry's flip and shift.
pub fn source_pixel(px: usize, flip: bool, dx: i32, dy: i32) -> usize {
    let last = IMAGE_SIDE as i32 - 1;
    let (y, x) = ((px / IMAGE_SIDE) as i32, (px % IMAGE_SIDE) as i32);
    let x = if flip { last - x } else { x };
    let sy = (y + dy).clamp(0, last) as usize;
    let sx = (x + dx).clamp(0, last) as usize;
    sy * IMAGE_SIDE + sx
}

impl Augment {
    /// No augmentation.
    pub const NONE: Augment = Augment {
        flip: false,
        shift: 0,
    };

    /// True when this draws anything.
    pub fn is_active(self) -> bool {
        self.flip || self.shift > 0
    }

    /// Parses `none`, `flip`, `shift=N` or `flip,shift=N` (N ≤ 7 pixels).
    pub fn parse(s: &str) -> Result<Augment> {
        let bad = |why: &str| {
            Error::Config(format!(
                "augment '{s}': {why} (expected none, flip, shift=N or flip,shift=N with N ≤ {MAX_SHIFT})"
            ))
        };
        let mut a = Augment::NONE;
        for part in s.split(',').map(str::trim) {
            match part.split_once('=') {
                None if part == "none" => {}
                None if part == "flip" => a.flip = true,
                Some(("shift", n)) => {
                    a.shift = n
                        .trim()
                        .parse()
                        .map_err(|_| bad("the shift is not a number"))?;
                    if a.shift > MAX_SHIFT {
                        return Err(bad("the shift is too large"));
                    }
                }
                _ => return Err(bad(&format!("unknown part '{part}'"))),
            }
        }
        Ok(a)
    }

    /// The canonical spelling that [`Augment::parse`] reads back.
    pub fn name(self) -> String {
        match (self.flip, self.shift) {
            (false, 0) => "none".into(),
            (true, 0) => "flip".into(),
            (false, s) => format!("shift={s}"),
            (true, s) => format!("flip,shift={s}"),
        }
    }

    /// Packs an augmentation drawn from `rng` into every row index of `order` (in place).
    /// Draws nothing, and leaves `order` as it is, when inactive.
    pub fn draw(self, rng: &mut Rng, order: &mut [u32]) {
        if !self.is_active() {
            return;
        }
        let span = 2 * self.shift as usize + 1;
        let shift = |rng: &mut Rng| rng.below(span) as i32 - self.shift as i32;
        for e in order {
            let flip = self.flip && rng.next_u64() >> 63 == 1;
            let dx = shift(rng);
            let dy = shift(rng);
            *e = pack(*e, flip, dx, dy);
        }
    }
}

impl serde::Serialize for Augment {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.name())
    }
}

impl<'de> serde::Deserialize<'de> for Augment {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Augment, D::Error> {
        let s = String::deserialize(d)?;
        Augment::parse(&s).map_err(serde::de::Error::custom)
    }
}

// ---- scale, rotation and erasing ------------------------------------------------------------

/// `u32` words per order position in the warp buffer: `A`, `B`, the erased rectangle and the
/// noise key (see [`ImageWarp::words`]).
pub const WARP_WORDS: usize = 4;
/// Fixed-point one of the warp matrix entries `A`, `B` (16 fractional bits).
pub const WARP_ONE: i32 = 1 << 16;
/// Steps per pixel of a sample position, and the sum of one axis's two bilinear weights.
pub const SUBPIXEL: i32 = 256;
/// The largest scale setting: factors from 0.5 to 1.5, so `|A|, |B| ≤ 2·WARP_ONE` and every
/// product of the transform fits an `i32`.
pub const MAX_SCALE: f64 = 0.5;
/// The largest rotation setting, in degrees.
pub const MAX_ROTATE: f64 = 180.0;
/// Tries at placing an erased rectangle before giving up (as torchvision).
const ERASE_TRIES: usize = 10;
/// Aspect ratios `h/w` of an erased rectangle lie in `ERASE_RATIO..1/ERASE_RATIO`.
const ERASE_RATIO: f64 = 0.3;

/// A range of erased areas, as shares of the image: `min..=max`, spelled `MIN-MAX`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AreaRange {
    /// Smallest share of the image erased.
    pub min: f64,
    /// Largest share of the image erased.
    pub max: f64,
}

impl AreaRange {
    /// Zhong et al.'s range, 2 % to 40 % of the image.
    pub const DEFAULT: AreaRange = AreaRange {
        min: 0.02,
        max: 0.4,
    };

    /// Parses `MIN-MAX` (two numbers, e.g. `0.02-0.4`). Whether they make a usable range is
    /// for `Settings::validate` to say.
    pub fn parse(s: &str) -> Result<AreaRange> {
        let bad = || {
            Error::Config(format!(
                "erase area '{s}': expected MIN-MAX, two shares of the image such as 0.02-0.4"
            ))
        };
        let (lo, hi) = s.split_once('-').ok_or_else(bad)?;
        let num = |t: &str| t.trim().parse::<f64>().map_err(|_| bad());
        Ok(AreaRange {
            min: num(lo)?,
            max: num(hi)?,
        })
    }

    /// The spelling [`AreaRange::parse`] reads back.
    pub fn name(self) -> String {
        format!("{}-{}", self.min, self.max)
    }

    /// True for a usable range: `0 < min ≤ max ≤ 1`.
    pub fn is_valid(self) -> bool {
        self.min > 0.0 && self.min <= self.max && self.max <= 1.0
    }
}

impl serde::Serialize for AreaRange {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.name())
    }
}

impl<'de> serde::Deserialize<'de> for AreaRange {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<AreaRange, D::Error> {
        let s = String::deserialize(d)?;
        AreaRange::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// The erased rectangle of one image, in output pixels: `x ≤ col < x + w`, `y ≤ row < y + h`.
/// `w = 0` or `h = 0` erases nothing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EraseRect {
    /// First column.
    pub x: u32,
    /// First row.
    pub y: u32,
    /// Width in pixels.
    pub w: u32,
    /// Height in pixels.
    pub h: u32,
}

impl EraseRect {
    /// Whether output pixel `(row, col)` is erased.
    pub fn contains(self, row: u32, col: u32) -> bool {
        col >= self.x && col < self.x + self.w && row >= self.y && row < self.y + self.h
    }
}

/// One image's scale, rotation and erasing, as the gather kernels read it (see the module
/// docs for the arithmetic).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ImageWarp {
    /// `round(65536·cos θ / s)`.
    pub a: i32,
    /// `round(65536·sin θ / s)`.
    pub b: i32,
    /// The erased rectangle.
    pub erase: EraseRect,
    /// The key of the erased rectangle's noise ([`erase_noise`]).
    pub key: u32,
}

impl ImageWarp {
    /// No scale, no rotation, nothing erased.
    pub const IDENTITY: ImageWarp = ImageWarp {
        a: WARP_ONE,
        b: 0,
        erase: EraseRect {
            x: 0,
            y: 0,
            w: 0,
            h: 0,
        },
        key: 0,
    };

    /// Zoom by `scale` (> 1 zooms in; at least `1 − MAX_SCALE`), rotate by `degrees`
    /// (counter-clockwise on screen), then erase `erase` with noise `key`.
    pub fn new(scale: f64, degrees: f64, erase: EraseRect, key: u32) -> ImageWarp {
        assert!(
            scale >= 1.0 - MAX_SCALE && scale.is_finite(),
            "scale {scale} out of range"
        );
        assert!(erase.x + erase.w <= IMAGE_SIDE as u32 && erase.y + erase.h <= IMAGE_SIDE as u32);
        let (sin, cos) = degrees.to_radians().sin_cos();
        let fixed = |v: f64| (v / scale * WARP_ONE as f64).round() as i32;
        ImageWarp {
            a: fixed(cos),
            b: fixed(sin),
            erase,
            key,
        }
    }

    /// The buffer words: `A` and `B` as two's complement, the rectangle as bytes
    /// `x | y << 8 | w << 16 | h << 24`, and the key.
    pub fn words(self) -> [u32; WARP_WORDS] {
        let r = self.erase;
        [
            self.a as u32,
            self.b as u32,
            r.x | r.y << 8 | r.w << 16 | r.h << 24,
            self.key,
        ]
    }

    /// The inverse of [`ImageWarp::words`].
    pub fn from_words(w: &[u32]) -> ImageWarp {
        let byte = |i: u32| (w[2] >> (8 * i)) & 0xff;
        ImageWarp {
            a: w[0] as i32,
            b: w[1] as i32,
            erase: EraseRect {
                x: byte(0),
                y: byte(1),
                w: byte(2),
                h: byte(3),
            },
            key: w[3],
        }
    }

    /// The source position of output pixel `(row, col)` for an entry's flip and shift, in
    /// `1/SUBPIXEL` pixels from the top-left pixel's centre: `(X, Y)` of the module docs.
    pub fn source_position(self, row: i32, col: i32, flip: bool, dx: i32, dy: i32) -> (i32, i32) {
        let last = IMAGE_SIDE as i32 - 1;
        let col = if flip { last - col } else { col };
        let (u, v) = (2 * col - last, 2 * row - last);
        // (A·u, …) are in 2⁻¹⁷ pixel (16 fractional bits times half pixels): round to 2⁻⁸.
        let to_sub = |t: i32| (t + 256) >> 9;
        let centre = SUBPIXEL / 2 * last;
        (
            to_sub(self.a * u - self.b * v) + centre + SUBPIXEL * dx,
            to_sub(self.b * u + self.a * v) + centre + SUBPIXEL * dy,
        )
    }

    /// Output pixel `px` (`row·48 + col`) of `image (48·48)` gathered with `entry`'s flip and
    /// shift and this warp, as the integer `sum` of the module docs: the pixel value times
    /// 65536 (`0..=255·65536`).
    pub fn sample(self, image: &[u8], px: usize, entry: u32) -> u32 {
        let side = IMAGE_SIDE as i32;
        let (row, col) = ((px / IMAGE_SIDE) as u32, (px % IMAGE_SIDE) as u32);
        if self.erase.contains(row, col) {
            return u32::from(erase_noise(self.key, px as u32)) << 16;
        }
        let (_, flip, dx, dy) = unpack(entry);
        let (x, y) = self.source_position(row as i32, col as i32, flip, dx, dy);
        let (x0, y0) = (x >> 8, y >> 8);
        let (fx, fy) = ((x & 255) as u32, (y & 255) as u32);
        let at = |r: i32, c: i32| {
            let (r, c) = (r.clamp(0, side - 1), c.clamp(0, side - 1));
            u32::from(image[(r * side + c) as usize])
        };
        let (gx, gy) = (SUBPIXEL as u32 - fx, SUBPIXEL as u32 - fy);
        gy * (gx * at(y0, x0) + fx * at(y0, x0 + 1))
            + fy * (gx * at(y0 + 1, x0) + fx * at(y0 + 1, x0 + 1))
    }
}

/// The noise byte of erased output pixel `px` of an image whose key is `key`: the top byte of
/// an integer hash (`lowbias32`, C. Wellons) of `key ^ px·0x9e3779b9`, uniform in `0..=255`.
/// `shaders/data.wgsl` computes the same with wrapping `u32` arithmetic.
pub fn erase_noise(key: u32, px: u32) -> u8 {
    let mut h = key ^ px.wrapping_mul(0x9e37_79b9);
    h ^= h >> 16;
    h = h.wrapping_mul(0x7feb_352d);
    h ^= h >> 15;
    h = h.wrapping_mul(0x846c_a68b);
    h ^= h >> 16;
    (h >> 24) as u8
}

/// Which scale, rotation and erasing a training run draws; the default draws none. They
/// travel in the warp buffer (see the module docs), apart from [`Augment`]'s flips and shifts.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Warp {
    /// Zoom by a factor uniform in `1 − scale..1 + scale` (0: off; at most [`MAX_SCALE`]).
    pub scale: f64,
    /// Rotate by an angle uniform in `−rotate..rotate` degrees (0: off; at most
    /// [`MAX_ROTATE`]).
    pub rotate: f64,
    /// Probability of erasing a rectangle (0: off).
    pub erase: f64,
    /// The erased rectangle's area, as shares of the image.
    pub erase_area: AreaRange,
}

impl Default for Warp {
    /// [`Warp::NONE`].
    fn default() -> Self {
        Warp::NONE
    }
}

/// Uniform in `[0, 1)` with 53 random bits.
fn unit(rng: &mut Rng) -> f64 {
    (rng.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

impl Warp {
    /// No scale, rotation or erasing.
    pub const NONE: Warp = Warp {
        scale: 0.0,
        rotate: 0.0,
        erase: 0.0,
        erase_area: AreaRange::DEFAULT,
    };

    /// True when this draws anything (and training needs the warp buffer).
    pub fn is_active(self) -> bool {
        self.scale > 0.0 || self.rotate > 0.0 || self.erase > 0.0
    }

    /// One image's warp drawn from `rng` (see the module docs for the order of the draws).
    pub fn draw_one(self, rng: &mut Rng) -> ImageWarp {
        assert!(
            (0.0..=MAX_SCALE).contains(&self.scale)
                && (0.0..=MAX_ROTATE).contains(&self.rotate)
                && (0.0..=1.0).contains(&self.erase)
                && (self.erase == 0.0 || self.erase_area.is_valid()),
            "{self:?} was not validated"
        );
        let scale = if self.scale > 0.0 {
            1.0 + self.scale * (2.0 * unit(rng) - 1.0)
        } else {
            1.0
        };
        let degrees = if self.rotate > 0.0 {
            self.rotate * (2.0 * unit(rng) - 1.0)
        } else {
            0.0
        };
        let (mut erase, mut key) = (EraseRect::default(), 0);
        if self.erase > 0.0 && unit(rng) < self.erase {
            let side = IMAGE_SIDE as f64;
            let (lo, hi) = (self.erase_area.min, self.erase_area.max);
            let log_ratio = ERASE_RATIO.ln();
            for _ in 0..ERASE_TRIES {
                let area = side * side * (lo + (hi - lo) * unit(rng));
                let ratio = (log_ratio * (2.0 * unit(rng) - 1.0)).exp();
                let h = (area * ratio).sqrt().round() as u32;
                let w = (area / ratio).sqrt().round() as u32;
                let fits = |n: u32| n >= 1 && n < IMAGE_SIDE as u32;
                if fits(h) && fits(w) {
                    let y = rng.below(IMAGE_SIDE - h as usize + 1) as u32;
                    let x = rng.below(IMAGE_SIDE - w as usize + 1) as u32;
                    erase = EraseRect { x, y, w, h };
                    key = (rng.next_u64() >> 32) as u32;
                    break;
                }
            }
        }
        ImageWarp::new(scale, degrees, erase, key)
    }

    /// The warp buffer `(n, WARP_WORDS)` of an epoch of `n` order positions, drawn from `rng`
    /// after the order's flips and shifts; empty, drawing nothing, when inactive.
    pub fn draw(self, rng: &mut Rng, n: usize) -> Vec<u32> {
        if !self.is_active() {
            return Vec::new();
        }
        (0..n).flat_map(|_| self.draw_one(rng).words()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pack_round_trips_and_a_bare_row_is_unaugmented() {
        for &(row, flip, dx, dy) in &[
            (0, false, 0, 0),
            (ROW_MASK, true, -7, 7),
            (35_886, false, 3, -2),
        ] {
            assert_eq!(unpack(pack(row, flip, dx, dy)), (row, flip, dx, dy));
        }
        assert_eq!(pack(41, false, 0, 0), 41);
        assert_eq!(unpack(41), (41, false, 0, 0));
    }

    #[test]
    fn source_pixel_flips_shifts_and_clamps() {
        assert_eq!(source_pixel(0, false, 0, 0), 0);
        assert_eq!(source_pixel(0, true, 0, 0), 47);
        assert_eq!(source_pixel(48 + 5, false, 2, 1), 2 * 48 + 7);
        assert_eq!(source_pixel(0, false, -3, -3), 0); // clamped to the corner
        assert_eq!(source_pixel(47, false, 4, 0), 47); // clamped at the right edge
        assert_eq!(source_pixel(1, true, 1, 0), 47); // mirrored x = 46, then +1
    }

    #[test]
    fn parse_and_name_agree() {
        for s in ["none", "flip", "shift=3", "flip,shift=2"] {
            assert_eq!(Augment::parse(s).unwrap().name(), s);
        }
        assert_eq!(
            Augment::parse("shift=2, flip").unwrap(),
            Augment {
                flip: true,
                shift: 2
            }
        );
        for bad in ["mirror", "shift=8", "shift=x", "flip,shift"] {
            assert!(Augment::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn draw_keeps_rows_and_uses_every_choice() {
        let a = Augment {
            flip: true,
            shift: 2,
        };
        let mut order: Vec<u32> = (0..2000).collect();
        a.draw(&mut Rng::new(5), &mut order);
        let decoded: Vec<_> = order.iter().map(|&e| unpack(e)).collect();
        assert!(decoded.iter().enumerate().all(|(i, d)| d.0 == i as u32));
        let flips = decoded.iter().filter(|d| d.1).count();
        assert!((800..1200).contains(&flips), "{flips} flips of 2000");
        for s in -2..=2 {
            assert!(decoded.iter().any(|d| d.2 == s) && decoded.iter().any(|d| d.3 == s));
        }
        assert!(decoded.iter().all(|d| d.2.abs() <= 2 && d.3.abs() <= 2));
        let mut same: Vec<u32> = (0..10).collect();
        Augment::NONE.draw(&mut Rng::new(5), &mut same);
        assert_eq!(same, (0..10).collect::<Vec<u32>>());
    }

    #[test]
    fn image_warp_words_round_trip() {
        let rect = EraseRect {
            x: 3,
            y: 40,
            w: 44,
            h: 7,
        };
        let w = ImageWarp::new(0.8, -33.0, rect, 0xdead_beef);
        assert_eq!(ImageWarp::from_words(&w.words()), w);
        let c = 33f64.to_radians();
        assert_eq!(w.a, (c.cos() / 0.8 * 65536.0).round() as i32);
        assert_eq!(w.b, (-c.sin() / 0.8 * 65536.0).round() as i32);
        let id = ImageWarp::new(1.0, 0.0, EraseRect::default(), 0);
        assert_eq!(id, ImageWarp::IDENTITY);
        assert_eq!(ImageWarp::from_words(&id.words()), id);
    }

    #[test]
    fn source_positions_of_identity_quarter_turn_and_zoom() {
        let id = ImageWarp::IDENTITY;
        for px in 0..IMAGE_SIDE * IMAGE_SIDE {
            let (row, col) = ((px / IMAGE_SIDE) as i32, (px % IMAGE_SIDE) as i32);
            assert_eq!(
                id.source_position(row, col, false, 0, 0),
                (256 * col, 256 * row)
            );
            // With flips and shifts, the pixel the plain gather reads (inside the image).
            let (x, y) = id.source_position(row, col, true, 3, -2);
            let (sx, sy) = (47 - col + 3, row - 2);
            assert_eq!((x, y), (256 * sx, 256 * sy));
        }
        // A quarter turn counter-clockwise: the top-right corner comes to the top-left, so
        // output (row, col) reads source (col, 47 − row).
        let quarter = ImageWarp::new(1.0, 90.0, EraseRect::default(), 0);
        assert_eq!((quarter.a, quarter.b), (0, WARP_ONE));
        for (row, col) in [(0, 0), (0, 47), (10, 3), (47, 20)] {
            let (x, y) = quarter.source_position(row, col, false, 0, 0);
            assert_eq!((x, y), (256 * (47 - row), 256 * col), "({row}, {col})");
        }
        // Zoom ×2: output pixels 23 and 24 (0.5 from the centre) read 0.25 from the centre.
        let zoom = ImageWarp::new(2.0, 0.0, EraseRect::default(), 0);
        assert_eq!(
            zoom.source_position(23, 24, false, 0, 0),
            (256 * 23 + 128 + 64, 256 * 23 + 128 - 64)
        );
        assert_eq!(
            zoom.source_position(0, 0, false, 0, 0),
            (256 * 47 / 4, 256 * 47 / 4)
        );
    }

    #[test]
    fn samples_interpolate_clamp_and_erase() {
        let image: Vec<u8> = (0..IMAGE_SIDE * IMAGE_SIDE)
            .map(|i| (i * 7 % 251) as u8)
            .collect();
        let id = ImageWarp::IDENTITY;
        for px in [0, 47, 100, 2303] {
            for entry in [pack(0, false, 0, 0), pack(0, true, -7, 5)] {
                let (_, flip, dx, dy) = unpack(entry);
                let want = u32::from(image[source_pixel(px, flip, dx, dy)]) << 16;
                assert_eq!(id.sample(&image, px, entry), want, "px {px}");
            }
        }
        // Zoom ×2 at output (23, 24): source (23.25, 23.75), weights ¾·¼ and so on.
        let zoom = ImageWarp::new(2.0, 0.0, EraseRect::default(), 0);
        let p = |r: usize, c: usize| u32::from(image[r * 48 + c]);
        let want =
            192 * (64 * p(23, 23) + 192 * p(23, 24)) + 64 * (64 * p(24, 23) + 192 * p(24, 24));
        assert_eq!(zoom.sample(&image, 23 * 48 + 24, 0), want);
        // Zoomed out, the corners read past the edge: the edge pixel repeats.
        let out = ImageWarp::new(0.5, 0.0, EraseRect::default(), 0);
        assert_eq!(out.sample(&image, 0, 0), p(0, 0) << 16);
        assert_eq!(out.sample(&image, 2303, 0), p(47, 47) << 16);
        // Inside the rectangle, noise; outside, the image.
        let rect = EraseRect {
            x: 5,
            y: 10,
            w: 3,
            h: 2,
        };
        let erased = ImageWarp::new(1.0, 0.0, rect, 77);
        for px in 0..IMAGE_SIDE * IMAGE_SIDE {
            let (row, col) = (px / 48, px % 48);
            let inside = (5..8).contains(&col) && (10..12).contains(&row);
            let want = if inside {
                u32::from(erase_noise(77, px as u32)) << 16
            } else {
                u32::from(image[px]) << 16
            };
            assert_eq!(erased.sample(&image, px, 0), want, "px {px}");
        }
    }

    #[test]
    fn erase_noise_covers_every_byte_evenly_and_depends_on_the_key() {
        let mut counts = [0usize; 256];
        for key in 0..64u32 {
            for px in 0..2304 {
                counts[erase_noise(key, px) as usize] += 1;
            }
        }
        // 147,456 draws: 576 per byte expected, ±5σ ≈ ±120.
        assert!(
            counts.iter().all(|&c| (456..696).contains(&c)),
            "{counts:?}"
        );
        let a: Vec<u8> = (0..100).map(|px| erase_noise(1, px)).collect();
        let b: Vec<u8> = (0..100).map(|px| erase_noise(2, px)).collect();
        assert_ne!(a, b);
    }

    #[test]
    fn warp_draws_stay_in_their_ranges_and_none_draws_nothing() {
        let w = Warp {
            scale: 0.2,
            rotate: 15.0,
            erase: 0.5,
            erase_area: AreaRange {
                min: 0.05,
                max: 0.3,
            },
        };
        let n = 4000;
        let words = w.draw(&mut Rng::new(8), n);
        assert_eq!(words.len(), n * WARP_WORDS);
        assert_eq!(words, w.draw(&mut Rng::new(8), n), "seeded");
        let (mut erased, mut scales, mut angles) = (0, Vec::new(), Vec::new());
        for chunk in words.chunks(WARP_WORDS) {
            let iw = ImageWarp::from_words(chunk);
            let (a, b) = (iw.a as f64 / 65536.0, iw.b as f64 / 65536.0);
            scales.push(1.0 / a.hypot(b));
            angles.push(b.atan2(a).to_degrees());
            let r = iw.erase;
            if r.w > 0 {
                erased += 1;
                assert!(r.x + r.w <= 48 && r.y + r.h <= 48, "{r:?}");
                let share = (r.w * r.h) as f64 / 2304.0;
                // Rounding each side to whole pixels moves the area a little.
                assert!((0.03..0.36).contains(&share), "{r:?}: {share}");
                let ratio = r.h as f64 / r.w as f64;
                assert!((0.25..4.0).contains(&ratio), "{r:?}");
            }
        }
        assert!((1800..2200).contains(&erased), "{erased} of {n} erased");
        let within = |v: &[f64], lo: f64, hi: f64| v.iter().all(|x| (lo..=hi).contains(x));
        assert!(within(&scales, 0.7999, 1.2001));
        assert!(within(&angles, -15.001, 15.001));
        // Both ends of each range are reached.
        assert!(scales.iter().any(|&s| s < 0.81) && scales.iter().any(|&s| s > 1.19));
        assert!(angles.iter().any(|&a| a < -14.9) && angles.iter().any(|&a| a > 14.9));

        let mut rng = Rng::new(3);
        assert!(Warp::NONE.draw(&mut rng, 10).is_empty());
        assert_eq!(rng.state(), Rng::new(3).state(), "nothing drawn");
        // Erasing alone leaves the transform the identity.
        let only = Warp {
            erase: 1.0,
            ..Warp::NONE
        };
        let iw = ImageWarp::from_words(&only.draw(&mut rng, 1));
        assert_eq!((iw.a, iw.b), (WARP_ONE, 0));
        assert!(iw.erase.w > 0);
    }

    #[test]
    fn area_ranges_parse_and_name_alike() {
        let r = AreaRange::parse("0.02-0.4").unwrap();
        assert_eq!(r, AreaRange::DEFAULT);
        assert_eq!(AreaRange::parse(&r.name()).unwrap(), r);
        assert!(r.is_valid());
        for bad in ["0.4", "a-b", "0.1-"] {
            assert!(AreaRange::parse(bad).is_err(), "{bad}");
        }
        for (min, max) in [(0.0, 0.5), (0.5, 0.2), (0.1, 1.5), (f64::NAN, 0.3)] {
            assert!(!AreaRange { min, max }.is_valid(), "{min}-{max}");
        }
    }
}
