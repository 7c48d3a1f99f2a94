//! `fergpu export --onnx`: the exported graph, run by tract (a pure-Rust ONNX runtime, a
//! dev-dependency only), gives fergpu eval's probabilities on every preset and layer kind,
//! at two batch sizes; the file carries opset, names and metadata; bad inputs are errors.

mod support;

use fergpu::backend::cpu::CpuBackend;
use fergpu::backend::Activation;
use fergpu::checkpoint::Checkpoint;
use fergpu::data::{synth, Dataset, EMOTIONS};
use fergpu::export::onnx::{self, INPUT, LOGITS, PROBABILITIES};
use fergpu::model::{LayerSpec, ModelSpec, Padding, Plan};
use fergpu::rng::Rng;
use std::path::{Path, PathBuf};
use support::{fergpu, fresh_dir, run, run_ok, text};
use tract_onnx::prelude::*;

/// Largest allowed |p_onnx − p_fergpu| over all images and classes.
const TOLERANCE: f32 = 1e-5;

/// A checkpoint of `spec` with Glorot weights, small random biases (zero biases would hide
/// a bias wired to the wrong place), batch-norm scales around 1 and running statistics away
/// from 0 and 1 (so a swapped mean and variance would show), all from `seed`.
fn checkpoint(spec: ModelSpec, seed: u64) -> Checkpoint {
    let plan = Plan::new(&spec, 1).unwrap();
    let mut params = plan.init_params(seed);
    let mut rng = Rng::new(seed + 100);
    for t in plan.params.iter().filter(|t| t.glorot_fans.is_none()) {
        let (lo, hi) = if t.name.ends_with(".weight") {
            (0.5, 1.5)
        } else {
            (-0.1, 0.1)
        };
        for b in &mut params[t.offset..t.offset + t.len()] {
            *b = rng.range(lo, hi);
        }
    }
    let mut running = plan.init_running();
    for t in &plan.running {
        let (lo, hi) = if t.name.ends_with("running_var") {
            (0.05, 0.3)
        } else {
            (-0.2, 0.2)
        };
        for v in &mut running[t.offset..t.offset + t.len()] {
            *v = rng.range(lo, hi);
        }
    }
    Checkpoint {
        spec,
        params,
        running,
        optimizer: None,
        train_state: None,
    }
}

/// Every preset with each activation somewhere, and a model file's layer kinds (kernel 5,
/// pool 3, two convs in a row, dense after dense). New presets and layer kinds go here.
fn models() -> Vec<ModelSpec> {
    let conv = |filters, kernel, activation| LayerSpec::Conv2d {
        filters,
        kernel,
        padding: Padding::Valid,
        activation,
    };
    let padded = |filters, kernel, padding| LayerSpec::Conv2d {
        filters,
        kernel,
        padding,
        activation: Activation::Linear,
    };
    let bn = LayerSpec::BatchNorm {
        momentum: 0.1,
        eps: 1e-5,
    };
    let dense = |units, activation| LayerSpec::Dense { units, activation };
    vec![
        ModelSpec::mlp(Activation::Relu),
        ModelSpec::mlp(Activation::Sigmoid),
        ModelSpec::cnn(Activation::Relu, Activation::Selu),
        ModelSpec {
            name: "custom".into(),
            layers: vec![
                conv(6, 5, Activation::Elu),
                LayerSpec::MaxPool { size: 3 },
                conv(8, 3, Activation::Tanh),
                conv(4, 3, Activation::Linear),
                LayerSpec::MaxPool { size: 2 },
                LayerSpec::Flatten,
                dense(16, Activation::Selu),
                dense(12, Activation::Tanh),
                dense(10, Activation::Elu),
                dense(7, Activation::Linear),
            ],
        },
        ModelSpec::compact(Activation::Relu),
        // Every newer layer kind: padding same and by pixels, batch norm over channels and
        // over features, an activation layer, dropout (identity here), global average pooling.
        ModelSpec {
            name: "newer".into(),
            layers: vec![
                padded(5, 3, Padding::Same),
                bn.clone(),
                LayerSpec::Activation {
                    activation: Activation::Relu,
                },
                LayerSpec::MaxPool { size: 2 },
                padded(6, 5, Padding::Pixels(1)),
                bn.clone(),
                LayerSpec::Activation {
                    activation: Activation::Elu,
                },
                LayerSpec::Dropout { rate: 0.3 },
                LayerSpec::GlobalAvgPool,
                dense(12, Activation::Linear),
                bn,
                LayerSpec::Activation {
                    activation: Activation::Tanh,
                },
                LayerSpec::Dropout { rate: 0.5 },
                dense(7, Activation::Linear),
            ],
        },
    ]
}

