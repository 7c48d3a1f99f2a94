//! `fergpu profile`: where one training step's time goes on a GPU adapter.
//!
//! A [`Trainer`] runs the model on generated faces, exactly as `fergpu train` would:
//! 1. one warm-up step (pipelines built, kernels autotuned), then the device is waited for;
//! 2. `steps` steps timed end to end on the host (steps in flight as in training), with the
//!    host's time per step spent encoding, submitting and waiting for the device to catch up;
//! 3. `steps + 1` more steps in a timing session ([`Timer`]): with GPU timestamps every
//!    dispatch is timed on the device while steps still run back to back (so the idle gap
//!    between steps is measured too); without them every dispatch is submitted alone and
//!    waited for, and the figures are upper bounds (labelled so).
//!
//! One row per dispatch of a step (the mean over the timed steps): kernel, layer (the plan
//! op it ran for), shape, variant, µs, GFLOP/s and GB/s of its ideal traffic, share of the
//! step's GPU time.
//!
//! On the CPU backend ([`run_cpu`]) the same phases run, phase 3 with the backend recording
//! each op (timed on the host around its call; ops run one after another), and the rows are
//! the same: the op, its layer and shape, the algorithm in the variant column (`winograd
//! F(4x4,3x3)`, `im2col+gemm`, `gemm`, `-`), and GFLOP/s of the direct algorithm's
//! operations, so algorithms compare on one scale.

use crate::backend::cpu::{CpuBackend, OpRecord};
use crate::backend::gpu::autotune::Source;
use crate::backend::gpu::kernels::Kernel;
use crate::backend::gpu::timing::{TimedDispatch, Timer};
use crate::backend::gpu::GpuBackend;
use crate::backend::{Activation, Backend};
use crate::data::synth;
use crate::error::{Error, Result};
use crate::model::{ModelSpec, Plan};
use crate::train::{Trainer, TrainerOptions};
use std::time::{Duration, Instant};

/// What to profile.
#[derive(Clone, Debug)]
pub struct ProfileConfig {
    /// A preset name or a model file.
    pub model: String,
    /// Images per step.
    pub batch: usize,
    /// Steps timed in each phase (at least 1).
    pub steps: usize,
    /// How dispatches are timed; `None`: timestamps where the adapter has them.
    pub timer: Option<Timer>,
}

/// One dispatch of the step.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct ProfileRow {
    /// Position in the step, from 1.
    pub index: usize,
    /// The kernel's entry point.
    pub kernel: String,
    /// The plan op it ran for (`3 conv 64×8×8`), or `-` (data, loss, optimizer).
    pub layer: String,
    /// Its shape.
    pub shape: String,
    /// `register`, `tiled BMxBNxBK/TMxTN`, or `-` for kernels without variants.
    pub variant: String,
    /// Mean µs per step.
    pub micros: f64,
    /// Floating-point operations per second, in billions (GEMM-shaped kernels).
    pub gflops: Option<f64>,
    /// Bytes of its ideal traffic per second, in billions.
    pub gbs: f64,
    /// Share of the step's summed dispatch time, in percent.
    pub share: f64,
}

/// The host's time per step.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize)]
pub struct HostRow {
    /// Recording the step's commands, µs.
    pub encode_us: f64,
    /// Writing uniforms and submitting, µs.
    pub submit_us: f64,
    /// Waiting for the device to catch up (it was the bottleneck), µs.
    pub throttled_us: f64,
}

/// A whole profile.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Profile {
    /// The adapter.
    pub device: String,
    /// The model's name.
    pub model: String,
    /// Images per step.
    pub batch: usize,
    /// Steps timed per phase.
    pub steps: usize,
    /// How dispatches were timed.
    pub timer: Timer,
    /// What the dispatch times mean.
    pub timer_note: String,
    /// One row per dispatch of a step, in order.
    pub rows: Vec<ProfileRow>,
    /// The dispatches' times summed, µs per step.
    pub gpu_busy_us: f64,
    /// First dispatch start to last dispatch end, µs per step (timestamps only: gaps
    /// between dispatches included).
    pub gpu_span_us: Option<f64>,
    /// Device idle from one step's last dispatch to the next step's first, µs (timestamps
    /// only).
    pub idle_gap_us: Option<f64>,
    /// A whole step timed end to end on the host, steps in flight, µs.
    pub step_us: f64,
    /// Training images per second at that pace.
    pub images_per_s: f64,
    /// The host's time per step.
    pub host: HostRow,
    /// Whether kernels were autotuned, and notes.
    pub autotune: String,
    /// Whether the rows are the CPU backend's ops (host-timed) rather than GPU dispatches.
    pub on_cpu: bool,
}

