//! The GEMM-shaped launches and their variants: the register-only kernels of `conv2d.wgsl` and
//! `dense.wgsl`, or the workgroup-memory kernels of `conv2d_tiled.wgsl` and
//! `dense_tiled.wgsl` with a tile configuration ([`TileConfig`], passed to the pipeline as
//! WGSL `override` constants). Which variant a launch uses is a GPU-backend detail chosen per
//! layer shape and batch ([`TuneKey`]): by measurement ([`super::autotune`]), or by
//! [`default_variant`] when autotuning is off.

use crate::shape::{Conv2dShape, DenseShape};
use std::fmt;

/// The tile sizes of one workgroup-memory GEMM pipeline (see `shaders/conv2d_tiled.wgsl`): a
/// workgroup computes a `bm × bn` tile of C, `bk` reduction steps per copy into workgroup
/// memory, each invocation a `tm × tn` register block.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TileConfig {
    /// Rows of the C tile (`BM`).
    pub bm: u32,
    /// Columns of the C tile (`BN`).
    pub bn: u32,
    /// Reduction steps staged per copy (`BK`).
    pub bk: u32,
    /// Rows of an invocation's register block (`TM`, 4 or 8).
    pub tm: u32,
    /// Columns of an invocation's register block (`TN`, 4 or 8).
    pub tn: u32,
}

/// The configurations autotuning tries (and tests run), smallest first: square tiles of 32,
/// 64 and 128 with 4×4 and 8×8 register blocks, and the two 128×64 shapes. All satisfy
/// [`TileConfig::check`]; each needs at most 9 KiB of workgroup memory and 256 invocations (WebGPU's defaults
/// allow 16 KiB and 256).
pub const TILE_CONFIGS: [TileConfig; 6] = [
    TileConfig::new(32, 32, 8, 4, 4),
    TileConfig::new(64, 64, 8, 4, 4),
    TileConfig::new(64, 64, 16, 8, 8),
    TileConfig::new(128, 64, 8, 8, 4),
    TileConfig::new(64, 128, 8, 4, 8),
    TileConfig::new(128, 128, 8, 8, 8),
];

impl TileConfig {
    /// A configuration (unchecked; see [`TileConfig::check`]).
    pub const fn new(bm: u32, bn: u32, bk: u32, tm: u32, tn: u32) -> TileConfig {
        TileConfig { bm, bn, bk, tm, tn }
    }

    /// Invocations per workgroup, `(bm/tm)·(bn/tn)` (the shader's `WG`).
    pub fn workgroup(self) -> u32 {
        (self.bm / self.tm) * (self.bn / self.tn)
    }

    /// Bytes of workgroup memory: both tiles (rows padded by one vec4) and the reduction
    /// index table of `conv2d_tiled.wgsl`.
    pub fn workgroup_bytes(self) -> u32 {
        16 * (self.bk * (self.bm / 4 + 1) + self.bk * (self.bn / 4 + 1) + 2 * self.bk)
    }

