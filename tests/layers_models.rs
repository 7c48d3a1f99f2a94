//! The modern layers inside models: the `vgg` and `compact` presets' shapes, model files with
//! the new layer types (and their errors), training-vs-evaluation mode, batch norm's limits
//! on tiny batches, checkpoints with running statistics, and one training step of the
//! compact preset on the GPU against the CPU reference (skipped without a GPU adapter unless
//! `CI` or `FERGPU_REQUIRE_GPU=1`).

mod common;

use common::assert_close;
use fergpu::backend::cpu::CpuBackend;
use fergpu::backend::gpu::adapter::AdapterRequest;
use fergpu::backend::gpu::GpuBackend;
use fergpu::backend::{stats, Activation, Backend};
use fergpu::checkpoint::Checkpoint;
use fergpu::data::{synth, Dataset};
use fergpu::eval::{DeviceSet, Evaluator};
use fergpu::model::network::{Mode, Network, Optimizer};
use fergpu::model::{LayerSpec, ModelSpec, Op, Padding, Plan};
use fergpu::train::{Trainer, TrainerOptions};
use fergpu::Error;

fn fresh_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("fergpu-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The output of each op per image, as `describe` names it.
fn described(plan: &Plan) -> Vec<String> {
    plan.ops.iter().map(Op::describe).collect()
}

#[test]
fn the_vgg_and_compact_presets_have_their_documented_layouts() {
    let vgg = Plan::new(&ModelSpec::vgg(Activation::Relu), 1).unwrap();
    let compact = Plan::new(&ModelSpec::compact(Activation::Relu), 1).unwrap();
    // Four stages of [conv same → batch norm → relu] × 2, each ending in a 2×2 pool.
    let stage = |c: usize, side: usize| {
        let conv = format!("conv {c}×{side}×{side}");
        let bn = format!("batchnorm {c}×{}", side * side);
        let pooled = format!("maxpool {c}×{}×{}", side / 2, side / 2);
        [&conv, &bn, "relu", &conv, &bn, "relu", &pooled].map(String::from)
    };
    let mut want: Vec<String> = [(64, 48), (128, 24), (256, 12), (512, 6)]
        .into_iter()
        .flat_map(|(c, s)| stage(c, s))
        .collect();
    want.extend(
        [
            "dense 4096",
            "relu",
            "dropout 0.5",
            "dense 4096",
            "relu",
            "dropout 0.5",
            "dense 7",
        ]
        .map(String::from),
    );
    assert_eq!(described(&vgg), want);
    let mut want: Vec<String> = [(32, 48), (64, 24), (128, 12), (256, 6)]
        .into_iter()
        .flat_map(|(c, s)| stage(c, s))
        .collect();
    want.extend(
        [
            "dense 256",
            "batchnorm 256",
            "relu",
            "dropout 0.5",
            "dense 7",
        ]
        .map(String::from),
    );
    assert_eq!(described(&compact), want);
    // The flatten after the last pool: 256·3·3 features.
    let first_dense = compact.ops.iter().find_map(|op| match op {
        Op::Dense { shape, .. } => Some(shape.in_f),
        _ => None,
    });
    assert_eq!(first_dense, Some(256 * 3 * 3));
    // About 120 M multiply-adds per image.
    let macs = compact.forward_macs();
    assert!((115_000_000..125_000_000).contains(&macs), "{macs}");
    // Nine batch norms, numbered in layer order like convs and denses; running statistics
    // apart from the parameters, never decayed.
    let names: Vec<&str> = compact.running.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names.len(), 18);
    assert_eq!(names[..2], ["bn1.running_mean", "bn1.running_var"]);
    assert_eq!(names[16..], ["bn9.running_mean", "bn9.running_var"]);
    let bn9 = compact
        .params
        .iter()
        .find(|t| t.name == "bn9.weight")
        .unwrap();
    assert_eq!(
        (bn9.shape.as_slice(), bn9.decay, bn9.fill),
        (&[256][..], false, 1.0)
    );
    let channels = 2 * (32 + 64 + 128 + 256) + 256;
    assert_eq!(compact.num_running, 2 * channels);
    let running = compact.init_running();
    assert_eq!(running[..32], [0.0; 32], "running means start at 0");
    assert_eq!(running[32..64], [1.0; 32], "running variances start at 1");
    let params = compact.init_params(1);
    let gamma = &params[bn9.offset..bn9.offset + 256];
    assert!(
        gamma.iter().all(|&g| g == 1.0),
        "batch norm scales start at 1"
    );
    assert!(compact.needs_two_per_batch() && !vgg.needs_two_per_batch());
}

