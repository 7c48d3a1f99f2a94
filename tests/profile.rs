//! `fergpu profile` on the software adapter (lavapipe in CI): one row per dispatch of a
//! training step, in order, with layers, shapes, variants and shares that add up; with GPU
//! timestamps and with the wall-clock fallback; for the seed CNN, the MLP with autotuning
//! (cache in a scratch folder) and the batch-normalised `compact` preset.
//!
//! The CPU backend's profile (`--adapter cpu`): the same rows, host-timed, with each
//! convolution's algorithm.
//!
//! With no software adapter the tests print a note and pass, unless `CI` or
//! `FERGPU_REQUIRE_GPU=1` is set, where they fail.

mod common;

use common::{have_software_adapter, scratch};

use fergpu::backend::cpu::Isa;
use fergpu::backend::gpu::adapter::AdapterRequest;
use fergpu::backend::gpu::timing::Timer;
use fergpu::backend::gpu::GpuBackend;
use fergpu::profile::{self, ProfileConfig};
use serde_json::Value;
use std::path::Path;
use std::process::Command;

/// `fergpu profile --adapter software --json` with `args`, its cache in `cache`; the JSON.
fn profile_json(args: &[&str], cache: &Path) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_fergpu"))
        .args(["profile", "--adapter", "software", "--json", "--steps", "1"])
        .args(args)
        .env("FERGPU_CACHE_DIR", cache)
        .output()
        .expect("run fergpu");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "fergpu profile {args:?} failed: {stderr}"
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {stderr}"))
}

fn rows(p: &Value) -> &Vec<Value> {
    p["rows"].as_array().expect("rows")
}

fn kernels(p: &Value) -> Vec<&str> {
    rows(p)
        .iter()
        .map(|r| r["kernel"].as_str().unwrap())
        .collect()
}

/// What a profile on any backend satisfies: a step from gather to the optimizer under
/// `timer`, positive times, shares and the busy time adding up.
fn check_step(p: &Value, timer: &str) {
    let k = kernels(p);
    assert_eq!(k.first(), Some(&"gather_batch"), "{k:?}");
    assert_eq!(k.last(), Some(&"optimizer_step"), "{k:?}");
    assert_eq!(p["timer"], timer);
    let micros: Vec<f64> = rows(p)
        .iter()
        .map(|r| r["micros"].as_f64().unwrap())
        .collect();
    assert!(micros.iter().all(|&m| m > 0.0), "{micros:?}");
    let busy = p["gpu_busy_us"].as_f64().unwrap();
    assert!((micros.iter().sum::<f64>() - busy).abs() <= 1e-6 * busy);
    let shares: f64 = rows(p).iter().map(|r| r["share"].as_f64().unwrap()).sum();
    assert!((shares - 100.0).abs() < 1e-6, "shares add up to {shares}");
}

/// What every GPU profile must satisfy: [`check_step`], a variant on every GEMM row, and the
/// timer's own figures.
fn check_common(p: &Value, timer: &str) {
    check_step(p, timer);
    for r in rows(p) {
        let gemm = r["kernel"].as_str().unwrap().starts_with("conv2d_")
            && !r["kernel"].as_str().unwrap().ends_with("_reduce")
            || r["kernel"].as_str().unwrap().starts_with("dense_");
        let v = r["variant"].as_str().unwrap();
        assert_eq!(gemm, v != "-", "{r}");
        if gemm {
            assert!(r["gflops"].as_f64().unwrap() > 0.0, "{r}");
            assert!(r["layer"].as_str().unwrap() != "-", "{r}");
        }
    }
    assert!(p["step_us"].as_f64().unwrap() > 0.0);
    assert!(p["images_per_s"].as_f64().unwrap() > 0.0);
    let host = &p["host"];
    assert!(host["encode_us"].as_f64().unwrap() > 0.0 && host["submit_us"].as_f64().unwrap() > 0.0);
    if timer == "timestamps" {
        assert!(p["idle_gap_us"].is_number() && p["gpu_span_us"].as_f64().unwrap() > 0.0);
    } else {
        assert!(p["idle_gap_us"].is_null() && p["gpu_span_us"].is_null());
        assert!(p["timer_note"].as_str().unwrap().contains("upper bound"));
    }
}

