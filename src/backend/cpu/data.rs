//! Gathering a batch out of the data set (`shaders/data.wgsl`), one image per parallel task.

use crate::augment;
use crate::shape::IMAGE_PIXELS;
use rayon::prelude::*;

/// The factor a pixel byte is multiplied by: the `f32` nearest 1/255. Both backends compute
/// `f32(byte) * PIXEL_SCALE` (a multiply, not a division), so gathered batches are
/// bit-identical.
pub const PIXEL_SCALE: f32 = 1.0 / 255.0;

/// `x (batch, 48·48)` and `labels (batch)` from images `order[offset..offset + batch]` of
/// `pixels (n, 48·48)` and `all_labels (n)`; each order entry is a row index packed with an
/// optional flip and shift (see [`crate::augment::pack`]).
pub fn gather_batch(
    x: &mut [f32],
    labels: &mut [u32],
    pixels: &[u8],
    all_labels: &[u8],
    order: &[u32],
    offset: usize,
    batch: usize,
) {
    let rows = &order[offset..offset + batch];
    x[..batch * IMAGE_PIXELS]
        .par_chunks_mut(IMAGE_PIXELS)
        .zip(rows.par_iter())
        .for_each(|(x, &entry)| {
            let (r, flip, dx, dy) = augment::unpack(entry);
            let src = &pixels[r as usize * IMAGE_PIXELS..(r as usize + 1) * IMAGE_PIXELS];
            if entry == r {
                for (x, &p) in x.iter_mut().zip(src) {
                    *x = f32::from(p) * PIXEL_SCALE;
                }
            } else {
                for (px, x) in x.iter_mut().enumerate() {
                    let p = src[augment::source_pixel(px, flip, dx, dy)];
                    *x = f32::from(p) * PIXEL_SCALE;
                }
            }
        });
    for (l, &entry) in labels[..batch].iter_mut().zip(rows) {
        *l = u32::from(all_labels[(entry & augment::ROW_MASK) as usize]);
    }
}

/// The factor a warped sample (a pixel value times 65536, see [`crate::augment`]) is
/// multiplied by: exactly `PIXEL_SCALE / 65536`, so an unwarped sample gathers to the value
/// [`crate::backend::Backend::gather_batch`] gives, bit for bit.
pub const WARPED_PIXEL_SCALE: f32 = PIXEL_SCALE / 65536.0;

/// [`gather_batch`] with each image also scaled, rotated (bilinear) and partly erased as
/// `warp (n, WARP_WORDS)` says for its order position ([`crate::augment::ImageWarp`]):
/// `x (batch, 48·48)`, `labels (batch)` from `order[offset..offset + batch]` and
/// `warp[offset·4..(offset + batch)·4]`.
#[allow(clippy::too_many_arguments)]
pub fn gather_batch_warped(
    x: &mut [f32],
    labels: &mut [u32],
    pixels: &[u8],
    all_labels: &[u8],
    order: &[u32],
    warp: &[u32],
    offset: usize,
    batch: usize,
) {
    let rows = &order[offset..offset + batch];
    let warps = &warp[offset * augment::WARP_WORDS..(offset + batch) * augment::WARP_WORDS];
    x[..batch * IMAGE_PIXELS]
        .par_chunks_mut(IMAGE_PIXELS)
        .zip(rows.par_iter())
        .zip(warps.par_chunks(augment::WARP_WORDS))
        .for_each(|((x, &entry), w)| {
            let r = (entry & augment::ROW_MASK) as usize;
            let src = &pixels[r * IMAGE_PIXELS..(r + 1) * IMAGE_PIXELS];
            let w = augment::ImageWarp::from_words(w);
            for (px, x) in x.iter_mut().enumerate() {
                // The sum is below 2²⁴: exact in f32.
                *x = w.sample(src, px, entry) as f32 * WARPED_PIXEL_SCALE;
            }
        });
    for (l, &entry) in labels[..batch].iter_mut().zip(rows) {
        *l = u32::from(all_labels[(entry & augment::ROW_MASK) as usize]);
    }
}