#[test]
fn model_files_take_the_new_layers_and_reject_what_does_not_fit() {
    let dir = fresh_dir("layers-files");
    let file = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        ModelSpec::from_file(&path)
    };
    let spec = file(
        "gap.toml",
        r#"
[[layers]]
type = "conv2d"
filters = 8
padding = "same"
activation = "linear"
[[layers]]
type = "batchnorm"
[[layers]]
type = "activation"
activation = "elu"
[[layers]]
type = "conv2d"
filters = 6
kernel = 5
padding = 2
[[layers]]
type = "globalavgpool"
[[layers]]
type = "batchnorm"
momentum = 0.01
eps = 1e-3
[[layers]]
type = "dropout"
rate = 0.25
[[layers]]
type = "dense"
units = 7
"#,
    )
    .unwrap();
    assert_eq!(
        spec.layers[0],
        LayerSpec::Conv2d {
            filters: 8,
            kernel: 3,
            padding: Padding::Same,
            activation: Activation::Linear
        }
    );
    let plan = Plan::new(&spec, 2).unwrap();
    assert_eq!(
        described(&plan),
        [
            "conv 8×48×48",
            "batchnorm 8×2304",
            "elu",
            "conv 6×48×48",
            "relu",
            "globalavgpool 6",
            "batchnorm 6",
            "dropout 0.25",
            "dense 7"
        ]
    );
    // The same model round-trips through JSON (the checkpoint's metadata).
    let json = dir.join("gap.json");
    std::fs::write(&json, serde_json::to_string(&spec).unwrap()).unwrap();
    assert_eq!(ModelSpec::from_file(&json).unwrap().layers, spec.layers);

    // A conv written before padding existed reads as valid, and a valid conv writes no
    // padding key: old checkpoints and model files keep loading, old readers keep reading.
    let old = file(
        "old.json",
        r#"{"layers": [{"type": "conv2d", "filters": 4}, {"type": "flatten"},
                       {"type": "dense", "units": 7}]}"#,
    )
    .unwrap();
    assert!(matches!(
        old.layers[0],
        LayerSpec::Conv2d {
            padding: Padding::Valid,
            ..
        }
    ));
    assert!(!serde_json::to_string(&old).unwrap().contains("padding"));

    let err = |name: &str, text: &str| match file(name, text) {
        Err(Error::BadModel(m)) => m,
        other => panic!("{name}: expected BadModel, got {other:?}"),
    };
    let tail = "[[layers]]\ntype = \"flatten\"\n[[layers]]\ntype = \"dense\"\nunits = 7\n";
    let conv = |extra: &str| format!("[[layers]]\ntype = \"conv2d\"\nfilters = 4\n{extra}{tail}");
    let m = err("even.toml", &conv("kernel = 4\npadding = \"same\"\n"));
    assert!(m.contains("odd kernel") && m.contains("even.toml"), "{m}");
    let m = err("full.toml", &conv("padding = \"full\"\n"));
    assert!(m.contains("\"valid\", \"same\" or a number"), "{m}");
    let m = err("wide.toml", &conv("padding = 3\n"));
    assert!(m.contains("not smaller than the kernel"), "{m}");
    let m = err(
        "bn.toml",
        &format!("[[layers]]\ntype = \"batchnorm\"\nmomentum = 0.1\nepsilon = 1e-5\n{tail}"),
    );
    assert!(m.contains("epsilon"), "unknown keys are errors: {m}");
    let m = err(
        "drop.toml",
        &format!("[[layers]]\ntype = \"dropout\"\nrate = 1.0\n{tail}"),
    );
    assert!(m.contains("not in [0, 1)"), "{m}");
    let m = err(
        "gap.toml",
        &format!("[[layers]]\ntype = \"flatten\"\n[[layers]]\ntype = \"globalavgpool\"\n{tail}"),
    );
    assert!(m.contains("cannot follow Flatten"), "{m}");
}

/// A small batch-normalised model with dropout, cheap enough to train in tests: conv 3×3
/// same (4) → batch norm → relu → 4×4 pool → conv (6) → batch norm → relu → global average
/// pool → dense 16 → batch norm → relu → dropout 0.5 → dense 7.
fn tiny_bn_model() -> ModelSpec {
    let conv = |filters, padding| LayerSpec::Conv2d {
        filters,
        kernel: 3,
        padding,
        activation: Activation::Linear,
    };
    let bn = || LayerSpec::BatchNorm {
        momentum: 0.1,
        eps: 1e-5,
    };
    let relu = || LayerSpec::Activation {
        activation: Activation::Relu,
    };
    ModelSpec {
        name: "tiny-bn".into(),
        layers: vec![
            conv(4, Padding::Same),
            bn(),
            relu(),
            LayerSpec::MaxPool { size: 4 },
            conv(6, Padding::Valid),
            bn(),
            relu(),
            LayerSpec::GlobalAvgPool,
            LayerSpec::Dense {
                units: 16,
                activation: Activation::Linear,
            },
            bn(),
            relu(),
            LayerSpec::Dropout { rate: 0.5 },
            LayerSpec::Dense {
                units: 7,
                activation: Activation::Linear,
            },
        ],
    }
}