#[test]
fn the_seed_cnn_profile_lists_every_dispatch_of_a_step_by_timestamps_and_by_wall_clock() {
    if !have_software_adapter("profile") {
        return;
    }
    let cache = scratch("profile-cnn-cache");
    let gpu = GpuBackend::new(&AdapterRequest::Software, None).expect("software adapter");
    let mut timers = vec!["wall"];
    if gpu.has_timestamps() {
        timers.push("timestamps");
    }
    drop(gpu);
    for timer in timers {
        let p = profile_json(
            &["--model", "cnn", "--batch-size", "2", "--timer", timer],
            &cache,
        );
        check_common(&p, timer);
        let k = kernels(&p);
        let count = |name: &str| k.iter().filter(|&&n| n == name).count();
        // Four convolutions; the first has no input gradient.
        assert_eq!(count("conv2d_forward"), 4);
        assert_eq!(count("conv2d_backward_weight"), 4);
        assert_eq!(count("conv2d_backward_input"), 3);
        assert_eq!(count("dense_forward") + count("dense_backward_weight"), 4);
        assert_eq!(count("maxpool_forward"), 3);
        let conv1 = &rows(&p)[1];
        assert_eq!(conv1["layer"], "0 conv 128×46×46");
        // Its relu runs in its epilogue: no activation_forward of its own.
        assert_eq!(conv1["shape"], "1x48x48->128 k3 b2 +relu");
        assert_eq!(rows(&p)[2]["kernel"], "maxpool_forward");
        assert_eq!(count("activation_forward"), 1, "the Dense 64's selu only");
        // autotune auto is off on a software adapter: the register kernels.
        assert_eq!(conv1["variant"], "register");
        assert!(p["autotune"].as_str().unwrap().starts_with("off"));
        assert_eq!(p["batch"], 2);
        assert_eq!(p["model"], "cnn");
    }
    // Nothing was cached: autotuning was off.
    assert!(std::fs::read_dir(&cache).unwrap().next().is_none());
}

#[test]
fn autotuning_in_a_profile_measures_once_then_reads_the_cache() {
    if !have_software_adapter("profile") {
        return;
    }
    let cache = scratch("profile-autotune-cache");
    let args = ["--model", "mlp", "--batch-size", "3", "--autotune", "on"];
    let first = profile_json(&args, &cache);
    let timer = first["timer"].as_str().unwrap().to_string();
    check_common(&first, &timer);
    // mlp: three dense layers × forward, input gradient (not for the first), weight gradient.
    let auto = first["autotune"].as_str().unwrap();
    assert!(
        auto.starts_with("on: 8 launch shapes, 8 measured now, 0 from the cache"),
        "{auto}"
    );
    let file: Value =
        serde_json::from_str(&std::fs::read_to_string(cache.join("autotune.json")).unwrap())
            .unwrap();
    let entries = file["entries"].as_object().unwrap();
    assert_eq!(entries.len(), 8, "{entries:?}");
    // Keys bucket the batch to a power of two: batch 3 is tuned as b4.
    let key = entries
        .keys()
        .find(|k| k.ends_with("|dense_forward 2304->120 b4"))
        .expect("the first layer's key");
    assert!(key.contains("llvmpipe"), "{key}");
    let second = profile_json(&args, &cache);
    let auto = second["autotune"].as_str().unwrap();
    assert!(
        auto.starts_with("on: 8 launch shapes, 0 measured now, 8 from the cache"),
        "{auto}"
    );
    // The cached choices are the ones used.
    let row = rows(&second)
        .iter()
        .find(|r| r["kernel"] == "dense_forward" || r["kernel"] == "dense_forward_tiled")
        .unwrap();
    assert_eq!(row["variant"], entries[key]["choice"]);
    // Batch 4 falls in the same bucket: nothing is measured again.
    let args = ["--model", "mlp", "--batch-size", "4", "--autotune", "on"];
    let full = profile_json(&args, &cache);
    let auto = full["autotune"].as_str().unwrap();
    assert!(
        auto.starts_with("on: 8 launch shapes, 0 measured now, 8 from the cache"),
        "{auto}"
    );
}

#[test]
fn the_compact_preset_profiles_through_the_library_with_its_batch_norms() {
    if !have_software_adapter("profile") {
        return;
    }
    let gpu = GpuBackend::new(&AdapterRequest::Software, None).expect("software adapter");
    let cfg = ProfileConfig {
        model: "compact".into(),
        batch: 2,
        steps: 1,
        timer: Some(Timer::Wall),
    };
    let p = profile::run(&gpu, &cfg).expect("profile");
    let bn: Vec<_> = p
        .rows
        .iter()
        .filter(|r| r.kernel == "batchnorm_forward_train")
        .collect();
    // Eight convolutions and the dense layer are each followed by a batch norm.
    assert_eq!(bn.len(), 9);
    assert_eq!(bn[0].layer, "1 batchnorm 32×2304");
    // Its relu runs with it (Backend::batchnorm_act_forward_train), in a kernel of its own
    // here, named by its own op.
    let after = p
        .rows
        .iter()
        .position(|r| r.kernel == "batchnorm_forward_train")
        .unwrap()
        + 1;
    assert_eq!(
        (p.rows[after].kernel.as_str(), p.rows[after].layer.as_str()),
        ("activation_forward", "2 relu")
    );
    assert!(p.rows.iter().any(|r| r.kernel == "dropout_backward"));
    let text = profile::table(&p);
    assert!(
        text.contains("batchnorm_backward") && text.contains("upper bound"),
        "{text}"
    );
}