    /// The WGSL `override` constants of this configuration, for pipeline creation.
    pub fn constants(self) -> [(&'static str, f64); 5] {
        [
            ("BM", f64::from(self.bm)),
            ("BN", f64::from(self.bn)),
            ("BK", f64::from(self.bk)),
            ("TM", f64::from(self.tm)),
            ("TN", f64::from(self.tn)),
        ]
    }

    /// Whether the tiled shaders can run this configuration: register blocks of 4 or 8 (the
    /// shaders hold at most 8×8 accumulators), tiles made of whole register blocks, a
    /// workgroup that is a multiple of `bm`, `bn` and `bk` (an invocation copies the same
    /// tile column every step) and that copies each tile in whole rounds.
    pub fn check(self) -> std::result::Result<(), String> {
        let TileConfig { bm, bn, bk, tm, tn } = self;
        let fail = |why: &str| Err(format!("tile configuration {self}: {why}"));
        if ![4, 8].contains(&tm) || ![4, 8].contains(&tn) {
            return fail("register blocks must be 4 or 8 wide");
        }
        if bm == 0 || bn == 0 || bk == 0 || !bm.is_multiple_of(tm) || !bn.is_multiple_of(tn) {
            return fail("the tile must be made of whole register blocks");
        }
        let wg = self.workgroup();
        if !(wg.is_multiple_of(bm) && wg.is_multiple_of(bn) && wg.is_multiple_of(bk)) {
            return fail("the workgroup must be a multiple of BM, BN and BK");
        }
        if !((bm * bk).is_multiple_of(wg) && (bk * bn).is_multiple_of(wg)) {
            return fail("each tile must be copied in whole rounds of the workgroup");
        }
        Ok(())
    }

    /// Whether a device with `limits` can run it.
    pub fn fits(self, limits: &wgpu::Limits) -> bool {
        let wg = self.workgroup();
        self.check().is_ok()
            && wg <= limits.max_compute_invocations_per_workgroup
            && wg <= limits.max_compute_workgroup_size_x
            && self.workgroup_bytes() <= limits.max_compute_workgroup_storage_size
    }

    /// Parses the [`fmt::Display`] form `64x64x8/4x4`.
    pub fn parse(s: &str) -> Option<TileConfig> {
        let (tile, block) = s.split_once('/')?;
        let t: Vec<u32> = tile
            .split('x')
            .map(|v| v.parse().ok())
            .collect::<Option<_>>()?;
        let b: Vec<u32> = block
            .split('x')
            .map(|v| v.parse().ok())
            .collect::<Option<_>>()?;
        match (&t[..], &b[..]) {
            (&[bm, bn, bk], &[tm, tn]) => Some(TileConfig::new(bm, bn, bk, tm, tn)),
            _ => None,
        }
    }
}

impl fmt::Display for TileConfig {
    /// `BMxBNxBK/TMxTN`, e.g. `64x64x8/4x4`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}x{}x{}/{}x{}",
            self.bm, self.bn, self.bk, self.tm, self.tn
        )
    }
}

/// How one GEMM-shaped launch runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Variant {
    /// The register-only kernel (`conv2d.wgsl`, `dense.wgsl`): 4×4 blocks, 32×32 tiles, no
    /// workgroup memory or barriers.
    Register,
    /// The workgroup-memory kernel (`conv2d_tiled.wgsl`, `dense_tiled.wgsl`) with these
    /// tiles.
    Tiled(TileConfig),
}

impl Variant {
    /// Every variant: the register kernel, then each of [`TILE_CONFIGS`].
    pub fn all() -> Vec<Variant> {
        std::iter::once(Variant::Register)
            .chain(TILE_CONFIGS.iter().map(|&c| Variant::Tiled(c)))
            .collect()
    }

    /// Parses the [`fmt::Display`] form (`register`, `tiled 64x64x8/4x4`).
    pub fn parse(s: &str) -> Option<Variant> {
        match s.trim() {
            "register" => Some(Variant::Register),
            t => t
                .strip_prefix("tiled ")
                .and_then(TileConfig::parse)
                .filter(|c| c.check().is_ok())
                .map(Variant::Tiled),
        }
    }

    /// Whether a device with `limits` can run it.
    pub fn fits(self, limits: &wgpu::Limits) -> bool {
        match self {
            Variant::Register => true,
            Variant::Tiled(c) => c.fits(limits),
        }
    }
}

impl fmt::Display for Variant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Variant::Register => f.write_str("register"),
            Variant::Tiled(c) => write!(f, "tiled {c}"),
        }
    }
}

/// The GEMM-shaped `Backend` methods, whose launches have variants (their kernels are
/// declared with [`super::kernels::Role::Register`] and `Role::Tiled`, which is where
/// `Gemm::kernel` and `Gemm::name` find them).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Gemm {
    /// `conv2d_forward`.
    Conv2dForward,
    /// `conv2d_backward_input`.
    Conv2dBackwardInput,
    /// `conv2d_backward_weight` (with its split-K reduction).
    Conv2dBackwardWeight,
    /// `dense_forward`.
    DenseForward,
    /// `dense_backward_input`.
    DenseBackwardInput,
    /// `dense_backward_weight`.
    DenseBackwardWeight,
}