/// fergpu's probabilities `(n, 7)` for `ds` on the CPU reference.
fn fergpu_probs(ck: &Checkpoint, ds: &Dataset) -> Vec<f32> {
    fergpu::eval::evaluate_checkpoint(&CpuBackend::new(0), ck, ds, true)
        .unwrap()
        .probs
        .unwrap()
}

/// The ONNX file's output `(n, 7)` on `ds`, run by tract with a batch of `ds.len()`.
fn tract_output(model: &Arc<TypedRunnableModel>, ds: &Dataset) -> Vec<f32> {
    let x: Vec<f32> = ds.pixels.iter().map(|&p| f32::from(p) / 255.0).collect();
    let input = tract_ndarray::Array4::from_shape_vec((ds.len(), 1, 48, 48), x).unwrap();
    let out = model.run(tvec!(Tensor::from(input).into())).unwrap();
    let view = out[0].to_plain_array_view::<f32>().unwrap();
    assert_eq!(view.shape(), [ds.len(), 7]);
    view.iter().copied().collect()
}

fn softmax_rows(logits: &[f32]) -> Vec<f32> {
    logits
        .chunks_exact(7)
        .flat_map(|row| {
            let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let e: Vec<f32> = row.iter().map(|v| (v - max).exp()).collect();
            let sum: f32 = e.iter().sum();
            e.into_iter().map(move |v| v / sum)
        })
        .collect()
}

fn load(path: &Path) -> Arc<TypedRunnableModel> {
    tract_onnx::onnx()
        .model_for_path(path)
        .unwrap_or_else(|e| panic!("tract cannot read {}: {e:?}", path.display()))
        .into_optimized()
        .unwrap()
        .into_runnable()
        .unwrap()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn exported_models_match_fergpu_eval_at_two_batch_sizes() {
    let dir = fresh_dir("export-onnx");
    let ds = synth::generate(9, 3);
    for (i, spec) in models().into_iter().enumerate() {
        let name = spec.name.clone();
        let ck = checkpoint(spec, 11 + i as u64);
        let want = fergpu_probs(&ck, &ds);
        for softmax in [false, true] {
            let path = dir.join(format!("{name}-{i}-{softmax}.onnx"));
            std::fs::write(&path, onnx::model_bytes(&ck, softmax)).unwrap();
            let model = load(&path);
            let got = tract_output(&model, &ds);
            let got = if softmax { got } else { softmax_rows(&got) };
            let d = max_diff(&got, &want);
            println!("{name} softmax={softmax}: max |Δp| = {d:e}");
            assert!(d <= TOLERANCE, "{name} softmax={softmax}: max |Δp| = {d:e}");
            // The batch size is symbolic: the same runnable model takes 2 images.
            let two = ds.subset(&[4, 7]);
            let got2 = tract_output(&model, &two);
            let got2 = if softmax { got2 } else { softmax_rows(&got2) };
            let want2: Vec<f32> = [4, 7]
                .iter()
                .flat_map(|&r| want[r * 7..r * 7 + 7].to_vec())
                .collect();
            let d = max_diff(&got2, &want2);
            assert!(d <= TOLERANCE, "{name} batch 2: max |Δp| = {d:e}");
        }
    }
}

/// The model's declared interface and metadata, as an ONNX reader sees them.
#[test]
fn the_file_declares_opset_names_shapes_and_metadata() {
    let dir = fresh_dir("export-meta");
    let ck = checkpoint(ModelSpec::mlp(Activation::Elu), 2);
    let path = dir.join("m.onnx");
    std::fs::write(&path, onnx::model_bytes(&ck, true)).unwrap();
    let proto = tract_onnx::onnx().proto_model_for_path(&path).unwrap();
    assert_eq!(proto.ir_version, onnx::IR_VERSION);
    assert_eq!(proto.producer_name, "fergpu");
    assert_eq!(proto.opset_import.len(), 1);
    assert_eq!(proto.opset_import[0].domain, "");
    assert!(proto.opset_import[0].version >= 13);
    let meta: std::collections::HashMap<_, _> = proto
        .metadata_props
        .iter()
        .map(|p| (p.key.as_str(), p.value.as_str()))
        .collect();
    let names: Vec<String> = serde_json::from_str(meta["emotions"]).unwrap();
    assert_eq!(names, EMOTIONS);
    assert_eq!(meta["fergpu.version"], env!("CARGO_PKG_VERSION"));
    let spec: ModelSpec = serde_json::from_str(meta["fergpu.model"]).unwrap();
    assert_eq!(spec, ck.spec);

    let graph = proto.graph.unwrap();
    let dims = |vi: &tract_onnx::pb::ValueInfoProto| -> Vec<String> {
        use tract_onnx::pb::tensor_shape_proto::dimension::Value;
        use tract_onnx::pb::type_proto::Value as T;
        let Some(T::TensorType(t)) = vi.r#type.as_ref().unwrap().value.as_ref() else {
            panic!("not a tensor: {vi:?}");
        };
        assert_eq!(t.elem_type, 1, "float");
        t.shape
            .as_ref()
            .unwrap()
            .dim
            .iter()
            .map(|d| match d.value.as_ref().unwrap() {
                Value::DimValue(v) => v.to_string(),
                Value::DimParam(p) => p.clone(),
            })
            .collect()
    };
    assert_eq!(graph.input.len(), 1);
    assert_eq!(graph.input[0].name, INPUT);
    assert_eq!(dims(&graph.input[0]), ["N", "1", "48", "48"]);
    assert_eq!(graph.output[0].name, PROBABILITIES);
    assert_eq!(dims(&graph.output[0]), ["N", "7"]);
    let ops: Vec<&str> = graph.node.iter().map(|n| n.op_type.as_str()).collect();
    assert_eq!(
        ops,
        ["Flatten", "Gemm", "Elu", "Gemm", "Elu", "Gemm", "Softmax"]
    );
    let inits: Vec<&str> = graph.initializer.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(
        inits,
        [
            "dense1.weight",
            "dense1.bias",
            "dense2.weight",
            "dense2.bias",
            "dense3.weight",
            "dense3.bias"
        ]
    );
    let logits = onnx::model_bytes(&ck, false);
    let p = dir.join("logits.onnx");
    std::fs::write(&p, logits).unwrap();
    let g = tract_onnx::onnx()
        .proto_model_for_path(&p)
        .unwrap()
        .graph
        .unwrap();
    assert_eq!(g.output[0].name, LOGITS);
    assert_eq!(g.node.last().unwrap().op_type, "Gemm");
}

