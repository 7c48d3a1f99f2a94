// globalavgpool.wgsl: global average pooling, the mean of each image's channel plane.
//
// Layout (f32, row-major): input x and dx (batch, c, hw); output y and dy (batch, c).
//
// Bindings (group 0):
//   0 p     uniform Gap      batch, c, hw (host: gpu/uniforms.rs Gap, filled by gpu/ops.rs)
//   forward:  1 y read_write f32, 2 x read f32
//   backward: 3 dx read_write f32, 4 dy read f32
//
// Dispatch: workgroups of WG = 256 (the host reads it from @workgroup_size) folded into 2-D
// by shape::dispatch_2d, lin = gid.y * (nwg.x * WG) + gid.x, bounds-checked.
//   globalavgpool_forward:  one invocation per output (b, c): sums its plane in order.
//   globalavgpool_backward: one invocation per input element: dy of its plane over hw.

struct Gap {
    batch: u32,
    c: u32,
    hw: u32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Gap;
@group(0) @binding(1) var<storage, read_write> y: array<f32>;
@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read_write> dx: array<f32>;
@group(0) @binding(4) var<storage, read> dy: array<f32>;

const WG: u32 = 256u;

@compute @workgroup_size(WG)
fn globalavgpool_forward(@builtin(global_invocation_id) gid: vec3<u32>,
                         @builtin(num_workgroups) nwg: vec3<u32>) {
    let o = gid.y * (nwg.x * WG) + gid.x;
    if (o >= p.batch * p.c) {
        return;
    }
    var s = 0.0;
    for (var j = 0u; j < p.hw; j++) {
        s += x[o * p.hw + j];
    }
    y[o] = s / f32(p.hw);
}

@compute @workgroup_size(WG)
fn globalavgpool_backward(@builtin(global_invocation_id) gid: vec3<u32>,
                          @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.y * (nwg.x * WG) + gid.x;
    if (i >= p.batch * p.c * p.hw) {
        return;
    }
    dx[i] = dy[i / p.hw] / f32(p.hw);
}
