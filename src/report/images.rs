//! Looking at the data: chosen rows exported as PNG files, and the per-split class counts.

use super::{encode_png, write_atomic};
use crate::data::{Dataset, Usage, EMOTIONS};
use crate::error::{Error, Result};
use crate::shape::{IMAGE_SIDE, NUM_CLASSES};
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
    use crate::shape::IMAGE_PIXELS;

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
