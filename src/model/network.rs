//! The network, generic over the backend: buffers for one batch, forward, backward, and the
//! optimizer's state. The same code runs on the CPU reference and the GPU.

use super::{Op, Plan};
use crate::backend::{Backend, Dropout, OptimizerConfig, OptimizerStep};
use crate::shape::{IMAGE_PIXELS, NUM_CLASSES};

/// What a forward pass is for. Batch norm and dropout differ by it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Training: batch norm normalises with the batch's statistics and updates the running
    /// ones; dropout drops, with masks keyed by the run's `seed` and the optimizer's `step`
    /// (its step count before this step), so both backends and a resumed run draw the same.
    Train {
        /// The run's seed.
        seed: u64,
        /// Optimizer steps taken before this one.
        step: u64,
    },
    /// Evaluation: batch norm uses the running statistics, dropout passes everything.
    Eval,
}

/// What [`Network::forward_each`] calls after each op: the op's index and its output.
pub type OpVisitor<'a, B> = &'a mut dyn FnMut(usize, &<B as Backend>::Tensor);

/// The watch of an evaluation pass over the ops' outputs ([`Network::forward_watched`]):
/// per op, flags `(batch)` that become NaN for the images where the op gave a value that is
/// not finite.
pub trait Watch<B: Backend> {
    /// Op `i` gave `output (batch, per image)`: adds it to op `i`'s flags.
    fn observe(&mut self, be: &B, i: usize, output: &B::Tensor);
    /// Op `i`'s flags `(batch)`, for a fused call that watches its own output as it writes
    /// it ([`Backend::conv2d_bn_act_forward_eval`]).
    fn flags(&mut self, i: usize) -> &mut B::Tensor;
}

/// A model's device buffers, sized for the plan's (largest) batch. Smaller batches reuse
/// them: every op touches only the first `batch`-many elements.
pub struct Network<B: Backend> {
    /// The model at its largest batch size.
    pub plan: Plan,
    /// All parameters in one buffer `(P)`, laid out by `plan.params`.
    pub params: B::Tensor,
    /// The running statistics of every batch norm in one buffer `(S)`, laid out by
    /// `plan.running` (updated by training forward passes, never by the optimizer).
    pub running: B::Tensor,
    /// Gradients `(P)`, the same layout.
    pub grads: B::Tensor,
    /// Input batch `(batch, 1, 48, 48)`, scaled to 0..1.
    pub x: B::Tensor,
    /// Labels of the batch `(batch)`.
    pub labels: B::Indices,
    /// Softmax probabilities `(batch, 7)`.
    pub probs: B::Tensor,
    /// Each op's output, `outs[i]` of `plan.ops[i].output_len()` elements; the last is the
    /// logits `(batch, 7)`. A convolution followed by its activation runs both at once
    /// (`Backend::conv2d_forward_act`): its own output is then scratch, read by nothing; so
    /// is a batch norm's followed by its activation in training
    /// (`Backend::batchnorm_act_forward_train`), and a convolution's followed by a batch norm
    /// in a watched evaluation pass (`Backend::conv2d_bn_forward_eval`).
    outs: Vec<B::Tensor>,
    /// Argmax of each pooling op `(batch, C, out_h, out_w)`; `None` for other ops.
    argmax: Vec<Option<B::Indices>>,
    /// Each batch norm's batch statistics `(2, C)` (mean, 1/√(var + eps)) from the last
    /// training forward pass, for backward; `None` for other ops.
    saved: Vec<Option<B::Tensor>>,
    /// The mode of the last forward pass (backward needs a training one: its batch
    /// statistics and dropout key).
    mode: Mode,
    /// Two ping-pong gradient buffers `(max op output)`: backward reads one, writes the other.
    d: [B::Tensor; 2],
}

/// The activation of op `i + 1` when it is one over `len` values (the whole output of op
/// `i`, which it may then run with).
fn activation_after(ops: &[Op], i: usize, len: usize) -> Option<crate::backend::Activation> {
    match ops.get(i + 1) {
        Some(&Op::Act { act, len: n }) if n == len => Some(act),
        _ => None,
    }
}

