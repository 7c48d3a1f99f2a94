// data.wgsl: gathers one training batch out of the data set resident on the device.
//
// Layout: pixels: the data set's u8 pixels (n, 48·48) packed four to a little-endian u32 word
// (byte i of the set is bits 8·(i mod 4) of word i / 4); all_labels: u8 labels (n) packed the
// same way; order (n) u32 entries, each a row index packed with an augmentation (src/augment.rs:
// bits 0-22 row, 23-26 dx and 27-30 dy as 4-bit two's complement, 31 flip; a bare row index is
// unaugmented); x (batch, 1, 48, 48) f32; labels (batch) u32.
// Output pixel (y, x) of an entry reads source pixel (clamp(y + dy), clamp(x' + dx)), with
// x' = side - 1 - x when flipped, clamp to 0..side-1 (edge pixels repeat).
// x[i, p] = f32(pixel) * (1.0 / 255.0), the same expression as the CPU reference
// (backend::cpu PIXEL_SCALE: a multiply by the f32 nearest 1/255), so batches are identical.
//
// Bindings (group 0):
//   0 p           uniform Gather (host: gpu/uniforms.rs Gather, filled by gpu/ops.rs)
//   1 x           read_write f32
//   2 labels      read_write u32
//   3 pixels      read u32 (packed)
//   4 all_labels  read u32 (packed)
//   5 order       read u32
//
// Dispatch: workgroups of WG = 256 (the host reads it from @workgroup_size) folded into 2-D
// by shape::dispatch_2d, lin = gid.y * (nwg.x * WG) + gid.x over batch·48·48, bounds-checked;
// one pixel per invocation, and the first pixel's invocation of each image also copies its
// label.

struct Gather {
    batch: u32,
    offset: u32,   // first position in order
    pixels: u32,   // pixels per image (48·48)
    side: u32,     // image side (48)
}

@group(0) @binding(0) var<uniform> p: Gather;
@group(0) @binding(1) var<storage, read_write> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> labels: array<u32>;
@group(0) @binding(3) var<storage, read> pixels: array<u32>;
@group(0) @binding(4) var<storage, read> all_labels: array<u32>;
@group(0) @binding(5) var<storage, read> order: array<u32>;

const WG: u32 = 256u;

fn byte_at(word: u32, i: u32) -> u32 {
    return (word >> ((i % 4u) * 8u)) & 0xffu;
}

@compute @workgroup_size(WG)
fn gather_batch(@builtin(global_invocation_id) gid: vec3<u32>,
                @builtin(num_workgroups) nwg: vec3<u32>) {
    let lin = gid.y * (nwg.x * WG) + gid.x;
    if (lin >= p.batch * p.pixels) {
        return;
    }
    let i = lin / p.pixels;
    let px = lin % p.pixels;
    let entry = order[p.offset + i];
    let r = entry & 0x7fffffu;
    // Sign-extend the 4-bit shifts: move each to the top of an i32, shift back arithmetically.
    let dx = bitcast<i32>(entry << 5u) >> 28u;
    let dy = bitcast<i32>(entry << 1u) >> 28u;
    let last = i32(p.side) - 1;
    var sx = i32(px % p.side);
    if ((entry >> 31u) == 1u) {
        sx = last - sx;
    }
    sx = clamp(sx + dx, 0, last);
    let sy = clamp(i32(px / p.side) + dy, 0, last);
    let at = r * p.pixels + u32(sy) * p.side + u32(sx);
    x[lin] = f32(byte_at(pixels[at / 4u], at)) * (1.0 / 255.0);
    if (px == 0u) {
        labels[i] = byte_at(all_labels[r / 4u], r);
    }
}
