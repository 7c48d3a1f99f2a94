// accumulate.wgsl: a scaled add into an accumulator, acc ← α·acc + β·x (test-time
// augmentation keeps the running mean of its views' logits with α = k/(k+1), β = 1/(k+1)).
//
// Layout: acc, x: flat f32 arrays; only the first `len` elements are touched. When α = 0 the
// old acc is not read (acc ← β·x), so whatever it held, NaN included, does not leak.
//
// Bindings (group 0):
//   0 p     uniform Accum    len, alpha, beta (host: gpu/uniforms.rs Accum, filled by
//                            gpu/ops.rs)
//   1 acc   read_write f32
//   2 x     read f32
//
// Dispatch: workgroups of WG = 256 (the host reads it from @workgroup_size) folded into 2-D
// by shape::dispatch_2d, lin = gid.y * (nwg.x * WG) + gid.x, bounds-checked; one element per
// invocation.

struct Accum {
    len: u32,
    _pad: u32,
    alpha: f32,
    beta: f32,
}

@group(0) @binding(0) var<uniform> p: Accum;
@group(0) @binding(1) var<storage, read_write> acc: array<f32>;
@group(0) @binding(2) var<storage, read> x: array<f32>;

const WG: u32 = 256u;

@compute @workgroup_size(WG)
fn scale_add(@builtin(global_invocation_id) gid: vec3<u32>,
             @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.y * (nwg.x * WG) + gid.x;
    if (i >= p.len) {
        return;
    }
    var kept = 0.0;
    if (p.alpha != 0.0) {
        kept = p.alpha * acc[i];
    }
    acc[i] = kept + p.beta * x[i];
}
