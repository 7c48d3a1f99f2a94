// activation.wgsl: element-wise activations and their derivatives (from the output y).
//
// Codes (backend::Activation::code): 0 relu, 1 elu (α = 1), 2 selu, 3 sigmoid, 4 tanh, 5 linear.
// Layout: flat f32 arrays; only the first `len` elements are touched.
//
// Bindings (group 0):
//   0 p     uniform Act      len, code (host: gpu/uniforms.rs Act, filled by gpu/ops.rs)
//   1 dst   read_write f32   forward: y · backward: dx
//   2 a     read f32         forward: x · backward: dy
//   3 yv    read f32         backward: y (the forward output)
//
// Dispatch: workgroups of WG = 256 (the host reads it from @workgroup_size) folded into 2-D
// by shape::dispatch_2d, lin = gid.y * (nwg.x * WG) + gid.x, bounds-checked; one element per
// invocation.

struct Act {
    len: u32,
    code: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Act;
@group(0) @binding(1) var<storage, read_write> dst: array<f32>;
@group(0) @binding(2) var<storage, read> a: array<f32>;
@group(0) @binding(3) var<storage, read> yv: array<f32>;

const WG: u32 = 256u;
const SELU_SCALE: f32 = 1.0507009873554805;
const SELU_ALPHA: f32 = 1.6732632423543772;
const ELU_ALPHA: f32 = 1.0;

fn activate(x: f32) -> f32 {
    switch p.code {
        case 0u: { return max(x, 0.0); }
        case 1u: { return select(ELU_ALPHA * (exp(x) - 1.0), x, x > 0.0); }
        case 2u: { return select(SELU_SCALE * SELU_ALPHA * (exp(x) - 1.0), SELU_SCALE * x, x > 0.0); }
        case 3u: { return 1.0 / (1.0 + exp(-x)); }
        // tanh(±15) is ±1 in f32; clamping keeps drivers that build tanh from exp away from ∞/∞.
        case 4u: { return tanh(clamp(x, -15.0, 15.0)); }
        default: { return x; }
    }
}

fn derivative(y: f32) -> f32 {
    switch p.code {
        case 0u: { return select(0.0, 1.0, y > 0.0); }
        case 1u: { return select(y + ELU_ALPHA, 1.0, y > 0.0); }
        case 2u: { return select(y + SELU_SCALE * SELU_ALPHA, SELU_SCALE, y > 0.0); }
        case 3u: { return y * (1.0 - y); }
        case 4u: { return 1.0 - y * y; }
        default: { return 1.0; }
    }
}

@compute @workgroup_size(WG)
fn activation_forward(@builtin(global_invocation_id) gid: vec3<u32>,
                      @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.y * (nwg.x * WG) + gid.x;
    if (i >= p.len) {
        return;
    }
    dst[i] = activate(a[i]);
}

@compute @workgroup_size(WG)
fn activation_backward(@builtin(global_invocation_id) gid: vec3<u32>,
                       @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.y * (nwg.x * WG) + gid.x;
    if (i >= p.len) {
        return;
    }
    dst[i] = a[i] * derivative(yv[i]);
}
