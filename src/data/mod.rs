//! FER2013 data: CSV reading and validation, splits, generated faces.
//!
//! Images stay `u8` in memory (83 MB for the full set) and are scaled by 1/255 only when a
//! batch is gathered.

pub mod csv;
mod gz;
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

    /// Images per class.
    pub fn class_counts(&self) -> [usize; NUM_CLASSES] {
        let mut c = [0; NUM_CLASSES];
        for &l in &self.labels {
            c[l as usize] += 1;
        }
        c
    }
}
