//! FER2013 data: CSV reading and validation, splits, generated faces.
//!
//! Images stay `u8` in memory (83 MB for the full set) and are scaled by 1/255 only when a
//! batch is gathered.

pub mod csv;
mod gz;
pub mod stream;
pub mod synth;

use crate::shape::{IMAGE_PIXELS, NUM_CLASSES};

/// Emotion names, indexed by label.
pub const EMOTIONS: [&str; NUM_CLASSES] = [
    "Angry", "Disgust", "Fear", "Happy", "Sad", "Surprise", "Neutral",
];

/// The `Usage` column: which split of FER2013 a row belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Usage {
    /// The training set (28,709 rows).
    Training,
    /// The public test set (3,589 rows); fergpu's test split by default.
    PublicTest,
    /// The private test set (3,589 rows); fergpu's validation split by default.
    PrivateTest,
}

impl Usage {
    /// All three, in file order.
    pub const ALL: [Usage; 3] = [Usage::Training, Usage::PublicTest, Usage::PrivateTest];

    /// The name as written in the CSV.
    pub fn name(self) -> &'static str {
        match self {
            Usage::Training => "Training",
            Usage::PublicTest => "PublicTest",
            Usage::PrivateTest => "PrivateTest",
        }
    }

    /// Parses the CSV name (surrounding whitespace ignored, case-sensitive as in the file).
    pub fn from_name(s: &str) -> Option<Usage> {
        Usage::ALL.into_iter().find(|u| u.name() == s.trim())
    }
}

/// A set of labelled 48×48 grayscale images, kept as `u8`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Dataset {
    /// Pixels `(n, 48·48)`, row-major, 0..=255.
    pub pixels: Vec<u8>,
    /// Labels `(n)`, 0..7.
    pub labels: Vec<u8>,
    /// Split of each row `(n)`.
    pub usage: Vec<Usage>,
}

impl Dataset {
    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// True when there are no images.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The pixels of image `i`, `(48·48)`.
    pub fn image(&self, i: usize) -> &[u8] {
        &self.pixels[i * IMAGE_PIXELS..(i + 1) * IMAGE_PIXELS]
    }

    /// Appends one image.
    pub fn push(&mut self, pixels: &[u8], label: u8, usage: Usage) {
        assert_eq!(pixels.len(), IMAGE_PIXELS);
        assert!((label as usize) < NUM_CLASSES);
        self.pixels.extend_from_slice(pixels);
        self.labels.push(label);
        self.usage.push(usage);
    }

    /// The rows at `rows`, in that order.
    pub fn subset(&self, rows: &[usize]) -> Dataset {
        let mut out = Dataset {
            pixels: Vec::with_capacity(rows.len() * IMAGE_PIXELS),
            labels: Vec::with_capacity(rows.len()),
            usage: Vec::with_capacity(rows.len()),
        };
        for &r in rows {
            out.push(self.image(r), self.labels[r], self.usage[r]);
        }
        out
    }

    /// Row indices whose usage is one of `splits`, in file order.
    pub fn rows_of(&self, splits: &[Usage]) -> Vec<usize> {
        (0..self.len())
            .filter(|&i| splits.contains(&self.usage[i]))
            .collect()
    }

    /// The rows whose usage is one of `splits`, in file order.
    pub fn split(&self, splits: &[Usage]) -> Dataset {
        self.subset(&self.rows_of(splits))
    }

    /// A 64-bit fingerprint of the images and labels, in order: two sets with the same
    /// fingerprint hold the same data (for telling whether a run's data changed; not a
    /// cryptographic hash). Fast enough for FER2013's 83 MB (well under a second).
    pub fn fingerprint(&self) -> u64 {
        let mut h = Fingerprint::default();
        h.add(&(self.len() as u64).to_le_bytes());
        h.add(&self.labels);
        h.add(&self.pixels);
        h.finish()
    }

    /// Images per class.
    pub fn class_counts(&self) -> [usize; NUM_CLASSES] {
        let mut c = [0; NUM_CLASSES];
        for &l in &self.labels {
            c[l as usize] += 1;
        }
        c
    }
}

/// FxHash-style word mixing with a final avalanche (MurmurHash3's finaliser).
#[derive(Default)]
struct Fingerprint {
    h: u64,
}

impl Fingerprint {
    const K: u64 = 0x517c_c1b7_2722_0a95;

    fn word(&mut self, w: u64) {
        self.h = (self.h.rotate_left(5) ^ w).wrapping_mul(Self::K);
    }

    fn add(&mut self, bytes: &[u8]) {
        let mut words = bytes.chunks_exact(8);
        for w in &mut words {
            self.word(u64::from_le_bytes(w.try_into().expect("8 bytes")));
        }
        let mut last = [0u8; 8];
        let rest = words.remainder();
        last[..rest.len()].copy_from_slice(rest);
        self.word(u64::from_le_bytes(last) ^ ((rest.len() as u64) << 56));
    }

    fn finish(&self) -> u64 {
        let mut x = self.h;
        x ^= x >> 33;
        x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
        x ^= x >> 33;
        x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        x ^ (x >> 33)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fingerprint_changes_with_any_pixel_label_or_row() {
        let ds = synth::generate(20, 1);
        let base = ds.fingerprint();
        assert_eq!(base, ds.clone().fingerprint());
        let mut px = ds.clone();
        px.pixels[777] ^= 1;
        let mut label = ds.clone();
        label.labels[3] = (label.labels[3] + 1) % NUM_CLASSES as u8;
        let fewer = ds.subset(&(0..19).collect::<Vec<_>>());
        for other in [px, label, fewer] {
            assert_ne!(other.fingerprint(), base);
        }
    }
}
