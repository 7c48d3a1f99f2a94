//! Never a number that is not one: finite weights whose products overflow 32-bit floats give
//! NaN or infinite values inside the network, and `eval`, `predict` (and the evaluator a
//! training run validates with) refuse them, naming the first layer op that gave one, even
//! when a ReLU after it would have turned the NaN into zeros and a finite-looking accuracy.

mod common;
mod support;

use fergpu::checkpoint::Checkpoint;
use fergpu::data::synth;
use fergpu::eval::{evaluate_checkpoint, evaluate_checkpoint_with_tta, Tta};
use fergpu::model::Plan;
use fergpu::Error;
use std::path::{Path, PathBuf};
use support::{fergpu, fresh_dir, run, text};

/// Trains the MLP (Dense 120 → ReLU → Dense 84 → ReLU → Dense 7) for one epoch into `dir`
/// and returns its best checkpoint with `tensor` set to ±3e38, alternating: every product
/// overflows, so its layer gives ±∞ and NaN, which the ReLU after it turns into zeros.
fn overflowing_checkpoint(dir: &Path, tensor: &str) -> PathBuf {
    let out = dir.join("run");
    support::train_small_mlp(&out);
    let path = out.join("checkpoint-best.safetensors");
    let mut ck = Checkpoint::load(&path).unwrap();
    let plan = Plan::new(&ck.spec, 1).unwrap();
    let t = plan.params.iter().find(|t| t.name == tensor).unwrap();
    for (i, p) in ck.params[t.offset..t.offset + t.len()]
        .iter_mut()
        .enumerate()
    {
        *p = if i % 2 == 0 { 3e38 } else { -3e38 };
    }
    let huge = dir.join("huge.safetensors");
    ck.save(&huge).unwrap();
    huge
}

#[test]
fn eval_and_predict_refuse_nan_hidden_by_a_relu_naming_the_layer() {
    let dir = fresh_dir("hn-cli");
    let ck = overflowing_checkpoint(&dir, "dense1.weight");
    let data = dir.join("faces.csv");
    support::write_synth_csv(&data, 80, 3);
    let photo = dir.join("face.png");
    image::GrayImage::from_raw(48, 48, synth::generate(1, 1).pixels)
        .unwrap()
        .save(&photo)
        .unwrap();
    let eval = |extra: &[&str]| {
        let mut cmd = fergpu(["eval", "--adapter", "cpu", "--data"]);
        cmd.arg(&data).arg("--checkpoint").arg(&ck).args(extra);
        cmd
    };
    let mut predict = fergpu(["predict", "--adapter", "cpu", "--checkpoint"]);
    predict.arg(&ck).arg(&photo);
    for mut cmd in [eval(&[]), eval(&["--tta", "crops"]), predict] {
        let out = run(&mut cmd);
        let (stdout, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(1), "{cmd:?}\n{stdout}\n{stderr}");
        assert!(
            stderr.contains("huge.safetensors")
                && stderr.contains("layer op 1 (dense 120) of model 'mlp' gives NaN or infinite"),
            "{stderr}"
        );
        assert!(
            !stdout.contains('%') && !stdout.contains("Angry"),
            "{stdout}"
        );
    }
}

#[test]
fn the_evaluator_names_the_first_op_that_overflows_with_and_without_tta() {
    let dir = fresh_dir("hn-lib");
    let ck = Checkpoint::load(&overflowing_checkpoint(&dir, "dense2.weight")).unwrap();
    let ds = synth::generate(40, 2);
    let be = fergpu::backend::cpu::CpuBackend::try_new(1).unwrap();
    for tta in [Tta::None, Tta::Flip] {
        match evaluate_checkpoint_with_tta(&be, &ck, &ds, true, tta) {
            Err(Error::NonFinite(m)) => assert!(m.contains("layer op 3 (dense 84)"), "{m}"),
            other => panic!("{tta:?}: {other:?}"),
        }
    }
    // The same model with finite products evaluates to numbers.
    let mut fine = ck.clone();
    fine.params.iter_mut().for_each(|p| *p = p.clamp(-0.1, 0.1));
    let r = evaluate_checkpoint(&be, &fine, &ds, true).unwrap();
    assert!(r.loss.is_finite() && r.probs.unwrap().iter().all(|p| p.is_finite()));
}