impl Gemm {
    /// Every GEMM-shaped method.
    pub const ALL: [Gemm; 6] = [
        Gemm::Conv2dForward,
        Gemm::Conv2dBackwardInput,
        Gemm::Conv2dBackwardWeight,
        Gemm::DenseForward,
        Gemm::DenseBackwardInput,
        Gemm::DenseBackwardWeight,
    ];
}

/// The shape a GEMM-shaped launch is tuned for (batch included).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GemmShape {
    /// A convolution.
    Conv(Conv2dShape),
    /// A dense layer.
    Dense(DenseShape),
}

/// One tuning decision: a method at a shape, its batch bucketed ([`TuneKey::new`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TuneKey {
    /// The method.
    pub gemm: Gemm,
    /// Its shape.
    pub shape: GemmShape,
}

impl TuneKey {
    /// The key of a launch of `gemm` at `shape`, its batch rounded up to a power of two: a
    /// partial last batch, or an evaluation batch, shares the choice made for the bucket
    /// instead of timing every variant again (the variants' ranking hardly moves within a
    /// factor of two of the batch).
    pub fn new(gemm: Gemm, shape: GemmShape) -> TuneKey {
        let shape = match shape {
            GemmShape::Conv(s) => GemmShape::Conv(Conv2dShape {
                batch: batch_bucket(s.batch),
                ..s
            }),
            GemmShape::Dense(s) => GemmShape::Dense(DenseShape {
                batch: batch_bucket(s.batch),
                ..s
            }),
        };
        TuneKey { gemm, shape }
    }

    /// `(M, N, K)` of the product the launch computes: rows and columns of C, and the
    /// reduction length (the weight gradients' column count includes the bias column).
    pub fn dims(&self) -> (usize, usize, usize) {
        match (self.gemm, self.shape) {
            (Gemm::Conv2dForward, GemmShape::Conv(s)) => {
                (s.out_c, s.batch * s.out_h() * s.out_w(), s.patch_len())
            }
            (Gemm::Conv2dBackwardInput, GemmShape::Conv(s)) => {
                (s.in_c, s.batch * s.in_h * s.in_w, s.out_c * s.k * s.k)
            }
            (Gemm::Conv2dBackwardWeight, GemmShape::Conv(s)) => {
                (s.out_c, s.patch_len() + 1, s.batch * s.out_h() * s.out_w())
            }
            (Gemm::DenseForward, GemmShape::Dense(s)) => (s.batch, s.out_f, s.in_f),
            (Gemm::DenseBackwardInput, GemmShape::Dense(s)) => (s.batch, s.in_f, s.out_f),
            (Gemm::DenseBackwardWeight, GemmShape::Dense(s)) => (s.out_f, s.in_f + 1, s.batch),
            (g, shape) => panic!("{g:?} does not take {shape:?}"),
        }
    }
}

impl fmt::Display for TuneKey {
    /// `conv2d_forward 1x48x48->128 k3 p1 b32`, `dense_forward 256->64 b32`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.shape {
            GemmShape::Conv(s) => write!(
                f,
                "{} {}x{}x{}->{} k{} p{} b{}",
                self.gemm.name(),
                s.in_c,
                s.in_h,
                s.in_w,
                s.out_c,
                s.k,
                s.pad,
                s.batch
            ),
            GemmShape::Dense(s) => write!(
                f,
                "{} {}->{} b{}",
                self.gemm.name(),
                s.in_f,
                s.out_f,
                s.batch
            ),
        }
    }
}

/// The batch a tuning decision is made for: `batch` rounded up to a power of two.
pub fn batch_bucket(batch: usize) -> usize {
    batch.max(1).next_power_of_two()
}

