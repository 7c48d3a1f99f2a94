//! A checkpoint as an ONNX model (opset 13, IR version 7), runnable by onnxruntime,
//! onnxruntime-web, tract, OpenCV's DNN module and the like.
//!
//! The graph takes `image`, float `[N, 1, 48, 48]` (pixels / 255, rows top to bottom, the
//! same input fergpu trains on; `N` is a symbolic batch size) and returns `logits`
//! `[N, 7]`, or `probabilities` `[N, 7]` with a final Softmax when asked. Emotion names,
//! fergpu's version and the model description are in the model's `metadata_props`.
//!
//! Each layer kind of [`LayerSpec`] is one arm of [`export_layer`] calling one small method
//! of [`Graph`]; parameters become initializers under their checkpoint names
//! (`conv1.weight [out, in, kh, kw]`, `dense1.weight [out, in]`), which are already in the
//! layouts ONNX's Conv and Gemm (`transB = 1`) expect.

use super::proto::Message;
use crate::backend::{Activation, ELU_ALPHA, SELU_ALPHA, SELU_SCALE};
use crate::checkpoint::Checkpoint;
use crate::data::EMOTIONS;
use crate::model::{LayerSpec, Plan};
use crate::shape::{IMAGE_SIDE, NUM_CLASSES};

/// The ONNX operator set the graph uses (Softmax's `axis` means one axis from opset 13 on).
pub const OPSET: i64 = 13;
/// The IR version that goes with opset 13.
pub const IR_VERSION: i64 = 7;
/// Name of the graph input, float `[N, 1, 48, 48]`.
pub const INPUT: &str = "image";
/// Name of the output without `--softmax`, float `[N, 7]`.
pub const LOGITS: &str = "logits";
/// Name of the output with `--softmax`, float `[N, 7]`.
pub const PROBABILITIES: &str = "probabilities";

// onnx.proto field numbers and enum values used below.
const TENSOR_FLOAT: i64 = 1;
const ATTR_FLOAT: i64 = 1;
const ATTR_INT: i64 = 2;
const ATTR_INTS: i64 = 7;

/// The ONNX file's bytes for `ck`; with `softmax`, the graph ends in a Softmax over the 7
/// classes and its output is [`PROBABILITIES`] instead of [`LOGITS`].
pub fn model_bytes(ck: &Checkpoint, softmax: bool) -> Vec<u8> {
    let plan = Plan::new(&ck.spec, 1).expect("a loaded checkpoint's model resolves");
    assert_eq!(ck.params.len(), plan.num_params);
    assert_eq!(ck.running.len(), plan.num_running);
    let mut g = Graph::new(&plan, &ck.params, &ck.running);
    let mut counts = LayerCounts::default();
    for layer in &ck.spec.layers {
        export_layer(&mut g, layer, &mut counts);
    }
    if softmax {
        g.node("Softmax", &[], vec![attr_int("axis", 1)]);
    }
    let output = if softmax { PROBABILITIES } else { LOGITS };
    model_proto(&ck.spec.name, g.finish(output), metadata(ck, output))
}

/// Layers of each numbered kind seen so far: the `n` of `conv{n}.weight`, `dense{n}.bias`,
/// `bn{n}.running_mean`.
#[derive(Default)]
struct LayerCounts {
    conv: usize,
    dense: usize,
    pool: usize,
    bn: usize,
}

/// Appends one layer to the graph. A new layer kind is one arm here and, if ONNX needs
/// something new, one method of [`Graph`]. Dropout is the identity at inference: nothing.
fn export_layer(g: &mut Graph, layer: &LayerSpec, n: &mut LayerCounts) {
    match *layer {
        LayerSpec::Conv2d {
            kernel,
            padding,
            activation,
            ..
        } => {
            n.conv += 1;
            let p = padding
                .pixels(kernel)
                .expect("a loaded checkpoint's padding fits its kernel") as i64;
            g.conv(n.conv, kernel, [p; 4]);
            g.activation(activation);
        }
        LayerSpec::BatchNorm { eps, .. } => {
            n.bn += 1;
            g.batch_norm(n.bn, eps);
        }
        LayerSpec::Dropout { .. } => {}
        LayerSpec::Activation { activation } => g.activation(activation),
        LayerSpec::GlobalAvgPool => g.global_avg_pool(),
        LayerSpec::MaxPool { size } => {
            n.pool += 1;
            g.max_pool(n.pool, size);
        }
        LayerSpec::Flatten => g.flatten(),
        LayerSpec::Dense { activation, .. } => {
            n.dense += 1;
            g.dense(n.dense);
            g.activation(activation);
        }
    }
}

/// One node before encoding (its output may still be renamed to the graph's output).
struct Node {
    op: &'static str,
    name: String,
    inputs: Vec<String>,
    output: String,
    attrs: Vec<Message>,
}

/// A graph under construction: nodes in order, initializers, and the name of the tensor the
/// next layer reads.
struct Graph<'a> {
    plan: &'a Plan,
    params: &'a [f32],
    running: &'a [f32],
    nodes: Vec<Node>,
    initializers: Vec<Message>,
    current: String,
}