/// The model `cfg` names, its plan at `cfg.batch` (checked against `be`'s memory) and a
/// trainer on `steps + 1` batches of generated faces: phases 1 and 2 take them all, phase 3
/// as many again (its own epoch).
fn trainer<'a, B: Backend>(
    be: &'a B,
    cfg: &ProfileConfig,
) -> Result<(ModelSpec, Plan, Trainer<'a, B>)> {
    let steps = cfg.steps.max(1);
    let spec = ModelSpec::resolve(&cfg.model, Activation::Relu, Activation::Selu)?;
    let plan = Plan::new(&spec, cfg.batch)?;
    plan.check_batch(cfg.batch, &be.memory_limits(), &be.name())?;
    let params = Plan::new(&spec, 1)?.init_params(1);
    let ds = synth::generate(cfg.batch * (steps + 1), 7);
    let opts = TrainerOptions {
        batch: cfg.batch,
        ..crate::settings::Settings::default().trainer_options()
    };
    let tr = Trainer::new(be, spec.clone(), &params, &ds, &opts)?;
    Ok((spec, plan, tr))
}

/// Profiles training `cfg.model` at `cfg.batch` on `be`.
pub fn run(be: &GpuBackend, cfg: &ProfileConfig) -> Result<Profile> {
    let timer = match cfg.timer {
        Some(Timer::Timestamps) if !be.has_timestamps() => {
            return Err(Error::Config(format!(
                "--timer timestamps: {} has no timestamp queries; use --timer wall",
                be.adapter().name
            )))
        }
        Some(t) => t,
        None if be.has_timestamps() => Timer::Timestamps,
        None => {
            eprintln!(
                "fergpu: {} has no timestamp queries: each dispatch is submitted alone and \
                 timed on the host (upper bounds)",
                be.adapter().name
            );
            Timer::Wall
        }
    };
    let steps = cfg.steps.max(1);
    let (spec, plan, mut tr) = trainer(be, cfg)?;
    let lr = 1e-4;

    // Phases 1 and 2: a warm-up step, then `steps` steps timed end to end.
    let mut done = 0;
    let mut t0 = Instant::now();
    let mut host0 = be.host_times();
    let mut host1 = host0;
    tr.run_epoch(lr, &mut |_| {
        done += 1;
        if done == 1 {
            be.sync();
            t0 = Instant::now();
            host0 = be.host_times();
        }
        if done == steps + 1 {
            host1 = be.host_times();
        }
        true
    });
    let step_secs = t0.elapsed().as_secs_f64() / steps as f64;
    let per_step = |a: Duration, b: Duration| (a - b).as_secs_f64() * 1e6 / steps as f64;
    let host = HostRow {
        encode_us: per_step(host1.encode, host0.encode),
        submit_us: per_step(host1.submit, host0.submit),
        throttled_us: per_step(host1.throttled, host0.throttled),
    };

    // Phase 3: every dispatch timed.
    be.start_timing(timer);
    tr.run_epoch(lr, &mut |_| true);
    let records = be.finish_timing();
    be.check()?;
    let steps_timed = split_steps(records);

    let (tuned, notes) = be.autotune_state();
    let choices = be.choices();
    let count = |s: Source| choices.iter().filter(|(_, c)| c.source == s).count();
    let forced = choices.iter().find(|(_, c)| c.source == Source::Forced);
    let mut autotune = if let Some((_, c)) = forced {
        format!(
            "forced: every GEMM-shaped launch runs {} (--variant)",
            c.variant
        )
    } else if tuned {
        format!(
            "on: {} launch shapes, {} measured now, {} from the cache",
            choices.len(),
            count(Source::Measured),
            count(Source::Cached)
        )
    } else {
        "off: fixed choices (--autotune on to measure)".to_string()
    };
    for n in notes {
        autotune.push_str(&format!("; {n}"));
    }
    let mut p = summarize(&plan, &steps_timed, timer);
    p.device = be.name();
    p.model = spec.name;
    p.batch = cfg.batch;
    p.steps = steps;
    p.step_us = step_secs * 1e6;
    p.images_per_s = cfg.batch as f64 / step_secs;
    p.host = host;
    p.autotune = autotune;
    Ok(p)
}