fn trainer<'b>(
    be: &'b CpuBackend,
    ds: &Dataset,
    batch: usize,
) -> fergpu::Result<Trainer<'b, CpuBackend>> {
    let spec = tiny_bn_model();
    let params = Plan::new(&spec, 1)?.init_params(3);
    let opts = TrainerOptions {
        batch,
        seed: 3,
        ..fergpu::settings::Settings::default().trainer_options()
    };
    Trainer::new(be, spec, &params, ds, &opts)
}

#[test]
fn a_batch_of_one_with_dense_batch_norm_is_a_clear_error() {
    let be = CpuBackend::new(1);
    let ds = synth::generate(9, 4);
    match trainer(&be, &ds, 1) {
        Err(Error::Config(m)) => {
            assert!(
                m.contains("--batch-size 1") && m.contains("2 or more"),
                "{m}"
            )
        }
        Err(e) => panic!("expected a Config error, got {e:?}"),
        Ok(_) => panic!("batch 1 with a dense batch norm must be refused"),
    }
    // Batch norms over conv planes take their statistics over h·w values: batch 1 is fine.
    let spec = ModelSpec::vgg(Activation::Relu);
    assert!(!Plan::new(&spec, 1).unwrap().needs_two_per_batch());
}

#[test]
fn an_epochs_last_single_image_is_left_out_with_dense_batch_norm() {
    let be = CpuBackend::new(2);
    // 9 images at batch 4: batches of 4 and 4, and a last one of 1 that batch norm cannot
    // normalise; the epoch trains on 8 (a different image each epoch, as the order is
    // shuffled).
    let ds = synth::generate(9, 4);
    let mut tr = trainer(&be, &ds, 4).unwrap();
    assert_eq!((tr.images_per_epoch(), tr.batches_per_epoch()), (8, 2));
    let out = tr.run_epoch(1e-3, &mut |_| true);
    assert_eq!(out.images, 8);
    assert!(out.loss.is_finite(), "{out:?}");
    // 10 images at batch 4 end in a batch of 2: every image trains.
    let ds = synth::generate(10, 4);
    let tr = trainer(&be, &ds, 4).unwrap();
    assert_eq!((tr.images_per_epoch(), tr.batches_per_epoch()), (10, 3));
}

#[test]
fn evaluation_uses_the_running_statistics_so_an_image_scores_alike_in_any_batch() {
    let be = CpuBackend::new(2);
    let ds = synth::generate(24, 5);
    let mut tr = trainer(&be, &ds, 8).unwrap();
    tr.run_epoch(1e-2, &mut |_| true);
    let running = tr.running();
    assert!(
        running.iter().any(|&v| v != 0.0 && v != 1.0),
        "training moved the running statistics"
    );
    let spec = tiny_bn_model();
    let set = DeviceSet::new(&be, &ds);
    let probs = |batch: usize| {
        let mut ev = Evaluator::with_batch(&be, &spec, &tr.params(), batch).unwrap();
        ev.load_params(tr.params_tensor(), tr.running_tensor());
        ev.evaluate(&set, true).unwrap().probs.unwrap()
    };
    // Batch statistics would make an image's scores depend on its batch-mates.
    let (one, many) = (probs(1), probs(7));
    assert_close("probabilities, batch 1 vs 7", &one, &many, 1e-6, 1e-5);
    // And the evaluator really reads the running statistics it is given.
    let mut ev = Evaluator::with_batch(&be, &spec, &tr.params(), 7).unwrap();
    let plan = Plan::new(&spec, 1).unwrap();
    ev.set_params(&tr.params(), &plan.init_running());
    let fresh = ev.evaluate(&set, true).unwrap().probs.unwrap();
    assert!(fresh.iter().zip(&many).any(|(a, b)| (a - b).abs() > 1e-4));
}