/// The tiles [`default_variant`] uses on hardware GPUs: 64×64 with 4×4 blocks, the middle of
/// [`TILE_CONFIGS`].
pub const DEFAULT_TILES: TileConfig = TileConfig::new(64, 64, 8, 4, 4);

/// The variant a launch uses when autotuning is off: on a software adapter (a CPU emulating a
/// GPU, where barriers and workgroup memory cost more than they save) always the register
/// kernel; on hardware the [`DEFAULT_TILES`] kernel when the product fills at least one
/// 64×64 tile and the reduction is long enough to amortize the copies, else the register
/// kernel.
pub fn default_variant(key: &TuneKey, software: bool, limits: &wgpu::Limits) -> Variant {
    let (m, n, k) = key.dims();
    let tiled = Variant::Tiled(DEFAULT_TILES);
    if software || !tiled.fits(limits) || m < 32 || n < 64 || k < 32 {
        Variant::Register
    } else {
        tiled
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_listed_configuration_is_valid_and_round_trips() {
        for c in TILE_CONFIGS {
            c.check().unwrap();
            assert!(c.workgroup() <= 256 && c.workgroup_bytes() <= 9216, "{c}");
            assert_eq!(TileConfig::parse(&c.to_string()), Some(c));
            let v = Variant::Tiled(c);
            assert_eq!(Variant::parse(&v.to_string()), Some(v));
            assert!(
                v.fits(&wgpu::Limits::default()),
                "{c} exceeds WebGPU's defaults"
            );
        }
        assert_eq!(Variant::parse("register"), Some(Variant::Register));
        assert_eq!(Variant::all().len(), TILE_CONFIGS.len() + 1);
    }

    #[test]
    fn invalid_configurations_are_refused_with_the_reason() {
        let e = TileConfig::new(64, 64, 8, 2, 4).check().unwrap_err();
        assert!(e.contains("4 or 8"), "{e}");
        // (32/8)·(32/8) = 16 invocations cannot copy a 32-wide column each.
        let e = TileConfig::new(32, 32, 8, 8, 8).check().unwrap_err();
        assert!(e.contains("multiple"), "{e}");
        assert_eq!(Variant::parse("tiled 32x32x8/8x8"), None);
        assert_eq!(Variant::parse("tiled 64x64"), None);
        assert_eq!(Variant::parse("fast"), None);
    }

    #[test]
    fn the_default_is_the_register_kernel_on_software_adapters_and_small_products() {
        let limits = wgpu::Limits::default();
        let conv = |batch, in_c, side, out_c| Conv2dShape {
            batch,
            in_c,
            in_h: side,
            in_w: side,
            out_c,
            k: 3,
            pad: 0,
        };
        let big = TuneKey {
            gemm: Gemm::Conv2dForward,
            shape: GemmShape::Conv(conv(32, 128, 23, 128)),
        };
        assert_eq!(default_variant(&big, true, &limits), Variant::Register);
        assert_eq!(
            default_variant(&big, false, &limits),
            Variant::Tiled(DEFAULT_TILES)
        );
        let first = TuneKey {
            gemm: Gemm::Conv2dForward,
            shape: GemmShape::Conv(conv(32, 1, 48, 128)),
        };
        assert_eq!(default_variant(&first, false, &limits), Variant::Register);
        assert_eq!(big.to_string(), "conv2d_forward 128x23x23->128 k3 p0 b32");
        // A partial last batch and the full one share a key; another bucket does not.
        let partial = TuneKey::new(Gemm::Conv2dForward, GemmShape::Conv(conv(17, 128, 23, 128)));
        assert_eq!(
            partial,
            TuneKey::new(Gemm::Conv2dForward, GemmShape::Conv(conv(32, 128, 23, 128)))
        );
        assert_eq!(partial, big);
        let eval = TuneKey::new(Gemm::Conv2dForward, GemmShape::Conv(conv(33, 128, 23, 128)));
        assert_eq!(eval.to_string(), "conv2d_forward 128x23x23->128 k3 p0 b64");
        assert_eq!(big.dims(), (128, 32 * 21 * 21, 128 * 9));
    }
}
