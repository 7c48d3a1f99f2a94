// dropout.wgsl: inverted dropout with masks drawn from a counter-based hash, so the mask of
// element i is a pure function of (seed, step, layer, i): the CPU reference
// (backend::dropout_hash) computes the same integer operations, and backward redraws the
// forward's mask instead of storing it.
//
// Layout: flat f32 arrays; only the first `len` elements are touched. Element i is kept when
// dropout_hash(i) < threshold ((1 − rate)·2³²) and then scaled by `scale` = 1/(1 − rate);
// otherwise it is 0.
//
// Bindings (group 0):
//   0 p     uniform Drop     len, threshold, scale and the key (host: gpu/uniforms.rs Drop,
//                            filled by gpu/ops.rs dropout_*)
//   1 dst   read_write f32   forward: y · backward: dx
//   2 src   read f32         forward: x · backward: dy
//
// Dispatch: workgroups of WG = 256 (the host reads it from @workgroup_size) folded into 2-D
// by shape::dispatch_2d, lin = gid.y * (nwg.x * WG) + gid.x, bounds-checked; one element per
// invocation.

struct Drop {
    len: u32,
    threshold: u32,  // hashes below it keep their element
    scale: f32,      // 1 / (1 − rate)
    layer: u32,      // the key: layer index, optimizer step (two words), seed (two words)
    step_lo: u32,
    step_hi: u32,
    seed_lo: u32,
    seed_hi: u32,
}

@group(0) @binding(0) var<uniform> p: Drop;
@group(0) @binding(1) var<storage, read_write> dst: array<f32>;
@group(0) @binding(2) var<storage, read> src: array<f32>;

const WG: u32 = 256u;

// Chris Wellons' lowbias32; u32 multiplication wraps, as Rust's wrapping_mul.
fn lowbias32(v: u32) -> u32 {
    var x = v;
    x ^= x >> 16u;
    x *= 0x7feb352du;
    x ^= x >> 15u;
    x *= 0x846ca68bu;
    x ^= x >> 16u;
    return x;
}

// backend::dropout_hash: the element, then each key word mixed in by XOR.
fn dropout_hash(i: u32) -> u32 {
    var h = lowbias32(i);
    h = lowbias32(h ^ p.layer);
    h = lowbias32(h ^ p.step_lo);
    h = lowbias32(h ^ p.step_hi);
    h = lowbias32(h ^ p.seed_lo);
    h = lowbias32(h ^ p.seed_hi);
    return h;
}

fn masked(i: u32) {
    dst[i] = select(0.0, src[i] * p.scale, dropout_hash(i) < p.threshold);
}

@compute @workgroup_size(WG)
fn dropout_forward(@builtin(global_invocation_id) gid: vec3<u32>,
                   @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.y * (nwg.x * WG) + gid.x;
    if (i >= p.len) {
        return;
    }
    masked(i);
}

@compute @workgroup_size(WG)
fn dropout_backward(@builtin(global_invocation_id) gid: vec3<u32>,
                    @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.y * (nwg.x * WG) + gid.x;
    if (i >= p.len) {
        return;
    }
    masked(i);
}
