// data.wgsl: gathers one training batch out of the data set resident on the device.
//
// Layout: pixels: the data set's u8 pixels (n, 48·48) packed four to a little-endian u32 word
// (byte i of the set is bits 8·(i mod 4) of word i / 4); all_labels: u8 labels (n) packed the
// same way; order (n) u32 entries, each a row index packed with an augmentation (src/augment.rs:
// bits 0-22 row, 23-26 dx and 27-30 dy as 4-bit two's complement, 31 flip; a bare row index is
// unaugmented); warp (n, 4) u32 per order position, read by gather_batch_warped only (src/augment.rs
// ImageWarp: A and B as i32, the erased rectangle as bytes x | y << 8 | w << 16 | h << 24, the
// noise key); x (batch, 1, 48, 48) f32; labels (batch) u32.
// Output pixel (y, x) of an entry reads source pixel (clamp(y + dy), clamp(x' + dx)), with
// x' = side - 1 - x when flipped, clamp to 0..side-1 (edge pixels repeat).
// x[i, p] = f32(pixel) * (1.0 / 255.0), the same expression as the CPU reference
// (backend::cpu PIXEL_SCALE: a multiply by the f32 nearest 1/255), so batches are identical.
// gather_batch_warped maps output pixel (y, x) to source position (X, Y) in 1/256 pixel, integer
// arithmetic only (src/augment.rs module docs): x' = flipped x, u = 2x' - 47, v = 2y - 47,
// X = ((A·u - B·v + 256) >> 9) + 128·47 + 256·dx, Y = ((B·u + A·v + 256) >> 9) + 128·47 + 256·dy;
// the sample is the bilinear sum of the 4 taps around it (rows and columns clamped to 0..47)
// with integer weights (256 - f, f) per axis, or noise·65536 inside the erased rectangle, and
// x[i, p] = f32(sum) * (1/255 / 65536), the CPU's WARPED_PIXEL_SCALE: exact on both backends.
//
// Bindings (group 0):
//   0 p           uniform Gather (host: gpu/uniforms.rs Gather, filled by gpu/ops.rs)
//   1 x           read_write f32
//   2 labels      read_write u32
//   3 pixels      read u32 (packed)
//   4 all_labels  read u32 (packed)
//   5 order       read u32
//   6 warp        read u32 (gather_batch_warped only)
//
// Dispatch: workgroups of WG = 256 (the host reads it from @workgroup_size) folded into 2-D
// by shape::dispatch_2d, lin = gid.y * (nwg.x * WG) + gid.x over batch·48·48, bounds-checked;
// one pixel per invocation (both entry points), and the first pixel's invocation of each image
// also copies its label.

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
@group(0) @binding(6) var<storage, read> warp: array<u32>;

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

// ---- gather_batch_warped -----------------------------------------------------------------------

const WARP_WORDS: u32 = 4u; // augment::WARP_WORDS
const SUBPIXEL: i32 = 256;  // augment::SUBPIXEL

// Pixel (row, col) of image r, row and column clamped into the image (edges repeat).
fn tap(r: u32, row: i32, col: i32) -> u32 {
    let last = i32(p.side) - 1;
    let at = r * p.pixels + u32(clamp(row, 0, last)) * p.side + u32(clamp(col, 0, last));
    return byte_at(pixels[at / 4u], at);
}

// augment::erase_noise: the top byte of lowbias32(key ^ px * 0x9e3779b9), wrapping u32.
fn erase_noise(key: u32, px: u32) -> u32 {
    var h = key ^ (px * 0x9e3779b9u);
    h ^= h >> 16u;
    h *= 0x7feb352du;
    h ^= h >> 15u;
    h *= 0x846ca68bu;
    h ^= h >> 16u;
    return h >> 24u;
}

@compute @workgroup_size(WG)
fn gather_batch_warped(@builtin(global_invocation_id) gid: vec3<u32>,
                       @builtin(num_workgroups) nwg: vec3<u32>) {
    let lin = gid.y * (nwg.x * WG) + gid.x;
    if (lin >= p.batch * p.pixels) {
        return;
    }
    let i = lin / p.pixels;
    let px = lin % p.pixels;
    let k = p.offset + i;
    let entry = order[k];
    let r = entry & 0x7fffffu;
    let w = k * WARP_WORDS;
    let a = bitcast<i32>(warp[w]);
    let b = bitcast<i32>(warp[w + 1u]);
    let rect = warp[w + 2u];
    let row = px / p.side;
    let col = px % p.side;
    let ex = rect & 0xffu;
    let ey = (rect >> 8u) & 0xffu;
    let ew = (rect >> 16u) & 0xffu;
    let eh = rect >> 24u;
    var sum: u32;
    if (col >= ex && col < ex + ew && row >= ey && row < ey + eh) {
        sum = erase_noise(warp[w + 3u], px) << 16u;
    } else {
        let dx = bitcast<i32>(entry << 5u) >> 28u;
        let dy = bitcast<i32>(entry << 1u) >> 28u;
        let last = i32(p.side) - 1;
        var c = i32(col);
        if ((entry >> 31u) == 1u) {
            c = last - c;
        }
        let u = 2 * c - last;
        let v = 2 * i32(row) - last;
        // A·u is in 2^-17 pixel (16 fractional bits times half pixels): round to 2^-8.
        let centre = SUBPIXEL / 2 * last;
        let sx = ((a * u - b * v + 256) >> 9u) + centre + SUBPIXEL * dx;
        let sy = ((b * u + a * v + 256) >> 9u) + centre + SUBPIXEL * dy;
        let x0 = sx >> 8u;
        let y0 = sy >> 8u;
        let fx = u32(sx & 255);
        let fy = u32(sy & 255);
        let gx = u32(SUBPIXEL) - fx;
        let gy = u32(SUBPIXEL) - fy;
        sum = gy * (gx * tap(r, y0, x0) + fx * tap(r, y0, x0 + 1))
            + fy * (gx * tap(r, y0 + 1, x0) + fx * tap(r, y0 + 1, x0 + 1));
    }
    x[lin] = f32(sum) * ((1.0 / 255.0) / 65536.0);
    if (px == 0u) {
        labels[i] = byte_at(all_labels[r / 4u], r);
    }
}