/// The activation that goes back with batch norm `i` in one call: the op after it, when it
/// is an activation over the batch norm's whole output.
fn batch_norm_activation(ops: &[Op], i: usize) -> Option<crate::backend::Activation> {
    match ops[i] {
        Op::BatchNorm { shape, .. } => activation_after(ops, i, shape.len()),
        _ => None,
    }
}

impl<B: Backend> Network<B> {
    /// Allocates buffers for `plan` and uploads `params` `(P)`; the running statistics start
    /// at [`Plan::init_running`] (write others into `running`).
    pub fn new(be: &B, plan: Plan, params: &[f32]) -> Network<B> {
        assert_eq!(
            params.len(),
            plan.num_params,
            "parameter count does not match the model"
        );
        let outs = plan
            .ops
            .iter()
            .map(|op| be.zeros(op.output_len()))
            .collect();
        let argmax = plan
            .ops
            .iter()
            .map(|op| matches!(op, Op::Pool { .. }).then(|| be.zeros_indices(op.output_len())))
            .collect();
        let saved = plan
            .ops
            .iter()
            .map(|op| match op {
                Op::BatchNorm { shape, .. } => Some(be.zeros(2 * shape.c)),
                _ => None,
            })
            .collect();
        let max_len = plan.ops.iter().map(Op::output_len).max().unwrap_or(1);
        Network {
            params: be.upload(params),
            running: be.upload(&plan.init_running()),
            saved,
            mode: Mode::Eval,
            grads: be.zeros(plan.num_params),
            x: be.zeros(plan.batch * IMAGE_PIXELS),
            labels: be.zeros_indices(plan.batch),
            probs: be.zeros(plan.batch * NUM_CLASSES),
            d: [be.zeros(max_len), be.zeros(max_len)],
            outs,
            argmax,
            plan,
        }
    }

    /// The ops at batch size `batch` (≤ the plan's).
    fn ops_at(&self, batch: usize) -> Vec<Op> {
        assert!(
            batch > 0 && batch <= self.plan.batch,
            "batch {batch} > {}",
            self.plan.batch
        );
        self.plan
            .ops
            .iter()
            .map(|op| op.with_batch(batch, self.plan.batch))
            .collect()
    }

    /// The logits of the last forward pass `(batch, 7)`.
    pub fn logits(&self) -> &B::Tensor {
        self.outs.last().expect("a model has ops")
    }

    /// Runs every op on `x` in `mode`, leaving each op's output in place for backward.
    pub fn forward(&mut self, be: &B, batch: usize, mode: Mode) {
        self.forward_ops(be, batch, mode, None, None);
    }

    /// [`Network::forward`] with every op run on its own (a convolution's activation too, so
    /// that the convolution's output is written), calling `each(i, output)` after op `i`
    /// (`output (batch, per image)`): for checks that must see every value an op gives,
    /// such as NaN that a ReLU or a max pool after it would hide.
    pub fn forward_each(&mut self, be: &B, batch: usize, mode: Mode, each: OpVisitor<'_, B>) {
        self.forward_ops(be, batch, mode, Some(each), None);
    }

    /// An evaluation pass for a watch that needs every non-finite value to reach an output
    /// it sees: [`Network::forward_each`] with [`Watch::observe`] as the visitor, except
    /// that each convolution followed by a batch norm runs as one op
    /// ([`Backend::conv2d_bn_forward_eval`]) visited as the batch norm (`observe(i, output)`
    /// with `i` the batch norm's op), the convolution's own output never written. The batch
    /// norm maps each channel by `x·g + c` with finite `g` and `c`, so a NaN or infinity of
    /// the convolution is still one in what the watch sees; which of the two ops made it,
    /// only [`Network::forward_each`] can tell. Where the backend runs the convolution, batch
    /// norm and activation after it as one op ([`Backend::conv2d_bn_act_forward_eval`]), and
    /// the 2×2 max pool after those too ([`Backend::conv2d_bn_act_pool_forward_eval`]), that
    /// op watches its own output as it writes it, into the batch norm's [`Watch::flags`], and
    /// is not observed.
    pub fn forward_watched(&mut self, be: &B, batch: usize, watch: &mut dyn Watch<B>) {
        self.forward_ops(be, batch, Mode::Eval, None, Some(watch));
    }

