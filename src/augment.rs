//! Training-time data augmentation: random horizontal flips and small shifts.
//!
//! Augmentation is drawn on the host, once per epoch, from the same seeded generator as the
//! shuffle, and travels to the gather kernel inside the epoch's order buffer: each `u32`
//! entry packs a row index with how to read that row (see [`pack`]). Both backends decode it
//! the same way, so augmented batches are bit-identical on the CPU and the GPU, and a resumed
//! run redraws exactly the augmentation it would have drawn.
//!
//! The image read for output pixel `(y, x)` of an entry is source pixel
//! `(clamp(y + dy), clamp(x' + dx))` with `x' = 47 − x` when flipped, else `x`, and clamp to
//! `0..=47`: a shift repeats the edge pixels (Keras's `fill_mode="nearest"`).

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
}