impl<'a> Graph<'a> {
    fn new(plan: &'a Plan, params: &'a [f32], running: &'a [f32]) -> Self {
        Graph {
            plan,
            params,
            running,
            nodes: vec![],
            initializers: vec![],
            current: INPUT.to_string(),
        }
    }

    /// Adds the checkpoint tensor `name` (a parameter, or a running statistic) as an
    /// initializer and returns its name.
    fn param(&mut self, name: &str) -> String {
        let (t, flat) = match self.plan.params.iter().find(|t| t.name == name) {
            Some(t) => (t, self.params),
            None => (
                self.plan
                    .running
                    .iter()
                    .find(|t| t.name == name)
                    .unwrap_or_else(|| panic!("the plan has no tensor '{name}'")),
                self.running,
            ),
        };
        let data = &flat[t.offset..t.offset + t.len()];
        let dims: Vec<i64> = t.shape.iter().map(|&d| d as i64).collect();
        self.initializers.push(tensor(name, &dims, data));
        name.to_string()
    }

    /// Appends `op` reading the current tensor and then `extra` inputs; its output (named
    /// after the node) becomes the current tensor.
    fn node(&mut self, op: &'static str, extra: &[String], attrs: Vec<Message>) {
        let name = format!("{}_{}", op.to_ascii_lowercase(), self.nodes.len() + 1);
        self.named_node(op, name, extra, attrs);
    }

    fn named_node(
        &mut self,
        op: &'static str,
        name: String,
        extra: &[String],
        attrs: Vec<Message>,
    ) {
        let mut inputs = vec![self.current.clone()];
        inputs.extend_from_slice(extra);
        self.current = name.clone();
        self.nodes.push(Node {
            op,
            output: name.clone(),
            name,
            inputs,
            attrs,
        });
    }

    /// `convN`: `kernel`×`kernel`, stride 1, `pads` as ONNX orders them (top, left,
    /// bottom, right).
    fn conv(&mut self, n: usize, kernel: usize, pads: [i64; 4]) {
        let w = self.param(&format!("conv{n}.weight"));
        let b = self.param(&format!("conv{n}.bias"));
        let k = kernel as i64;
        let attrs = vec![
            attr_ints("kernel_shape", &[k, k]),
            attr_ints("strides", &[1, 1]),
            attr_ints("pads", &pads),
        ];
        self.named_node("Conv", format!("conv{n}"), &[w, b], attrs);
    }

    /// `size`×`size` windows with stride `size`, rows and columns that do not fill a window
    /// dropped (ONNX's default `ceil_mode = 0`), as fergpu's pooling does.
    fn max_pool(&mut self, n: usize, size: usize) {
        let s = size as i64;
        let attrs = vec![
            attr_ints("kernel_shape", &[s, s]),
            attr_ints("strides", &[s, s]),
        ];
        self.named_node("MaxPool", format!("pool{n}"), &[], attrs);
    }

    /// `[N, C, H, W]` → `[N, C·H·W]` in channel, row, column order (a no-op on `[N, F]`).
    fn flatten(&mut self) {
        self.node("Flatten", &[], vec![attr_int("axis", 1)]);
    }

    /// `denseN`: `Y = X·Wᵀ + b` with `W [out, in]`.
    fn dense(&mut self, n: usize) {
        let w = self.param(&format!("dense{n}.weight"));
        let b = self.param(&format!("dense{n}.bias"));
        self.named_node(
            "Gemm",
            format!("dense{n}"),
            &[w, b],
            vec![attr_int("transB", 1)],
        );
    }

    /// `bnN` in evaluation form: `(x − running_mean)/√(running_var + eps)·weight + bias`
    /// per channel of `[N, C, H, W]` or feature of `[N, F]`.
    fn batch_norm(&mut self, n: usize, eps: f32) {
        let inputs: Vec<String> = ["weight", "bias", "running_mean", "running_var"]
            .iter()
            .map(|t| self.param(&format!("bn{n}.{t}")))
            .collect();
        self.named_node(
            "BatchNormalization",
            format!("bn{n}"),
            &inputs,
            vec![attr_float("epsilon", eps)],
        );
    }

    /// `[N, C, H, W]` → `[N, C]`, each the mean of its channel (ONNX's GlobalAveragePool
    /// keeps `[N, C, 1, 1]`; a Flatten makes it the flat features fergpu's layer gives).
    fn global_avg_pool(&mut self) {
        self.node("GlobalAveragePool", &[], vec![]);
        self.flatten();
    }

    /// The element-wise activation (nothing for linear), with fergpu's constants.
    fn activation(&mut self, act: Activation) {
        match act {
            Activation::Relu => self.node("Relu", &[], vec![]),
            Activation::Elu => self.node("Elu", &[], vec![attr_float("alpha", ELU_ALPHA)]),
            Activation::Selu => self.node(
                "Selu",
                &[],
                vec![
                    attr_float("alpha", SELU_ALPHA),
                    attr_float("gamma", SELU_SCALE),
                ],
            ),
            Activation::Sigmoid => self.node("Sigmoid", &[], vec![]),
            Activation::Tanh => self.node("Tanh", &[], vec![]),
            Activation::Linear => {}
        }
    }

