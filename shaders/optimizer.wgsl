// optimizer.wgsl: one optimizer step (adam, adamw or sgd) over the whole flat parameter
// buffer (backend::OptimizerStep has the formulas; PyTorch's torch.optim in its order of
// operations, written in the same order as the CPU reference cpu/optimizer.rs).
//
// Layout: params, grads, m, v, decay: flat f32 arrays of the same length `len` (P). decay is
// the weight-decay mask (1 decays, 0 does not). m holds Adam's first moment or SGD's
// momentum buffer; v Adam's second moment (SGD leaves it alone).
//
// Bindings (group 0):
//   0 s       uniform Optim (host: gpu/uniforms.rs Optim, filled by gpu/ops.rs)
//   1 params  read_write f32
//   2 grads   read f32
//   3 m       read_write f32
//   4 v       read_write f32
//   5 decay   read f32
//
// Dispatch: workgroups of WG = 256 (the host reads it from @workgroup_size) folded into 2-D
// by shape::dispatch_2d, lin = gid.y * (nwg.x * WG) + gid.x, bounds-checked; one parameter
// per invocation.

struct Optim {
    len: u32,
    kind: u32,             // OptimizerKind::code: ADAM, ADAMW, SGD below
    nesterov: u32,         // SGD: 1 for Nesterov momentum
    _pad0: u32,
    lr: f32,               // this step's learning rate
    weight_decay: f32,     // λ: adam and sgd add λ·decay·p to the gradient
    lr_decay: f32,         // lr·λ: adamw multiplies p by 1 − lr·λ·decay
    momentum: f32,         // SGD's μ (0: no momentum buffer)
    beta1: f32,
    one_minus_beta1: f32,  // rounded once from f64 on the host
    beta2: f32,
    one_minus_beta2: f32,
    eps: f32,
    step_size: f32,        // lr / (1 − β₁ᵗ)
    bias2_sqrt: f32,       // √(1 − β₂ᵗ)
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> s: Optim;
@group(0) @binding(1) var<storage, read_write> params: array<f32>;
@group(0) @binding(2) var<storage, read> grads: array<f32>;
@group(0) @binding(3) var<storage, read_write> m: array<f32>;
@group(0) @binding(4) var<storage, read_write> v: array<f32>;
@group(0) @binding(5) var<storage, read> decay: array<f32>;

const WG: u32 = 256u;
const ADAMW: u32 = 1u;
const SGD: u32 = 2u;

@compute @workgroup_size(WG)
fn optimizer_step(@builtin(global_invocation_id) gid: vec3<u32>,
                  @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.y * (nwg.x * WG) + gid.x;
    if (i >= s.len) {
        return;
    }
    var p = params[i];
    var g = grads[i];
    let d = decay[i];
    if (s.kind == ADAMW) {
        p = p * (1.0 - s.lr_decay * d);
    } else {
        g = g + s.weight_decay * d * p;
    }
    if (s.kind == SGD) {
        // PyTorch keeps no momentum buffer when μ = 0.
        if (s.momentum != 0.0) {
            let b = s.momentum * m[i] + g;
            m[i] = b;
            g = select(b, g + s.momentum * b, s.nesterov != 0u);
        }
        params[i] = p - s.lr * g;
    } else {
        let mi = s.beta1 * m[i] + s.one_minus_beta1 * g;
        let vi = s.beta2 * v[i] + s.one_minus_beta2 * g * g;
        m[i] = mi;
        v[i] = vi;
        params[i] = p - s.step_size * mi / (sqrt(vi) / s.bias2_sqrt + s.eps);
    }
}