/// Evaluates `compact` (seed-4 weights, every weight of its first convolution set to
/// `first_conv`, or as drawn when `None`) on 6 generated faces on the CPU.
fn evaluate_compact(first_conv: Option<f32>) -> fergpu::Result<fergpu::eval::EvalResult> {
    use fergpu::backend::Activation;
    use fergpu::eval::{DeviceSet, Evaluator};
    use fergpu::model::ModelSpec;
    let spec = ModelSpec::resolve("compact", Activation::Relu, Activation::Selu).unwrap();
    let plan = Plan::new(&spec, 1).unwrap();
    let mut params = plan.init_params(4);
    if let Some(w) = first_conv {
        let t = plan
            .params
            .iter()
            .find(|t| t.name == "conv1.weight")
            .unwrap();
        params[t.offset..t.offset + t.len()].fill(w);
    }
    let ds = synth::generate(6, 5);
    let be = fergpu::backend::cpu::CpuBackend::try_new(1).unwrap();
    let mut ev = Evaluator::new(&be, &spec, &params, ds.len()).unwrap();
    ev.evaluate(&DeviceSet::new(&be, &ds), false)
}

/// Evaluation folds each batch norm into the convolution before it and watches what the
/// pair gives; a first convolution that overflows to +∞ (its batch norm passes that on) is
/// still named as the convolution, not the batch norm where the folded pass saw it, and the
/// NaN it makes in the next convolution (which a ReLU turns into zeros) never becomes an
/// accuracy. The same with −∞, which the ReLU itself would turn into zeros: evaluation runs
/// convolution, batch norm and ReLU as one call, which keeps the −∞ for the watch.
#[test]
fn the_evaluator_names_a_convolution_that_overflows_either_way_before_its_batch_norm() {
    for w in [3e38, -3e38] {
        match evaluate_compact(Some(w)) {
            Err(Error::NonFinite(m)) => {
                assert!(m.contains("layer op 1 (conv 32×48×48)"), "{w}: {m}")
            }
            other => panic!("{w}: {other:?}"),
        }
    }
    // Sound weights evaluate to numbers.
    let r = evaluate_compact(None).unwrap();
    assert!(r.loss.is_finite(), "{r:?}");
}

/// Training validates every epoch with the same watch: a run resumed from weights whose
/// first layer overflows to −∞ (which its ReLU turns into zeros, so the training loss stays
/// finite) stops at that epoch's validation, naming the layer, with its last good weights
/// kept.
#[test]
fn training_stops_when_validation_sees_values_that_are_not_numbers() {
    let dir = fresh_dir("hn-train");
    let out = dir.join("run");
    support::train_small_mlp(&out);
    let last = out.join("checkpoint-last.safetensors");
    let mut ck = Checkpoint::load(&last).unwrap();
    let plan = Plan::new(&ck.spec, 1).unwrap();
    let t = plan
        .params
        .iter()
        .find(|t| t.name == "dense1.weight")
        .unwrap();
    ck.params[t.offset..t.offset + t.len()].fill(-3e38);
    ck.save(&last).unwrap();
    let out_cmd = run(fergpu(["train", "--epochs", "2", "--quiet", "--resume"]).arg(&out));
    let (_, stderr) = text(&out_cmd);
    assert_eq!(out_cmd.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("in epoch 2")
            && stderr.contains("on the validation images, layer op 1 (dense 120) of model 'mlp'")
            && stderr.contains("checkpoint-last-good.safetensors"),
        "{stderr}"
    );
    let metrics = std::fs::read_to_string(out.join("metrics.csv")).unwrap();
    assert_eq!(
        metrics.lines().count(),
        2,
        "epoch 2 is not recorded:\n{metrics}"
    );
}

/// The same watch on the GPU backend (a software adapter such as lavapipe where there is no
/// GPU): WGSL arithmetic gives the same verdict on the same checkpoint, and a sound
/// checkpoint evaluates as on the CPU.
#[test]
fn the_gpu_backend_refuses_the_same_overflow() {
    if !common::have_software_adapter("GPU overflow watch") {
        return;
    }
    let dir = fresh_dir("hn-gpu");
    let ck = overflowing_checkpoint(&dir, "dense1.weight");
    let data = dir.join("faces.csv");
    support::write_synth_csv(&data, 80, 3);
    let eval = |ck: &Path, adapter: &str| {
        run(
            fergpu(["eval", "--autotune", "off", "--adapter", adapter, "--data"])
                .arg(&data)
                .arg("--checkpoint")
                .arg(ck),
        )
    };
    let out = eval(&ck, "software");
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(stderr.contains("layer op 1 (dense 120)"), "{stderr}");
    let sound = dir.join("run/checkpoint-best.safetensors");
    let accuracy = |out: &std::process::Output| {
        let (stdout, stderr) = text(out);
        assert!(out.status.success(), "{stderr}");
        stdout
            .lines()
            .next()
            .unwrap()
            .split("  ")
            .nth(1)
            .unwrap()
            .to_string()
    };
    assert_eq!(
        accuracy(&eval(&sound, "software")),
        accuracy(&eval(&sound, "cpu"))
    );
}