    /// The GraphProto, its last node's output renamed to `output`.
    fn finish(mut self, output: &str) -> Message {
        let last = self
            .nodes
            .last_mut()
            .expect("a model has at least one layer");
        last.output = output.to_string();
        let mut g = Message::new();
        for node in &self.nodes {
            let mut m = Message::new();
            for input in &node.inputs {
                m.string(1, input);
            }
            m.string(2, &node.output)
                .string(3, &node.name)
                .string(4, node.op);
            for a in &node.attrs {
                m.message(5, a);
            }
            g.message(1, &m);
        }
        g.string(2, "fergpu");
        for t in &self.initializers {
            g.message(5, t);
        }
        let batch = Dim::Symbol("N");
        let side = Dim::Value(IMAGE_SIDE as i64);
        g.message(11, &value_info(INPUT, &[batch, Dim::Value(1), side, side]));
        g.message(
            12,
            &value_info(output, &[batch, Dim::Value(NUM_CLASSES as i64)]),
        );
        g
    }
}

/// One dimension of a declared shape.
#[derive(Clone, Copy)]
enum Dim {
    Value(i64),
    Symbol(&'static str),
}

/// A float tensor `dims` stored little-endian in `raw_data`.
fn tensor(name: &str, dims: &[i64], data: &[f32]) -> Message {
    assert_eq!(dims.iter().product::<i64>() as usize, data.len());
    let raw: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
    let mut t = Message::new();
    t.packed_ints(1, dims)
        .int(2, TENSOR_FLOAT)
        .string(8, name)
        .bytes(9, &raw);
    t
}

/// A float tensor's declared name and shape (ValueInfoProto → TypeProto → Tensor → Shape).
fn value_info(name: &str, dims: &[Dim]) -> Message {
    let mut shape = Message::new();
    for d in dims {
        let mut dim = Message::new();
        match *d {
            Dim::Value(v) => dim.int(1, v),
            Dim::Symbol(s) => dim.string(2, s),
        };
        shape.message(1, &dim);
    }
    let mut tensor_type = Message::new();
    tensor_type.int(1, TENSOR_FLOAT).message(2, &shape);
    let mut type_proto = Message::new();
    type_proto.message(1, &tensor_type);
    let mut vi = Message::new();
    vi.string(1, name).message(2, &type_proto);
    vi
}

fn attr_int(name: &str, v: i64) -> Message {
    let mut a = Message::new();
    a.string(1, name).int(3, v).int(20, ATTR_INT);
    a
}

fn attr_ints(name: &str, vs: &[i64]) -> Message {
    let mut a = Message::new();
    a.string(1, name).packed_ints(8, vs).int(20, ATTR_INTS);
    a
}

fn attr_float(name: &str, v: f32) -> Message {
    let mut a = Message::new();
    a.string(1, name).float(2, v).int(20, ATTR_FLOAT);
    a
}

/// `metadata_props`: emotion names (a JSON list, index = class), fergpu's version, the
/// model description and what the input and output hold.
fn metadata(ck: &Checkpoint, output: &str) -> Vec<(String, String)> {
    let what = if output == PROBABILITIES {
        "softmax probabilities"
    } else {
        "logits (apply softmax for probabilities)"
    };
    vec![
        (
            "emotions".into(),
            serde_json::to_string(&EMOTIONS).expect("names serialize"),
        ),
        ("fergpu.version".into(), env!("CARGO_PKG_VERSION").into()),
        (
            "fergpu.model".into(),
            serde_json::to_string(&ck.spec).expect("spec serializes"),
        ),
        (
            "input".into(),
            format!(
                "{INPUT}: float [N, 1, {IMAGE_SIDE}, {IMAGE_SIDE}], a grayscale face, \
                 pixel / 255 (0 black, 1 white), rows top to bottom"
            ),
        ),
        (
            "output".into(),
            format!(
                "{output}: float [N, {NUM_CLASSES}], {what}, classes in the order of 'emotions'"
            ),
        ),
    ]
}

/// The ModelProto around `graph`.
fn model_proto(name: &str, graph: Message, meta: Vec<(String, String)>) -> Vec<u8> {
    let mut opset = Message::new();
    opset.string(1, "").int(2, OPSET);
    let mut m = Message::new();
    m.int(1, IR_VERSION)
        .string(2, "fergpu")
        .string(3, env!("CARGO_PKG_VERSION"))
        .int(5, 1)
        .string(
            6,
            &format!("fergpu model '{name}': FER2013 facial-expression classifier"),
        )
        .message(7, &graph)
        .message(8, &opset);
    for (k, v) in &meta {
        let mut e = Message::new();
        e.string(1, k).string(2, v);
        m.message(14, &e);
    }
    m.into_bytes()
}