#[test]
fn checkpoints_carry_the_running_statistics_under_pytorch_names() {
    let be = CpuBackend::new(2);
    let ds = synth::generate(16, 6);
    let mut tr = trainer(&be, &ds, 8).unwrap();
    tr.run_epoch(1e-2, &mut |_| true);
    let ck = Checkpoint {
        spec: tr.spec().clone(),
        params: tr.params(),
        running: tr.running(),
        optimizer: Some(tr.optimizer_state()),
        train_state: None,
    };
    let path = fresh_dir("layers-ckpt").join("bn.safetensors");
    ck.save(&path).unwrap();
    assert_eq!(Checkpoint::load(&path).unwrap(), ck);
    let bytes = std::fs::read(&path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut names = st.names();
    names.sort();
    for n in 1..=3 {
        for t in ["weight", "bias", "running_mean", "running_var"] {
            assert!(
                names.contains(&&*format!("bn{n}.{t}")),
                "bn{n}.{t} in {names:?}"
            );
        }
    }
    // Dropout has no tensors; the running statistics are not in the optimizer's state.
    assert!(!names.iter().any(|n| n.contains("dropout")));
    let opt = ck.optimizer.as_ref().unwrap();
    assert_eq!(opt.m.len(), ck.params.len());
}

// ---- the compact preset, one step on both backends ----------------------------------------

fn gpu() -> Option<GpuBackend> {
    let required = std::env::var_os("CI").is_some()
        || std::env::var("FERGPU_REQUIRE_GPU").is_ok_and(|v| v == "1");
    match GpuBackend::new(&AdapterRequest::Auto, None) {
        Ok(g) => Some(g),
        Err(e) if required => panic!("a GPU is required (CI / FERGPU_REQUIRE_GPU): {e}"),
        Err(e) => {
            eprintln!("note: skipping the GPU step test, no GPU adapter: {e}");
            None
        }
    }
}

/// What one training step leaves: the loss, the gradients `(P)`, the running statistics
/// `(S)` and the parameters after Adam `(P)`.
struct Step {
    loss: f32,
    grads: Vec<f32>,
    running: Vec<f32>,
    params: Vec<f32>,
}

/// One step of `plan` from `params` on the first `plan.batch` images of `ds`, with dropout
/// keyed by seed 11 and step 0, as a trainer's first step.
fn one_step<B: Backend>(be: &B, plan: &Plan, params: &[f32], ds: &Dataset) -> Step {
    let batch = plan.batch;
    let mut net = Network::new(be, plan.clone(), params);
    let mut adam = Optimizer::new(
        be,
        plan,
        fergpu::settings::Settings::default().optimizer.config(),
    );
    let images = be.upload_images(&ds.pixels, &ds.labels);
    let order = be.upload_indices(&(0..ds.len() as u32).collect::<Vec<_>>());
    let weights = be.upload(&[1.0; 7]);
    let mut st = be.zeros(stats::LEN);
    be.gather_batch(&mut net.x, &mut net.labels, &images, &order, 0, batch);
    net.forward(
        be,
        batch,
        Mode::Train {
            seed: 11,
            step: adam.t,
        },
    );
    net.loss_forward(be, &mut st, &weights, 0.0, batch);
    net.backward(be, &weights, 0.0, batch);
    let grads = be.download(&net.grads);
    adam.step(be, &mut net, 1e-3);
    be.submit();
    let s = be.download(&st);
    Step {
        loss: s[stats::LOSS_SUM] / s[stats::SAMPLES],
        grads,
        running: be.download(&net.running),
        params: be.download(&net.params),
    }
}

#[test]
fn one_compact_training_step_matches_on_the_gpu_and_the_cpu() {
    let Some(gpu) = gpu() else {
        return;
    };
    let spec = ModelSpec::compact(Activation::Relu);
    let plan = Plan::new(&spec, 3).unwrap();
    let params = plan.init_params(12);
    let ds = synth::generate(3, 13);
    let t0 = std::time::Instant::now();
    let want = one_step(&CpuBackend::new(2), &plan, &params, &ds);
    let t1 = std::time::Instant::now();
    let got = one_step(&gpu, &plan, &params, &ds);
    eprintln!(
        "compact batch 3, one step: CPU {:.2} s, GPU ({}) {:.2} s",
        (t1 - t0).as_secs_f64(),
        gpu.adapter().name,
        t1.elapsed().as_secs_f64()
    );
    gpu.check().expect("the GPU reported an error");
    // Every layer's sums differ only in order (batch statistics included), so the loss
    // agrees to float rounding; the dropout masks are the same integer hash on both.
    assert_close("loss", &[got.loss], &[want.loss], 0.0, 1e-4);
    // Batch statistics over 3 values per dense feature make some gradients large: compare
    // relative to the largest, as float error scales with the magnitudes summed.
    let scale = want.grads.iter().fold(0f32, |m, g| m.max(g.abs()));
    assert!(scale > 0.0, "the reference gradients are all zero");
    assert_close("grads", &got.grads, &want.grads, 1e-4 * scale, 1e-3);
    assert_close(
        "running statistics",
        &got.running,
        &want.running,
        1e-5,
        1e-4,
    );
    // Adam's first step moves each weight by about lr (the gradient's sign); a gradient
    // within float error of 0 can move either way, which the bound allows.
    assert_close("params after Adam", &got.params, &want.params, 2.1e-3, 1e-5);
}