/// The timed dispatches cut into steps: each step starts with its batch's gather.
fn split_steps(records: Vec<TimedDispatch>) -> Vec<Vec<TimedDispatch>> {
    let mut steps: Vec<Vec<TimedDispatch>> = Vec::new();
    for r in records {
        let gather = matches!(r.kernel, Kernel::GatherBatch | Kernel::GatherBatchWarped);
        if gather || steps.is_empty() {
            steps.push(Vec::new());
        }
        steps.last_mut().expect("pushed").push(r);
    }
    // Every step of an epoch has the same dispatches except a smaller last batch's shapes;
    // keep the steps shaped like the first.
    let first: Vec<(Kernel, Vec<u8>)> = steps
        .first()
        .map(|s| s.iter().map(|r| (r.kernel, r.uniform.clone())).collect())
        .unwrap_or_default();
    steps.retain(|s| {
        s.len() == first.len() && s.iter().zip(&first).all(|(r, (k, _))| r.kernel == *k)
    });
    steps
}

/// The rows and device-side totals of the timed `steps` (a profile with the host-side
/// fields left empty).
fn summarize(plan: &Plan, steps: &[Vec<TimedDispatch>], timer: Timer) -> Profile {
    let n = steps.len().max(1) as f64;
    let first = steps.first().cloned().unwrap_or_default();
    let mean_us: Vec<f64> = (0..first.len())
        .map(|j| steps.iter().map(|s| s[j].micros()).sum::<f64>() / n)
        .collect();
    let busy: f64 = mean_us.iter().sum();
    let rows = first
        .iter()
        .zip(&mean_us)
        .enumerate()
        .map(|(i, (r, &us))| {
            let work = r.work();
            let secs = us * 1e-6;
            ProfileRow {
                index: i + 1,
                kernel: r.kernel.spec().entry.to_string(),
                layer: match r.op.and_then(|o| plan.ops.get(o).map(|op| (o, op))) {
                    Some((o, op)) => format!("{o} {}", op.describe()),
                    None => "-".to_string(),
                },
                shape: work.shape,
                variant: match (r.tiles, Kernel::has_variants(r.kernel)) {
                    (Some(c), _) => format!("tiled {c}"),
                    (None, true) => "register".to_string(),
                    (None, false) => "-".to_string(),
                },
                micros: us,
                gflops: work.flop.map(|f| f / secs / 1e9),
                gbs: work.bytes / secs / 1e9,
                share: 100.0 * us / busy,
            }
        })
        .collect();
    let timestamps = timer == Timer::Timestamps;
    let span = |s: &Vec<TimedDispatch>| {
        let start = s.iter().map(|r| r.start_ns).fold(f64::INFINITY, f64::min);
        let end = s.iter().map(|r| r.end_ns).fold(f64::NEG_INFINITY, f64::max);
        (start, end)
    };
    let gpu_span_us = timestamps.then(|| {
        steps
            .iter()
            .map(|s| (span(s).1 - span(s).0) / 1e3)
            .sum::<f64>()
            / n
    });
    let gaps: Vec<f64> = steps
        .windows(2)
        .map(|w| (span(&w[1]).0 - span(&w[0]).1) / 1e3)
        .collect();
    let idle_gap_us =
        (timestamps && !gaps.is_empty()).then(|| gaps.iter().sum::<f64>() / gaps.len() as f64);
    Profile {
        device: String::new(),
        model: String::new(),
        batch: 0,
        steps: steps.len(),
        timer,
        timer_note: timer.describe().to_string(),
        rows,
        gpu_busy_us: busy,
        gpu_span_us,
        idle_gap_us,
        step_us: 0.0,
        images_per_s: 0.0,
        host: HostRow::default(),
        autotune: String::new(),
        on_cpu: false,
    }
}

/// The profile as a table.
pub fn table(p: &Profile) -> String {
    let mut s = format!(
        "profile: {} at batch {} on {}\ntimer: {} (mean of {} steps)\nautotune: {}\n",
        p.model, p.batch, p.device, p.timer_note, p.steps, p.autotune
    );
    s.push_str(&format!(
        "{:>3}  {:<30} {:<22} {:<30} {:<22} {:>10} {:>9} {:>8} {:>6}\n",
        "#", "kernel", "layer", "shape", "variant", "µs", "GFLOP/s", "GB/s", "share"
    ));
    for r in &p.rows {
        let gf = r.gflops.map(|g| format!("{g:.1}")).unwrap_or_default();
        s.push_str(&format!(
            "{:>3}  {:<30} {:<22} {:<30} {:<22} {:>10.1} {:>9} {:>8.2} {:>5.1}%\n",
            r.index, r.kernel, r.layer, r.shape, r.variant, r.micros, gf, r.gbs, r.share
        ));
    }
    let (device, rows) = if p.on_cpu {
        ("CPU", "ops")
    } else {
        ("GPU", "dispatches")
    };
    s.push_str(&format!(
        "{device} per step: {:.1} µs in {rows}",
        p.gpu_busy_us
    ));
    if let Some(span) = p.gpu_span_us {
        s.push_str(&format!(", {span:.1} µs from first start to last end"));
    }
    if let Some(gap) = p.idle_gap_us {
        s.push_str(&format!(", idle {gap:.1} µs between steps"));
    }
    s.push_str(&format!(
        "\nstep end to end: {:.1} µs ({:.1} images/s)\n",
        p.step_us, p.images_per_s
    ));
    // A GPU's queue: what the host spent recording and submitting (none on the CPU).
    if !p.on_cpu {
        s.push_str(&format!(
            "host per step: encode {:.1} µs, submit {:.1} µs, waiting for the device {:.1} µs\n",
            p.host.encode_us, p.host.submit_us, p.host.throttled_us
        ));
    }
    s
}