fn saved(dir: &Path, spec: ModelSpec) -> PathBuf {
    let path = dir.join(format!("{}.safetensors", spec.name));
    checkpoint(spec, 4).save(&path).unwrap();
    path
}

#[test]
fn fergpu_export_writes_the_file_and_reports_bad_inputs_by_name() {
    let dir = fresh_dir("export-cli");
    let ckpt = saved(&dir, ModelSpec::cnn(Activation::Relu, Activation::Selu));
    let out = dir.join("cnn.onnx");
    let (_, stderr) = run_ok(
        fergpu(["export", "--softmax", "--checkpoint"])
            .arg(&ckpt)
            .arg("--onnx")
            .arg(&out),
    );
    assert!(
        stderr.contains("cnn.onnx") && stderr.contains("probabilities"),
        "{stderr}"
    );
    let ck = Checkpoint::load(&ckpt).unwrap();
    assert_eq!(std::fs::read(&out).unwrap(), onnx::model_bytes(&ck, true));

    // A file that is not a checkpoint, and an output folder that does not exist.
    let junk = dir.join("junk.safetensors");
    std::fs::write(&junk, b"not a checkpoint").unwrap();
    let bad = run(fergpu(["export", "--checkpoint"])
        .arg(&junk)
        .arg("--onnx")
        .arg(dir.join("x.onnx")));
    let (_, stderr) = text(&bad);
    assert!(!bad.status.success());
    assert!(stderr.contains("junk.safetensors"), "{stderr}");
    let nowhere = dir.join("no/such/folder/m.onnx");
    let bad = run(fergpu(["export", "--checkpoint"])
        .arg(&ckpt)
        .arg("--onnx")
        .arg(&nowhere));
    let (_, stderr) = text(&bad);
    assert!(!bad.status.success());
    assert!(stderr.contains("no/such/folder"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}