    fn forward_ops(
        &mut self,
        be: &B,
        batch: usize,
        mode: Mode,
        mut each: Option<OpVisitor<'_, B>>,
        mut watch: Option<&mut dyn Watch<B>>,
    ) {
        self.mode = mode;
        let ops = self.ops_at(batch);
        // How many ops after this one a fused call has already run.
        let mut fused = 0;
        for (i, op) in ops.iter().enumerate() {
            if fused > 0 {
                fused -= 1;
                continue;
            }
            // Whether a fused call watched its own output (and is not visited).
            let mut watched_itself = false;
            be.label_op(Some(i));
            let (before, rest) = self.outs.split_at_mut(i);
            let input = if i == 0 { &self.x } else { &before[i - 1] };
            let out = &mut rest[0];
            match *op {
                Op::Conv {
                    shape,
                    w_off,
                    b_off,
                } => match ops.get(i + 1) {
                    Some(&Op::BatchNorm { shape: bs, bn })
                        if watch.is_some()
                            && mode == Mode::Eval
                            && bs.len() == shape.output_len() =>
                    {
                        let flags = watch.as_deref_mut().expect("a watched pass").flags(i + 1);
                        // With the activation after it too where the backend keeps the
                        // values that are not numbers through it, watching them itself into
                        // the batch norm's flags, whose such values the output still has.
                        let act = activation_after(&ops, i + 1, bs.len());
                        // And with the max pool after the activation, where the backend
                        // pools as it goes (the activation's output is then never written).
                        let pool = match ops.get(i + 3) {
                            Some(&Op::Pool { shape: ps }) if ps.input_len() == bs.len() => Some(ps),
                            _ => None,
                        };
                        let four = act.zip(pool).is_some_and(|(act, ps)| {
                            be.conv2d_bn_act_pool_forward_eval(
                                &mut rest[3],
                                flags,
                                input,
                                &self.params,
                                &self.running,
                                (w_off, b_off),
                                (&shape, &bn, &bs, &ps),
                                act,
                            )
                        });
                        let three = four
                            || act.is_some_and(|act| {
                                be.conv2d_bn_act_forward_eval(
                                    &mut rest[2],
                                    flags,
                                    input,
                                    &self.params,
                                    &self.running,
                                    (w_off, b_off),
                                    &shape,
                                    &bn,
                                    &bs,
                                    act,
                                )
                            });
                        if three {
                            fused = if four { 3 } else { 2 };
                            watched_itself = true;
                        } else {
                            let (pre, post) = rest.split_at_mut(1);
                            be.conv2d_bn_forward_eval(
                                &mut post[0],
                                &mut pre[0],
                                input,
                                &self.params,
                                &self.running,
                                w_off,
                                b_off,
                                &shape,
                                &bn,
                                &bs,
                            );
                            fused = 1;
                        }
                    }
                    // The activation's output is what backward reads; the convolution's own
                    // output buffer is scratch for backends that do not fuse the two.
                    Some(&Op::Act { act, len }) if len == shape.output_len() && each.is_none() => {
                        let (pre, post) = rest.split_at_mut(1);
                        be.conv2d_forward_act(
                            &mut post[0],
                            &mut pre[0],
                            input,
                            &self.params,
                            w_off,
                            b_off,
                            &shape,
                            act,
                        );
                        fused = 1;
                    }
                    _ => be.conv2d_forward(out, input, &self.params, w_off, b_off, &shape),
                },
                Op::Pool { shape } => {
                    let argmax = self.argmax[i].as_mut().expect("pool has argmax");
                    be.maxpool_forward(out, argmax, input, &shape)
                }
                Op::Dense {
                    shape,
                    w_off,
                    b_off,
                } => be.dense_forward(out, input, &self.params, w_off, b_off, &shape),
                Op::Act { act, len } => be.activation_forward(out, input, act, len),
                Op::BatchNorm { shape, bn } => match mode {
                    Mode::Train { .. } => {
                        let saved = self.saved[i].as_mut().expect("batch norm saves");
                        let running = &mut self.running;
                        match ops.get(i + 1) {
                            // As a convolution's activation: the batch norm's own output is
                            // scratch, read by nothing.
                            Some(&Op::Act { act, len }) if len == shape.len() && each.is_none() => {
                                let (pre, post) = rest.split_at_mut(1);
                                be.batchnorm_act_forward_train(
                                    &mut post[0],
                                    &mut pre[0],
                                    saved,
                                    running,
                                    input,
                                    &self.params,
                                    &bn,
                                    &shape,
                                    act,
                                );
                                fused = 1;
                            }
                            _ => be.batchnorm_forward_train(
                                out,
                                saved,
                                running,
                                input,
                                &self.params,
                                &bn,
                                &shape,
                            ),
                        }
                    }
                    Mode::Eval => be.batchnorm_forward_eval(
                        out,
                        input,
                        &self.params,
                        &self.running,
                        &bn,
                        &shape,
                    ),
                },
                Op::Dropout { rate, layer, len } => match mode {
                    Mode::Train { seed, step } => {
                        let d = Dropout {
                            rate,
                            seed,
                            step,
                            layer,
                        };
                        be.dropout_forward(out, input, &d, len)
                    }
                    Mode::Eval => be.copy(out, input, len),
                },
                Op::GlobalAvgPool { shape } => be.globalavgpool_forward(out, input, &shape),
            }
            // A fused call is visited as its last op with the output it wrote, its last op's.
            let (last, out) = (i + fused, &self.outs[i + fused]);
            if let Some(each) = each.as_mut() {
                each(last, out);
            } else if let Some(watch) = watch.as_deref_mut().filter(|_| !watched_itself) {
                watch.observe(be, last, out);
            }
        }
        be.label_op(None);
    }

