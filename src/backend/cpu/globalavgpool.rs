//! Global average pooling (`shaders/globalavgpool.wgsl`): one mean per image and channel.

use super::batchnorm::sum;
use super::planes_per_task;
use crate::shape::GlobalAvgPoolShape;
use rayon::prelude::*;

/// `out (batch, c)`: the mean of each plane of `input (batch, c, hw)`, summed in `f64`.
pub fn globalavgpool_forward(out: &mut [f32], input: &[f32], s: &GlobalAvgPoolShape) {
    let hw = s.hw;
    out[..s.output_len()]
        .par_iter_mut()
        .with_min_len(planes_per_task(hw))
        .enumerate()
        .for_each(|(p, o)| *o = (sum(&input[p * hw..(p + 1) * hw]) / hw as f64) as f32);
}

/// `d_input (batch, c, hw)`: each plane gets its `d_out (batch, c)` value over `hw`.
pub fn globalavgpool_backward(d_input: &mut [f32], d_out: &[f32], s: &GlobalAvgPoolShape) {
    let hw = s.hw;
    d_input[..s.input_len()]
        .par_chunks_mut(hw)
        .with_min_len(planes_per_task(hw))
        .zip(&d_out[..s.output_len()])
        .for_each(|(d, &g)| d.fill(g / hw as f32));
}
