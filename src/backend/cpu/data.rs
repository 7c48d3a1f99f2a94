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