    /// Softmax of the logits into `probs`, accumulating loss statistics into `stats (4)`:
    /// cross-entropy with class `weights (7)` and label smoothing ε = `smoothing`.
    pub fn loss_forward(
        &mut self,
        be: &B,
        stats: &mut B::Tensor,
        weights: &B::Tensor,
        smoothing: f32,
        batch: usize,
    ) {
        let logits = self.outs.last().expect("a model has ops");
        be.softmax_cross_entropy_forward(
            &mut self.probs,
            stats,
            logits,
            &self.labels,
            weights,
            smoothing,
            batch,
            NUM_CLASSES,
        );
    }

    /// Back-propagates the loss (class `weights (7)`, label smoothing `smoothing`) from
    /// `probs` and `labels` into `grads`, after a training forward pass.
    pub fn backward(&mut self, be: &B, weights: &B::Tensor, smoothing: f32, batch: usize) {
        let Mode::Train { seed, step } = self.mode else {
            panic!("backward needs a training forward pass before it");
        };
        let ops = self.ops_at(batch);
        let [d0, d1] = &mut self.d;
        let (mut d_out, mut d_in) = (d0, d1);
        be.softmax_cross_entropy_backward(
            d_out,
            &self.probs,
            &self.labels,
            weights,
            smoothing,
            batch,
            NUM_CLASSES,
        );
        for (i, op) in ops.iter().enumerate().rev() {
            // An activation right after a batch norm goes back with it, on the batch norm's
            // turn (next).
            if i > 0 && batch_norm_activation(&ops, i - 1).is_some() {
                continue;
            }
            be.label_op(Some(i));
            let input = if i == 0 { &self.x } else { &self.outs[i - 1] };
            // The first op's input is the image: it needs no gradient.
            let need_input_grad = i > 0;
            match *op {
                Op::Conv {
                    shape,
                    w_off,
                    b_off,
                } => {
                    be.conv2d_backward_weight(&mut self.grads, w_off, b_off, d_out, input, &shape);
                    if need_input_grad {
                        be.conv2d_backward_input(d_in, d_out, &self.params, w_off, &shape);
                    }
                }
                Op::Dense {
                    shape,
                    w_off,
                    b_off,
                } => {
                    be.dense_backward_weight(&mut self.grads, w_off, b_off, d_out, input, &shape);
                    if need_input_grad {
                        be.dense_backward_input(d_in, d_out, &self.params, w_off, &shape);
                    }
                }
                Op::Pool { shape } if need_input_grad => {
                    let argmax = self.argmax[i].as_ref().expect("pool has argmax");
                    be.maxpool_backward(d_in, d_out, argmax, &shape)
                }
                Op::Act { act, len } if need_input_grad => {
                    be.activation_backward(d_in, d_out, &self.outs[i], act, len)
                }
                Op::BatchNorm { shape, bn } => {
                    // γ and β need their gradients even for the first op, and the kernel
                    // writes d_in along with them.
                    let saved = self.saved[i].as_ref().expect("batch norm saves");
                    match batch_norm_activation(&ops, i) {
                        Some(act) => {
                            // The batch norm's own output (read by nothing after the
                            // forward) is the scratch between the two.
                            let (before, rest) = self.outs.split_at_mut(i);
                            let (own, after) = rest.split_first_mut().expect("op i");
                            let input = if i == 0 { &self.x } else { &before[i - 1] };
                            be.batchnorm_act_backward(
                                d_in,
                                own,
                                &mut self.grads,
                                d_out,
                                &after[0],
                                input,
                                saved,
                                &self.params,
                                &bn,
                                &shape,
                                act,
                            )
                        }
                        None => be.batchnorm_backward(
                            d_in,
                            &mut self.grads,
                            d_out,
                            input,
                            saved,
                            &self.params,
                            &bn,
                            &shape,
                        ),
                    }
                }
                Op::Dropout { rate, layer, len } if need_input_grad => {
                    let d = Dropout {
                        rate,
                        seed,
                        step,
                        layer,
                    };
                    be.dropout_backward(d_in, d_out, &d, len)
                }
                Op::GlobalAvgPool { shape } if need_input_grad => {
                    be.globalavgpool_backward(d_in, d_out, &shape)
                }
                Op::Pool { .. }
                | Op::Act { .. }
                | Op::Dropout { .. }
                | Op::GlobalAvgPool { .. } => {}
            }
            std::mem::swap(&mut d_out, &mut d_in);
        }
        be.label_op(None);
    }
}