#[test]
fn a_step_after_the_first_is_one_submission_that_rewrites_only_the_uniforms_that_change() {
    use fergpu::backend::Activation;
    use fergpu::model::{ModelSpec, Plan};
    use fergpu::train::{Trainer, TrainerOptions};
    if !have_software_adapter("profile") {
        return;
    }
    let gpu = GpuBackend::new(&AdapterRequest::Software, None).expect("software adapter");
    let spec = ModelSpec::mlp(Activation::Relu);
    let params = Plan::new(&spec, 1).unwrap().init_params(1);
    let ds = fergpu::data::synth::generate(4 * 4, 3);
    let opts = TrainerOptions {
        batch: 4,
        ..fergpu::settings::Settings::default().trainer_options()
    };
    let mut tr = Trainer::new(&gpu, spec, &params, &ds, &opts).unwrap();
    let mut seen = Vec::new();
    tr.run_epoch(1e-3, &mut |_| {
        seen.push(gpu.traffic());
        true
    });
    assert_eq!(seen.len(), 4);
    // The first step writes every dispatch's uniform slot (16 dispatches, 256 bytes each).
    assert!(seen[0].uniform_bytes >= 16 * 256, "{:?}", seen[0]);
    for w in seen.windows(2) {
        assert_eq!(w[1].submissions - w[0].submissions, 1);
        assert_eq!(
            w[1].readbacks, w[0].readbacks,
            "nothing is read back per step"
        );
        // Only the gather's offset and the optimizer's step change: two slots.
        let bytes = w[1].uniform_bytes - w[0].uniform_bytes;
        assert!(
            bytes > 0 && bytes <= 2 * 256,
            "{bytes} uniform bytes in a step"
        );
    }
}

/// The algorithm of a one-channel convolution's op `r` on this CPU: its forward and weight
/// gradient direct with AVX-512, im2col otherwise.
fn thin(r: &Value) -> &'static str {
    let kernel = r["kernel"].as_str().unwrap();
    let direct = kernel == "conv2d_forward" || kernel == "conv2d_backward_weight";
    if direct && Isa::detect() == Isa::Avx512 {
        "direct"
    } else {
        "im2col+gemm"
    }
}

#[test]
fn the_cpu_backend_profiles_op_by_op_with_each_convolutions_algorithm() {
    let out = Command::new(env!("CARGO_BIN_EXE_fergpu"))
        .args(["profile", "--adapter", "cpu", "--threads", "2", "--json"])
        .args(["--model", "compact", "--batch-size", "8", "--steps", "1"])
        .output()
        .expect("run fergpu");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let p: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(p["on_cpu"], true);
    check_step(&p, "wall");
    assert!(p["step_us"].as_f64().unwrap() > 0.0 && p["images_per_s"].as_f64().unwrap() > 0.0);
    assert_eq!(p["model"], "compact");
    let convs: Vec<&Value> = rows(&p)
        .iter()
        .filter(|r| r["kernel"].as_str().unwrap().starts_with("conv2d_"))
        .collect();
    // compact: 8 convolutions, each forward, input gradient (not the first) and weight
    // gradient.
    assert_eq!(convs.len(), 8 * 3 - 1, "{convs:#?}");
    for r in &convs {
        let variant = r["variant"].as_str().unwrap();
        let shape = r["shape"].as_str().unwrap();
        // The first layer (one input channel) is too thin for Winograd's transforms: im2col,
        // its forward and weight gradient direct where the CPU has AVX-512.
        let want = if shape.starts_with("1x48x48") {
            thin(r)
        } else {
            "winograd"
        };
        assert!(variant.starts_with(want), "{shape}: {variant}");
        assert!(r["gflops"].as_f64().unwrap() > 0.0, "{r}");
        assert!(r["layer"].as_str().unwrap().contains("conv"), "{r}");
    }
    // FERGPU_CPU_CONV=im2col: every convolution the direct way; a bad value names the
    // variable.
    let out = Command::new(env!("CARGO_BIN_EXE_fergpu"))
        .args(["profile", "--adapter", "cpu", "--threads", "2", "--json"])
        .args(["--model", "compact", "--batch-size", "4", "--steps", "1"])
        .env("FERGPU_CPU_CONV", "im2col")
        .output()
        .expect("run fergpu");
    let p: Value = serde_json::from_slice(&out.stdout).unwrap();
    for r in rows(&p)
        .iter()
        .filter(|r| r["kernel"].as_str().unwrap().starts_with("conv2d_"))
    {
        let shape = r["shape"].as_str().unwrap();
        let want = if shape.starts_with("1x48x48") {
            thin(r)
        } else {
            "im2col+gemm"
        };
        assert_eq!(r["variant"], want, "{shape}");
    }
    let out = Command::new(env!("CARGO_BIN_EXE_fergpu"))
        .args(["profile", "--adapter", "cpu", "--steps", "1"])
        .env("FERGPU_CPU_CONV", "fft")
        .output()
        .expect("run fergpu");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("FERGPU_CPU_CONV=fft"));
    // A GPU-only flag is an error naming it.
    let out = Command::new(env!("CARGO_BIN_EXE_fergpu"))
        .args(["profile", "--adapter", "cpu", "--variant", "register"])
        .output()
        .expect("run fergpu");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--variant"));
}
