//! Building a [`Plan`] from a [`ModelSpec`]: one walk over the layers that tracks the
//! current `(C, H, W)`, checks each layer's size against the [`ModelLimits`] in checked
//! arithmetic (`shape.rs`'s `try_*` sizes) before adding it, and lays out the parameters.

use super::{LayerSpec, ModelLimits, ModelSpec, Op, ParamTensor, Plan};
use crate::backend::{Activation, BatchNorm};
use crate::error::{Error, Result};
use crate::shape::{
    BatchNormShape, Conv2dShape, DenseShape, GlobalAvgPoolShape, PoolShape, IMAGE_SIDE, NUM_CLASSES,
};

/// Resolves `spec` at `batch` images, each layer checked against `limits` before it is
/// added (see [`super::Plan::with_limits`]).
pub(super) fn build(spec: &ModelSpec, batch: usize, limits: &ModelLimits) -> Result<Plan> {
    assert!(batch > 0);
    let plan = Plan {
        batch,
        ops: vec![],
        params: vec![],
        num_params: 0,
        running: vec![],
        num_running: 0,
    };
    let mut b = PlanBuilder {
        batch,
        chw: (1, IMAGE_SIDE, IMAGE_SIDE),
        flat: None,
        plan,
        limits,
    };
    let (mut convs, mut denses, mut norms) = (0, 0, 0);
    for (i, layer) in spec.layers.iter().enumerate() {
        let at = |m: String| Error::BadModel(format!("layer {} ({layer:?}): {m}", i + 1));
        match *layer {
            LayerSpec::Conv2d {
                filters,
                kernel,
                padding,
                activation,
            } => {
                convs += 1;
                let pad = padding.pixels(kernel).map_err(at)?;
                b.conv(filters, kernel, pad, activation, convs)
                    .map_err(at)?
            }
            LayerSpec::MaxPool { size } => b.pool(size).map_err(at)?,
            LayerSpec::Flatten => b.flatten(),
            LayerSpec::Dense { units, activation } => {
                denses += 1;
                b.dense(units, activation, denses).map_err(at)?
            }
            LayerSpec::BatchNorm { momentum, eps } => {
                norms += 1;
                b.batch_norm(momentum, eps, norms).map_err(at)?
            }
            LayerSpec::Dropout { rate } => b.dropout(rate, i).map_err(at)?,
            LayerSpec::Activation { activation } => {
                let len = b.features() * batch;
                b.act(activation, len)
            }
            LayerSpec::GlobalAvgPool => b.global_avg_pool().map_err(at)?,
        }
    }
    match spec.layers.last() {
        Some(LayerSpec::Dense {
            units: NUM_CLASSES,
            activation: Activation::Linear,
        }) => Ok(b.plan),
        _ => Err(Error::BadModel(format!(
            "the last layer must be Dense with {NUM_CLASSES} units and activation linear \
             (softmax belongs to the loss)"
        ))),
    }
}

/// Walks a layer list tracking the current `(C, H, W)` (or flat feature count).
struct PlanBuilder<'a> {
    batch: usize,
    chw: (usize, usize, usize),
    flat: Option<usize>,
    plan: Plan,
    limits: &'a ModelLimits,
}

