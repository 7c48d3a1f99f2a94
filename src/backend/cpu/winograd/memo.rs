//! Evaluation's transformed filters, kept from one batch to the next.
//!
//! A Winograd convolution first transforms its filter, `U = G·w·Gᵀ` for every channel pair
//! (`α² · in_c · out_c` values), which in evaluation is the same every batch: the weights do
//! not change. Transforming them again costs more than the pass itself shows, since `U`
//! (up to 6.5 MB for 256 → 256 channels) is written cold and pushes the batch's activations
//! out of the cache: measured, evaluation of `compact` at batch 64 ran about 9% faster
//! without it (docs/RESULTS.md).
//!
//! The memo is a memoisation of a pure function, not a cache that trusts its caller: an
//! entry is used only when the weights handed in are bit for bit those it was made from (one
//! comparison, a read of the weights), for the same tile, channel counts and orientation, so
//! a hit gives exactly what the transform would. The backend memoises the watched
//! (evaluation) forwards only: a training step's weights change every step, where the
//! comparison and the copy would be spent for nothing.

/// What a transformed filter depends on besides the weights: the tile (`α`), the computed
/// convolution's input and output channels, and whether the filter is turned (an input
/// gradient's).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct MemoKey {
    /// `α`: 4, 5 or 6.
    pub alpha: usize,
    /// Input channels of the computed convolution.
    pub ci: usize,
    /// Output channels.
    pub co: usize,
    /// Turned by 180° with the channels swapped.
    pub flip: bool,
}

#[derive(Default)]
struct Entry {
    key: MemoKey,
    /// The weights `u` was made from (compared bit for bit).
    weight: Vec<f32>,
    /// The transformed filter.
    u: Vec<f32>,
}

/// The most recently used transformed filters, at most [`FilterMemo::ENTRIES`] (one per
/// convolution of a network; the least recently used goes first).
#[derive(Default)]
pub struct FilterMemo {
    /// Least recently used first.
    entries: Vec<Entry>,
}

impl FilterMemo {
    /// Entries kept: more than the Winograd convolutions of any preset (7 in `compact`).
    pub const ENTRIES: usize = 16;

    /// The transformed filter of `weight` for `key`, `len` values: a kept one made from
    /// the same bits, else `fill`ed now (into a cleared entry) and kept.
    pub fn get_or_fill(
        &mut self,
        key: MemoKey,
        weight: &[f32],
        len: usize,
        fill: impl FnOnce(&mut [f32]),
    ) -> &[f32] {
        let same = |e: &Entry| e.key == key && e.u.len() == len && same_bits(&e.weight, weight);
        let entry = match self.entries.iter().position(same) {
            Some(i) => self.entries.remove(i),
            None => {
                let mut e = if self.entries.len() >= Self::ENTRIES {
                    self.entries.remove(0)
                } else {
                    Entry::default()
                };
                e.key = key;
                e.weight.clear();
                e.weight.extend_from_slice(weight);
                e.u.clear();
                e.u.resize(len, 0.0);
                fill(&mut e.u);
                e
            }
        };
        self.entries.push(entry);
        &self.entries[self.entries.len() - 1].u
    }

    /// Entries kept now.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.entries.len()
    }
}

/// Whether `a` and `b` hold the same bits (unlike `==`, NaN is its own equal and −0 is not
/// +0: the transform of either would differ).
fn same_bits(a: &[f32], b: &[f32]) -> bool {
    bytemuck::cast_slice::<f32, u32>(a) == bytemuck::cast_slice::<f32, u32>(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(ci: usize) -> MemoKey {
        MemoKey {
            alpha: 6,
            ci,
            co: 2,
            flip: false,
        }
    }

    /// A "transform" that records how often it ran.
    fn fill_with(calls: &mut usize, v: f32) -> impl FnOnce(&mut [f32]) + '_ {
        move |u: &mut [f32]| {
            *calls += 1;
            u.fill(v);
        }
    }

    #[test]
    fn a_hit_needs_the_same_bits_key_and_length() {
        let mut memo = FilterMemo::default();
        let mut calls = 0;
        let w = [1.0, -0.0, f32::NAN];
        assert_eq!(
            memo.get_or_fill(key(1), &w, 3, fill_with(&mut calls, 1.0)),
            [1.0; 3]
        );
        // Same bits (NaN included): kept.
        assert_eq!(
            memo.get_or_fill(key(1), &w, 3, fill_with(&mut calls, 2.0)),
            [1.0; 3]
        );
        assert_eq!(calls, 1);
        // +0 for −0, another key, another length: each filled anew.
        let w2 = [1.0, 0.0, f32::NAN];
        assert_eq!(
            memo.get_or_fill(key(1), &w2, 3, fill_with(&mut calls, 3.0)),
            [3.0; 3]
        );
        assert_eq!(
            memo.get_or_fill(key(2), &w, 3, fill_with(&mut calls, 4.0)),
            [4.0; 3]
        );
        assert_eq!(
            memo.get_or_fill(key(1), &w, 4, fill_with(&mut calls, 5.0)),
            [5.0; 4]
        );
        assert_eq!(calls, 4);
        // Each of those is kept.
        assert_eq!(
            memo.get_or_fill(key(1), &w2, 3, fill_with(&mut calls, 6.0)),
            [3.0; 3]
        );
        assert_eq!(
            memo.get_or_fill(key(1), &w, 3, fill_with(&mut calls, 6.0)),
            [1.0; 3]
        );
        assert_eq!(calls, 4);
    }

    #[test]
    fn the_least_recently_used_entry_goes_first() {
        let mut memo = FilterMemo::default();
        let mut calls = 0;
        for k in 0..FilterMemo::ENTRIES {
            memo.get_or_fill(key(k), &[k as f32], 1, fill_with(&mut calls, k as f32));
        }
        // Use entry 0 again, then add one more: entry 1 (now the oldest) goes.
        memo.get_or_fill(key(0), &[0.0], 1, fill_with(&mut calls, -1.0));
        memo.get_or_fill(key(99), &[9.0], 1, fill_with(&mut calls, 99.0));
        assert_eq!(memo.len(), FilterMemo::ENTRIES);
        assert_eq!(calls, FilterMemo::ENTRIES + 1);
        assert_eq!(
            memo.get_or_fill(key(0), &[0.0], 1, fill_with(&mut calls, -1.0)),
            [0.0]
        );
        assert_eq!(calls, FilterMemo::ENTRIES + 1);
        assert_eq!(
            memo.get_or_fill(key(1), &[1.0], 1, fill_with(&mut calls, -1.0)),
            [-1.0]
        );
        assert_eq!(calls, FilterMemo::ENTRIES + 2);
    }
}
