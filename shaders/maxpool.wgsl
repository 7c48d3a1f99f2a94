// maxpool.wgsl: max pooling, square window `size`, stride `size`, floor (Keras MaxPool2D).
//
// Layout (row-major): input x (batch, c, in_h, in_w) f32; output y and argmax
// (batch, c, out_h, out_w), argmax u32 = flat index row·in_w + col inside the input plane.
// Ties keep the first maximum in row-major window order (a later element must be greater).
//
// Bindings (group 0):
//   0 p       uniform Pool     shapes (host: gpu/uniforms.rs Pool, filled by gpu/ops.rs)
//   forward:  1 y read_write f32, 2 argmax read_write u32, 3 x read f32
//   backward: 4 dx read_write f32, 5 dy read f32, 6 argmax read u32
//
// Dispatch: workgroups of WG = 256 (the host reads it from @workgroup_size) folded into 2-D
// by shape::dispatch_2d, lin = gid.y * (nwg.x * WG) + gid.x, bounds-checked.
//   maxpool_forward:  one invocation per output element, scans its window.
//   maxpool_backward: one invocation per input element (a gather, no atomics): it takes dy of
//                     the window it belongs to if argmax chose it, else 0; floor-dropped rows
//                     and columns belong to no window and get 0.

struct Pool {
    batch: u32,
    c: u32,
    in_h: u32,
    in_w: u32,
    size: u32,
    out_h: u32,
    out_w: u32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Pool;
@group(0) @binding(1) var<storage, read_write> y: array<f32>;
@group(0) @binding(2) var<storage, read_write> argmax_out: array<u32>;
@group(0) @binding(3) var<storage, read> x: array<f32>;
@group(0) @binding(4) var<storage, read_write> dx: array<f32>;
@group(0) @binding(5) var<storage, read> dy: array<f32>;
@group(0) @binding(6) var<storage, read> argmax_in: array<u32>;

const WG: u32 = 256u;

@compute @workgroup_size(WG)
fn maxpool_forward(@builtin(global_invocation_id) gid: vec3<u32>,
                   @builtin(num_workgroups) nwg: vec3<u32>) {
    let lin = gid.y * (nwg.x * WG) + gid.x;
    let ohw = p.out_h * p.out_w;
    if (lin >= p.batch * p.c * ohw) {
        return;
    }
    let plane = (lin / ohw) * (p.in_h * p.in_w);
    let oy = (lin % ohw) / p.out_w;
    let ox = lin % p.out_w;
    var best_i = oy * p.size * p.in_w + ox * p.size;
    var best = x[plane + best_i];
    for (var i = 0u; i < p.size; i++) {
        for (var j = 0u; j < p.size; j++) {
            let at = (oy * p.size + i) * p.in_w + ox * p.size + j;
            let v = x[plane + at];
            if (v > best) {
                best = v;
                best_i = at;
            }
        }
    }
    y[lin] = best;
    argmax_out[lin] = best_i;
}

@compute @workgroup_size(WG)
fn maxpool_backward(@builtin(global_invocation_id) gid: vec3<u32>,
                    @builtin(num_workgroups) nwg: vec3<u32>) {
    let lin = gid.y * (nwg.x * WG) + gid.x;
    let hw = p.in_h * p.in_w;
    if (lin >= p.batch * p.c * hw) {
        return;
    }
    let at = lin % hw;
    let oy = (at / p.in_w) / p.size;
    let ox = (at % p.in_w) / p.size;
    var g = 0.0;
    if (oy < p.out_h && ox < p.out_w) {
        let o = (lin / hw) * (p.out_h * p.out_w) + oy * p.out_w + ox;
        if (argmax_in[o] == at) {
            g = dy[o];
        }
    }
    dx[lin] = g;
}
