//! Looking at the data: chosen rows exported as PNG files (as they are, or augmented as
//! training sees them), and the per-split class counts.

use super::encode_png;
use crate::augment::{self, Augment, ImageWarp, Warp};
use crate::data::{Dataset, Usage, EMOTIONS};
use crate::error::{Error, Result};
use crate::files::write_atomic;
use crate::rng::Rng;
use crate::shape::{IMAGE_PIXELS, IMAGE_SIDE, NUM_CLASSES};
use std::path::Path;

/// Writes each of `rows` of `ds` to `dir` (created if missing) as a 48×48 grayscale PNG named
/// `<row>_<emotion>.png`, e.g. `17_Happy.png`. Returns how many files were written. A row
/// past the end of the data is an error, reported before anything is written.
pub fn export_images(ds: &Dataset, rows: &[usize], dir: &Path) -> Result<usize> {
    if let Some(&bad) = rows.iter().find(|&&r| r >= ds.len()) {
        return Err(Error::Config(format!(
            "row {bad} does not exist: the data has {} rows (0..{})",
            ds.len(),
            ds.len()
        )));
    }
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    for &row in rows {
        let path = dir.join(image_name(row, ds.labels[row]));
        let side = IMAGE_SIDE as u32;
        // image (48, 48), one byte per pixel
        let png = encode_png(
            &path,
            ds.image(row),
            side,
            side,
            image::ExtendedColorType::L8,
        )?;
        write_atomic(&path, &png)?;
    }
    Ok(rows.len())
}

/// `<row>_<emotion>.png`.
pub fn image_name(row: usize, label: u8) -> String {
    format!("{row}_{}.png", EMOTIONS[label as usize])
}

/// What [`export_augmented_images`] draws.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AugmentedCopies {
    /// Flips and shifts.
    pub augment: Augment,
    /// Scale, rotation and erasing.
    pub warp: Warp,
    /// Seed of the generator the copies are drawn from.
    pub seed: u64,
    /// Copies of each image.
    pub copies: usize,
}

/// `<row>_<emotion>_aug<k>.png`, augmented copy `k` (from 1) of a row.
pub fn augmented_image_name(row: usize, label: u8, k: usize) -> String {
    format!("{row}_{}_aug{k}.png", EMOTIONS[label as usize])
}

/// `image (48·48)` as gathered for training with order entry `entry` (its flip and shift)
/// and `warp`, rounded back to bytes: the training gather's integer samples
/// ([`ImageWarp::sample`]), divided by 65536 to the nearest byte.
pub fn augmented_image(image: &[u8], entry: u32, warp: &ImageWarp) -> Vec<u8> {
    assert_eq!(image.len(), IMAGE_PIXELS, "an image is 48·48 bytes");
    (0..IMAGE_PIXELS)
        .map(|px| ((warp.sample(image, px, entry) + (1 << 15)) >> 16) as u8)
        .collect()
}

/// Writes each of `rows` as [`export_images`] does and, beside it, `draw.copies` augmented
/// copies named by [`augmented_image_name`]. The copies are drawn as training draws an epoch
/// (every row's flip and shift, then every row's warp), copy after copy, from one generator
/// seeded with `draw.seed`, and computed with the training gather's arithmetic
/// ([`augmented_image`]). Returns how many files were written.
pub fn export_augmented_images(
    ds: &Dataset,
    rows: &[usize],
    dir: &Path,
    draw: &AugmentedCopies,
) -> Result<usize> {
    let mut written = export_images(ds, rows, dir)?;
    let mut rng = Rng::new(draw.seed);
    let side = IMAGE_SIDE as u32;
    for k in 1..=draw.copies {
        // Order entries pack the position in `rows`, as the training order packs a row.
        let mut order: Vec<u32> = (0..rows.len() as u32).collect();
        draw.augment.draw(&mut rng, &mut order);
        let words = draw.warp.draw(&mut rng, rows.len());
        for (i, (&row, &entry)) in rows.iter().zip(&order).enumerate() {
            let warp = if words.is_empty() {
                ImageWarp::IDENTITY
            } else {
                ImageWarp::from_words(&words[i * augment::WARP_WORDS..][..augment::WARP_WORDS])
            };
            let pixels = augmented_image(ds.image(row), entry, &warp); // (48, 48)
            let path = dir.join(augmented_image_name(row, ds.labels[row], k));
            let png = encode_png(&path, &pixels, side, side, image::ExtendedColorType::L8)?;
            write_atomic(&path, &png)?;
            written += 1;
        }
    }
    Ok(written)
}

/// The data at a glance: images per emotion in each split and in all, as an aligned text
/// table (the notebook's `value_counts`), with a total line.
pub fn info_text(ds: &Dataset) -> String {
    // counts[split][class]; the last column is the whole data set.
    let mut counts = [[0usize; NUM_CLASSES]; 4];
    for (&label, &usage) in ds.labels.iter().zip(&ds.usage) {
        let split = Usage::ALL.iter().position(|&u| u == usage).unwrap_or(0);
        counts[split][label as usize] += 1;
        counts[3][label as usize] += 1;
    }
    let heads = ["Training", "PublicTest", "PrivateTest", "All"];
    let name_w = EMOTIONS.iter().map(|n| n.len()).max().unwrap_or(0).max(7);
    let mut out = format!("{:<name_w$}", "emotion");
    for h in heads {
        out.push_str(&format!("  {h:>11}"));
    }
    out.push('\n');
    let line = |name: &str, values: [usize; 4]| {
        let mut s = format!("{name:<name_w$}");
        for v in values {
            s.push_str(&format!("  {v:>11}"));
        }
        s.push('\n');
        s
    };
    for (c, name) in EMOTIONS.iter().enumerate() {
        out.push_str(&line(name, counts.map(|split| split[c])));
    }
    out.push_str(&line(
        "total",
        counts.map(|split| split.iter().sum::<usize>()),
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_counts_per_split() {
        let mut ds = Dataset::default();
        let px = [0u8; IMAGE_PIXELS];
        ds.push(&px, 3, Usage::Training);
        ds.push(&px, 3, Usage::Training);
        ds.push(&px, 0, Usage::PublicTest);
        ds.push(&px, 6, Usage::PrivateTest);
        let text = info_text(&ds);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 1 + NUM_CLASSES + 1);
        let cols = |l: &str| l.split_whitespace().map(String::from).collect::<Vec<_>>();
        assert_eq!(
            cols(lines[0]),
            ["emotion", "Training", "PublicTest", "PrivateTest", "All"]
        );
        assert_eq!(cols(lines[4]), ["Happy", "2", "0", "0", "2"]);
        assert_eq!(cols(lines[1]), ["Angry", "0", "1", "0", "1"]);
        assert_eq!(cols(lines[8]), ["total", "2", "1", "1", "4"]);
        // Aligned: every line has the same width.
        assert!(lines.iter().all(|l| l.len() == lines[0].len()));
    }
}
