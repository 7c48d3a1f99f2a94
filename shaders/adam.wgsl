// adam.wgsl: one Adam step over the whole flat parameter buffer (backend::AdamStep).
//
// Layout: params, grads, m, v: flat f32 arrays of the same length `len`.
// m ← β₁m + (1−β₁)g;  v ← β₂v + (1−β₂)g²;  p ← p − lr_t·m/(√v + ε)   (lr_t bias-corrected
// on the host), written in the same operation order as the CPU reference.
//
// Bindings (group 0):
//   0 s       uniform AdamParams (host: gpu/uniforms.rs AdamParams, filled by gpu/ops.rs)
//   1 params  read_write f32
//   2 grads   read f32
//   3 m       read_write f32
//   4 v       read_write f32
//
// Dispatch: workgroups of WG = 256 (the host reads it from @workgroup_size) folded into 2-D
// by shape::dispatch_2d, lin = gid.y * (nwg.x * WG) + gid.x, bounds-checked; one parameter
// per invocation.

struct AdamParams {
    lr_t: f32,
    beta1: f32,
    beta2: f32,
    eps: f32,
    len: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> s: AdamParams;
@group(0) @binding(1) var<storage, read_write> params: array<f32>;
@group(0) @binding(2) var<storage, read> grads: array<f32>;
@group(0) @binding(3) var<storage, read_write> m: array<f32>;
@group(0) @binding(4) var<storage, read_write> v: array<f32>;

const WG: u32 = 256u;

@compute @workgroup_size(WG)
fn adam_step(@builtin(global_invocation_id) gid: vec3<u32>,
             @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.y * (nwg.x * WG) + gid.x;
    if (i >= s.len) {
        return;
    }
    let g = grads[i];
    let mi = s.beta1 * m[i] + (1.0 - s.beta1) * g;
    let vi = s.beta2 * v[i] + (1.0 - s.beta2) * g * g;
    m[i] = mi;
    v[i] = vi;
    params[i] = params[i] - s.lr_t * mi / (sqrt(vi) + s.eps);
}
