//! Autotuning on the software adapter, its cache in a scratch folder: a miss measures every
//! variant and writes the cache, a hit reads it, `refresh` measures again, `off` never
//! measures nor writes, a corrupt cache is ignored with a note and rewritten; the results of
//! a tuned launch are the reference's (timing the candidates on the launch's own buffers
//! leaves nothing behind).
//!
//! With no software adapter the tests print a note and pass, unless `CI` or
//! `FERGPU_REQUIRE_GPU=1` is set, where they fail.

mod common;

use common::{assert_close, have_software_adapter, random_vec, scratch};
use fergpu::backend::cpu::CpuBackend;
use fergpu::backend::gpu::adapter::AdapterRequest;
use fergpu::backend::gpu::autotune::{Autotune, Source, CACHE_FILE};
use fergpu::backend::gpu::tiles::{Gemm, GemmShape, TuneKey};
use fergpu::backend::gpu::{GpuBackend, GpuOptions};
use fergpu::backend::Backend;
use fergpu::shape::Conv2dShape;
use std::path::Path;

fn open(mode: Autotune, cache: &Path) -> GpuBackend {
    let opts = GpuOptions {
        autotune: mode,
        cache_dir: Some(cache.to_path_buf()),
        ..GpuOptions::default()
    };
    GpuBackend::with_options(&AdapterRequest::Software, None, &opts).expect("software adapter")
}

const SHAPE: Conv2dShape = Conv2dShape {
    batch: 2,
    in_c: 8,
    in_h: 10,
    in_w: 9,
    out_c: 16,
    k: 3,
    pad: 1,
};

/// The forward convolution of [`SHAPE`] on `be` (weights at 3, bias after them).
fn forward<B: Backend>(be: &B) -> Vec<f32> {
    let s = SHAPE;
    let params = be.upload(&random_vec(3 + s.weight_len() + s.out_c, -0.5, 0.5, 1));
    let x = be.upload(&random_vec(s.input_len(), -1.0, 1.0, 2));
    let mut y = be.upload(&vec![7.0; s.output_len()]);
    be.conv2d_forward(&mut y, &x, &params, 3, 3 + s.weight_len(), &s);
    be.submit();
    be.download(&y)
}

fn key() -> TuneKey {
    TuneKey {
        gemm: Gemm::Conv2dForward,
        shape: GemmShape::Conv(SHAPE),
    }
}

/// The one choice `be` made, with where it came from.
fn the_choice(be: &GpuBackend) -> (Source, String) {
    let choices = be.choices();
    assert_eq!(choices.len(), 1, "{choices:?}");
    assert_eq!(choices[0].0, key());
    (choices[0].1.source, choices[0].1.variant.to_string())
}

fn cache_entries(cache: &Path) -> serde_json::Map<String, serde_json::Value> {
    let text = std::fs::read_to_string(cache.join(CACHE_FILE)).expect("the cache file");
    let v: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
    v["entries"].as_object().expect("entries").clone()
}

#[test]
fn a_miss_measures_a_hit_reads_the_cache_and_refresh_measures_again() {
    if !have_software_adapter("autotune") {
        return;
    }
    let cache = scratch("autotune-miss-hit");
    let want = forward(&CpuBackend::new(1));

    let be = open(Autotune::On, &cache);
    assert_close("tuned forward", &forward(&be), &want, 1e-4, 1e-4);
    be.check().unwrap();
    let (source, measured) = the_choice(&be);
    assert_eq!(source, Source::Measured);
    let entries = cache_entries(&cache);
    assert_eq!(entries.len(), 1);
    let (k, entry) = entries.iter().next().unwrap();
    assert!(k.ends_with("|conv2d_forward 8x10x9->16 k3 p1 b2"), "{k}");
    assert_eq!(entry["choice"], measured.as_str());
    // Every variant the adapter runs was timed.
    let timed = entry["measured"].as_object().unwrap();
    assert_eq!(
        timed.len(),
        fergpu::backend::gpu::tiles::Variant::all().len()
    );
    drop(be);

    let be = open(Autotune::On, &cache);
    assert_close("cached forward", &forward(&be), &want, 1e-4, 1e-4);
    assert_eq!(the_choice(&be), (Source::Cached, measured.clone()));
    drop(be);

    let be = open(Autotune::Refresh, &cache);
    forward(&be);
    assert_eq!(the_choice(&be).0, Source::Measured);
    assert_eq!(cache_entries(&cache).len(), 1, "refresh replaces the entry");
}

#[test]
fn off_and_auto_on_a_software_adapter_neither_measure_nor_write() {
    if !have_software_adapter("autotune") {
        return;
    }
    let cache = scratch("autotune-off");
    for mode in [Autotune::Off, Autotune::Auto] {
        let be = open(mode, &cache);
        forward(&be);
        assert_eq!(the_choice(&be), (Source::Default, "register".to_string()));
        assert!(
            !be.autotune_state().0,
            "{mode:?} measures on a software adapter"
        );
    }
    assert!(!cache.join(CACHE_FILE).exists());
}

#[test]
fn a_corrupt_cache_is_ignored_with_a_note_and_rewritten() {
    if !have_software_adapter("autotune") {
        return;
    }
    let cache = scratch("autotune-corrupt");
    std::fs::write(
        cache.join(CACHE_FILE),
        "{\"version\": 1, \"entries\": [oops",
    )
    .unwrap();
    let be = open(Autotune::On, &cache);
    let (measuring, notes) = be.autotune_state();
    assert!(measuring);
    assert!(
        notes
            .iter()
            .any(|n| n.contains("ignoring the autotune cache")),
        "{notes:?}"
    );
    let want = forward(&CpuBackend::new(1));
    assert_close("forward", &forward(&be), &want, 1e-4, 1e-4);
    assert_eq!(the_choice(&be).0, Source::Measured);
    assert_eq!(cache_entries(&cache).len(), 1);
}