impl PlanBuilder<'_> {
    /// Admits a layer of `params` parameters and `out` output floats per image (`None`:
    /// past `usize`) if the model stays within the limits; nothing is added otherwise.
    fn admit(&self, params: Option<usize>, out: Option<usize>) -> Result<(), String> {
        let total = params.and_then(|p| self.plan.num_params.checked_add(p));
        self.limits.check_layer(total, out, self.batch)
    }

    fn plan(&mut self) -> &mut Plan {
        &mut self.plan
    }

    fn add_param(
        &mut self,
        name: String,
        shape: Vec<usize>,
        fans: Option<(usize, usize)>,
    ) -> usize {
        let plan = self.plan();
        let offset = plan.num_params;
        let t = ParamTensor {
            name,
            offset,
            shape,
            glorot_fans: fans,
            decay: fans.is_some(),
            fill: 0.0,
        };
        plan.num_params += t.len();
        plan.params.push(t);
        offset
    }

    /// Adds a tensor of `len` elements starting at `fill` to the parameters (trained, never
    /// decayed) or to the running statistics; returns its offset there.
    fn add_filled(&mut self, name: String, len: usize, fill: f32, running: bool) -> usize {
        let plan = self.plan();
        let (list, total) = if running {
            (&mut plan.running, &mut plan.num_running)
        } else {
            (&mut plan.params, &mut plan.num_params)
        };
        let offset = *total;
        *total += len;
        list.push(ParamTensor {
            name,
            offset,
            shape: vec![len],
            glorot_fans: None,
            decay: false,
            fill,
        });
        offset
    }

    /// Values per image at this point: the flat features, or `C·H·W`.
    fn features(&self) -> usize {
        let (c, h, w) = self.chw;
        self.flat.unwrap_or(c * h * w)
    }

    fn act(&mut self, act: Activation, len: usize) {
        if act != Activation::Linear {
            self.plan().ops.push(Op::Act { act, len });
        }
    }

    fn conv(
        &mut self,
        filters: usize,
        k: usize,
        pad: usize,
        act: Activation,
        n: usize,
    ) -> Result<(), String> {
        if self.flat.is_some() {
            return Err("a convolution cannot follow Flatten".into());
        }
        let (c, h, w) = self.chw;
        if filters == 0 {
            return Err("a convolution needs at least 1 filter".into());
        }
        if k == 0 {
            return Err("the kernel side must be at least 1".into());
        }
        let shape = Conv2dShape {
            batch: self.batch,
            in_c: c,
            in_h: h,
            in_w: w,
            out_c: filters,
            k,
            pad,
        };
        let padded = |side: usize| side.saturating_add(pad.saturating_mul(2));
        if k > padded(h) || k > padded(w) {
            return Err(format!(
                "kernel {k}×{k} is larger than its {h}×{w} input padded by {pad}"
            ));
        }
        let per_image = Conv2dShape { batch: 1, ..shape };
        self.admit(per_image.try_param_len(), per_image.try_output_len())?;
        let fans = (c * k * k, filters * k * k);
        let w_off = self.add_param(
            format!("conv{n}.weight"),
            vec![filters, c, k, k],
            Some(fans),
        );
        let b_off = self.add_param(format!("conv{n}.bias"), vec![filters], None);
        self.plan().ops.push(Op::Conv {
            shape,
            w_off,
            b_off,
        });
        self.chw = (filters, shape.out_h(), shape.out_w());
        self.act(act, shape.output_len());
        Ok(())
    }

    fn pool(&mut self, size: usize) -> Result<(), String> {
        if self.flat.is_some() {
            return Err("pooling cannot follow Flatten".into());
        }
        let (c, h, w) = self.chw;
        if size == 0 {
            return Err("the pool size must be at least 1".into());
        }
        if size > h || size > w {
            return Err(format!("pool size {size} is larger than its {h}×{w} input"));
        }
        let shape = PoolShape {
            batch: self.batch,
            c,
            in_h: h,
            in_w: w,
            size,
        };
        self.plan().ops.push(Op::Pool { shape });
        self.chw = (c, shape.out_h(), shape.out_w());
        Ok(())
    }

    fn flatten(&mut self) {
        let (c, h, w) = self.chw;
        self.flat = Some(self.flat.unwrap_or(c * h * w));
    }

    fn dense(&mut self, units: usize, act: Activation, n: usize) -> Result<(), String> {
        let in_f = self.flat.ok_or("Dense needs a Flatten before it")?;
        if units == 0 {
            return Err("Dense needs at least one unit".into());
        }
        let shape = DenseShape {
            batch: self.batch,
            in_f,
            out_f: units,
        };
        self.admit(shape.try_param_len(), Some(units))?;
        let w_off = self.add_param(
            format!("dense{n}.weight"),
            vec![units, in_f],
            Some((in_f, units)),
        );
        let b_off = self.add_param(format!("dense{n}.bias"), vec![units], None);
        self.plan().ops.push(Op::Dense {
            shape,
            w_off,
            b_off,
        });
        self.flat = Some(units);
        self.act(act, shape.output_len());
        Ok(())
    }

    fn batch_norm(&mut self, momentum: f32, eps: f32, n: usize) -> Result<(), String> {
        if !(0.0..=1.0).contains(&momentum) {
            return Err(format!("momentum {momentum} is not in [0, 1]"));
        }
        if !(eps > 0.0 && eps.is_finite()) {
            return Err(format!("eps {eps} is not a positive number"));
        }
        let shape = match self.flat {
            Some(features) => BatchNormShape {
                batch: self.batch,
                c: features,
                hw: 1,
            },
            None => BatchNormShape {
                batch: self.batch,
                c: self.chw.0,
                hw: self.chw.1 * self.chw.2,
            },
        };
        let c = shape.c;
        self.admit(c.checked_mul(2), Some(self.features()))?;
        let bn = BatchNorm {
            w_off: self.add_filled(format!("bn{n}.weight"), c, 1.0, false),
            b_off: self.add_filled(format!("bn{n}.bias"), c, 0.0, false),
            mean_off: self.add_filled(format!("bn{n}.running_mean"), c, 0.0, true),
            var_off: self.add_filled(format!("bn{n}.running_var"), c, 1.0, true),
            momentum,
            eps,
        };
        self.plan().ops.push(Op::BatchNorm { shape, bn });
        Ok(())
    }

    /// Dropout of layer `layer` (its index in the layer list); a rate of 0 is no op at all.
    fn dropout(&mut self, rate: f32, layer: usize) -> Result<(), String> {
        if !(0.0..1.0).contains(&rate) {
            return Err(format!("dropout rate {rate} is not in [0, 1)"));
        }
        if rate > 0.0 {
            let len = self.features() * self.batch;
            let layer = layer as u32;
            self.plan().ops.push(Op::Dropout { rate, layer, len });
        }
        Ok(())
    }

    fn global_avg_pool(&mut self) -> Result<(), String> {
        if self.flat.is_some() {
            return Err("global average pooling cannot follow Flatten".into());
        }
        let (c, h, w) = self.chw;
        let shape = GlobalAvgPoolShape {
            batch: self.batch,
            c,
            hw: h * w,
        };
        self.plan().ops.push(Op::GlobalAvgPool { shape });
        self.flat = Some(c);
        Ok(())
    }
}