/// The optimizer's state: its moment buffers, step count and weight-decay mask, and the
/// run's hyperparameters. One [`Backend::optimizer_step`] dispatch updates every parameter.
pub struct Optimizer<B: Backend> {
    /// Adam's first moments, or SGD's momentum buffer `(P)`.
    pub m: B::Tensor,
    /// Adam's second moments `(P)` (zero under SGD).
    pub v: B::Tensor,
    /// Steps taken so far.
    pub t: u64,
    /// Weight-decay mask `(P)` ([`Plan::decay_mask`]), uploaded once.
    decay: B::Tensor,
    config: OptimizerConfig,
}

impl<B: Backend> Optimizer<B> {
    /// Fresh zero state for the parameters of `plan`.
    pub fn new(be: &B, plan: &Plan, config: OptimizerConfig) -> Optimizer<B> {
        Optimizer {
            m: be.zeros(plan.num_params),
            v: be.zeros(plan.num_params),
            t: 0,
            decay: be.upload(&plan.decay_mask()),
            config,
        }
    }

    /// The hyperparameters.
    pub fn config(&self) -> &OptimizerConfig {
        &self.config
    }

    /// One update of `net.params` from `net.grads` at learning rate `lr`.
    pub fn step(&mut self, be: &B, net: &mut Network<B>, lr: f64) {
        self.t += 1;
        let step = OptimizerStep::new(&self.config, lr, self.t);
        be.optimizer_step(
            &mut net.params,
            &net.grads,
            &mut self.m,
            &mut self.v,
            &self.decay,
            &step,
        );
    }
}
