//! Times the CPU backend's three ops of one 3×3 convolution (padding 1 unless `PAD` is
//! given), each the best of `reps` runs on warm caches (the per-op table of `fergpu profile
//! --adapter cpu` times them inside a training step instead, caches as the step leaves
//! them):
//!
//! ```sh
//! cargo run --release --example conv_bench -- BATCH IN_C SIDE OUT_C REPS [PAD]   # 64 32 48 32 15
//! FERGPU_CPU_CONV=f2 cargo run --release --example conv_bench -- 64 256 6 256 15
//! ```
//!
//! Two threads, the algorithm from `FERGPU_CPU_CONV` (default: Winograd where it applies).
use fergpu::backend::cpu::{ConvAlgorithm, CpuBackend, CpuOptions};
use fergpu::backend::Backend;
use fergpu::shape::Conv2dShape;
use std::time::Instant;

fn main() {
    let a: Vec<usize> = std::env::args()
        .skip(1)
        .map(|v| v.parse().unwrap())
        .collect();
    let (batch, in_c, side, out_c, reps) = (a[0], a[1], a[2], a[3], a[4]);
    let pad = a.get(5).copied().unwrap_or(1);
    let s = Conv2dShape {
        batch,
        in_c,
        in_h: side,
        in_w: side,
        out_c,
        k: 3,
        pad,
    };
    let be = CpuBackend::with_options(CpuOptions {
        threads: 2,
        conv: ConvAlgorithm::from_env().unwrap(),
    })
    .unwrap();
    let x: Vec<f32> = (0..s.input_len())
        .map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5)
        .collect();
    let p: Vec<f32> = (0..s.weight_len() + out_c)
        .map(|i| ((i * 104729) % 1000) as f32 / 5000.0 - 0.1)
        .collect();
    let dy: Vec<f32> = (0..s.output_len())
        .map(|i| ((i * 31) % 1000) as f32 / 1000.0 - 0.5)
        .collect();
    let mut y = vec![0.0; s.output_len()];
    let mut dx = vec![0.0; s.input_len()];
    let mut dp = vec![0.0; p.len()];
    let mut best = [f64::MAX; 3];
    for _ in 0..reps {
        let t = Instant::now();
        be.conv2d_forward(&mut y, &x, &p, 0, s.weight_len(), &s);
        best[0] = best[0].min(t.elapsed().as_secs_f64());
        let t = Instant::now();
        be.conv2d_backward_input(&mut dx, &dy, &p, 0, &s);
        best[1] = best[1].min(t.elapsed().as_secs_f64());
        let t = Instant::now();
        be.conv2d_backward_weight(&mut dp, 0, s.weight_len(), &dy, &x, &s);
        best[2] = best[2].min(t.elapsed().as_secs_f64());
    }
    println!("{batch}x{in_c}x{side}->{out_c}: fwd {:.2} ms, bwd_in {:.2} ms, bwd_w {:.2} ms (best of {reps})", best[0]*1e3, best[1]*1e3, best[2]*1e3);
}