/// Profiles training `cfg.model` at `cfg.batch` on the CPU backend `be`: the phases of
/// [`run`], phase 3 with every op recorded ([`CpuBackend::start_recording`]). The
/// dispatch-timing fields describe the ops (`gpu_busy_us` is their time summed); the host
/// and idle fields, which describe a GPU's queue, are empty.
pub fn run_cpu(be: &CpuBackend, cfg: &ProfileConfig) -> Result<Profile> {
    let steps = cfg.steps.max(1);
    let (spec, plan, mut tr) = trainer(be, cfg)?;
    let lr = 1e-4;
    let mut done = 0;
    let mut t0 = Instant::now();
    tr.run_epoch(lr, &mut |_| {
        done += 1;
        if done == 1 {
            t0 = Instant::now();
        }
        true
    });
    let step_secs = t0.elapsed().as_secs_f64() / steps as f64;
    be.start_recording();
    tr.run_epoch(lr, &mut |_| true);
    let steps_rec = split_cpu_steps(be.finish_recording());
    let rows = cpu_rows(&plan, &steps_rec);
    let busy = rows.iter().map(|r| r.micros).sum();
    Ok(Profile {
        device: be.name(),
        model: spec.name,
        batch: cfg.batch,
        steps: steps_rec.len(),
        timer: Timer::Wall,
        timer_note: "host wall clock around each op of the CPU backend (ops run one after \
                     another: their times add up to the step)"
            .to_string(),
        rows,
        gpu_busy_us: busy,
        gpu_span_us: None,
        idle_gap_us: None,
        step_us: step_secs * 1e6,
        images_per_s: cfg.batch as f64 / step_secs,
        host: HostRow::default(),
        autotune: format!("none on the CPU; products on {}", be.isa().name()),
        on_cpu: true,
    })
}

/// The recorded ops cut into steps (each starts with its batch's gather), keeping the steps
/// shaped like the first (a smaller last batch differs).
fn split_cpu_steps(records: Vec<OpRecord>) -> Vec<Vec<OpRecord>> {
    let mut steps: Vec<Vec<OpRecord>> = Vec::new();
    for r in records {
        if r.op.starts_with("gather_batch") || steps.is_empty() {
            steps.push(Vec::new());
        }
        steps.last_mut().expect("pushed").push(r);
    }
    let first: Vec<(&str, String)> = steps
        .first()
        .map(|s| s.iter().map(|r| (r.op, r.shape.clone())).collect())
        .unwrap_or_default();
    steps.retain(|s| {
        s.len() == first.len()
            && s.iter()
                .zip(&first)
                .all(|(r, (op, sh))| r.op == *op && r.shape == *sh)
    });
    steps
}

/// One row per op of a step, the mean over `steps`.
fn cpu_rows(plan: &Plan, steps: &[Vec<OpRecord>]) -> Vec<ProfileRow> {
    let n = steps.len().max(1) as f64;
    let first = steps.first().cloned().unwrap_or_default();
    let mean_us: Vec<f64> = (0..first.len())
        .map(|j| steps.iter().map(|s| s[j].nanos as f64 / 1e3).sum::<f64>() / n)
        .collect();
    let busy: f64 = mean_us.iter().sum();
    first
        .iter()
        .zip(&mean_us)
        .enumerate()
        .map(|(i, (r, &us))| {
            let secs = us * 1e-6;
            ProfileRow {
                index: i + 1,
                kernel: r.op.to_string(),
                layer: match r.layer.and_then(|o| plan.ops.get(o).map(|op| (o, op))) {
                    Some((o, op)) => format!("{o} {}", op.describe()),
                    None => "-".to_string(),
                },
                shape: r.shape.clone(),
                variant: r.algorithm.clone(),
                micros: us,
                gflops: r.flop.map(|f| f / secs / 1e9),
                gbs: r.bytes / secs / 1e9,
                share: 100.0 * us / busy,
            }
        })
        .collect()
}
