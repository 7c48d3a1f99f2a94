//! The commands around training: `eval`, `predict`, `bench`, `profile`, `info`, `synth`,
//! `adapters`, `export-images`.

use super::{
    AdaptersArgs, BenchArgs, EvalArgs, ExportArgs, ExportModelArgs, InfoArgs, Outcome, PredictArgs,
    ProfileArgs, SynthArgs,
};
use crate::backend::{Activation, Backend};
use crate::checkpoint::{Checkpoint, Storage};
use crate::data::{csv, synth, Dataset};
use crate::device::{run_on, Job};
use crate::error::{Error, Result};
use crate::eval::{blame_checkpoint, evaluate_checkpoint_with_tta, report_text, EvalResult, Tta};
use crate::model::{ModelSpec, Plan};
use crate::settings::Settings;
use crate::shipped::ModelSource;
use std::path::Path;

/// A checkpoint evaluated over a data set on whichever backend is chosen.
struct EvalJob<'a> {
    ck: &'a Checkpoint,
    ds: &'a Dataset,
    keep_probs: bool,
    tta: Tta,
}

impl Job for EvalJob<'_> {
    type Output = EvalResult;
    fn run<B: Backend>(self, be: &B, device: &str) -> Result<EvalResult> {
        eprintln!("evaluating on {device}");
        evaluate_checkpoint_with_tta(be, self.ck, self.ds, self.keep_probs, self.tta)
    }
}

/// `fergpu eval`.
pub(super) fn eval(a: EvalArgs) -> Result<Outcome> {
    let model = ModelSource::from_flag(a.checkpoint.clone());
    if let Some(out) = &a.predictions {
        let mut read = model.inputs();
        read.extend(a.data.data.as_deref().map(|d| ("the --data file", d)));
        crate::files::check_output(out, "--predictions", &read)?;
    }
    let mut ck = model.load()?;
    if a.average {
        ck = averaged(ck, model.path())?;
    }
    let mut data = a.data.clone();
    data.limit = 0;
    let all = data.load_all()?;
    let mut rows = all.rows_of(&[a.split]);
    if a.data.limit > 0 {
        rows.truncate(a.data.limit);
    }
    let ds = all.subset(&rows);
    if ds.is_empty() {
        return Err(Error::Config(format!(
            "the data has no {} rows to evaluate; choose another with --split",
            a.split.name()
        )));
    }
    let job = EvalJob {
        ck: &ck,
        ds: &ds,
        keep_probs: a.predictions.is_some(),
        tta: a.tta,
    };
    let r = run_on(&a.device, job).map_err(|e| blame_checkpoint(model.path(), e))?;
    let what = format!("{} ({})", a.split.name(), ck.spec.name);
    let augmented = match a.tta {
        Tta::None => None,
        t => Some(r.with_tta(t).expect("the evaluator reports its own mode")),
    };
    // The file first: it is the costly result, and stdout may be a pipe that closes early.
    if let (Some(path), Some(probs)) = (&a.predictions, &augmented.unwrap_or(&r).probs) {
        crate::eval::write_predictions(path, &ds.labels, probs)?;
        let with = augmented.map_or(String::new(), |_| format!(" (TTA {})", a.tta.name()));
        eprintln!("wrote predictions{with} to {}", path.display());
    }
    match augmented {
        None => println!("{}", report_text(&r, &what)),
        Some(t) => {
            let views = a.tta.views().len();
            println!("{}", report_text(&r, &format!("{what}, no TTA")));
            let label = format!("{what}, TTA {} ({views} views averaged)", a.tta.name());
            println!("{}", report_text(t, &label));
        }
    }
    Ok(Outcome::Done)
}

/// `fergpu synth`.
pub(super) fn synth(a: SynthArgs) -> Result<Outcome> {
    if a.rows == 0 || a.rows > synth::MAX_ROWS {
        return Err(Error::Config(format!(
            "--rows {}: rows must be between 1 and {}",
            a.rows,
            synth::MAX_ROWS
        )));
    }
    let ds = synth::generate(a.rows, a.seed);
    csv::write(&a.out, &ds)?;
    eprintln!("wrote {} generated faces to {}", ds.len(), a.out.display());
    Ok(Outcome::Done)
}

/// `fergpu adapters`.
pub(super) fn adapters(a: AdaptersArgs) -> Result<Outcome> {
    use crate::backend::gpu::adapter::{format_adapters, list_adapters, GpuApi};
    let api = a.gpu_backend.as_deref().map(GpuApi::parse).transpose()?;
    print!("{}", format_adapters(&list_adapters(api)));
    Ok(Outcome::Done)
}

/// `fergpu info`.
pub(super) fn info(a: InfoArgs) -> Result<Outcome> {
    let (ds, rep) = csv::load(
        &a.data,
        &csv::LoadOptions {
            skip_bad_rows: true,
        },
    )?;
    println!(
        "{}: {} rows read in {:.1} s",
        a.data.display(),
        rep.rows,
        rep.seconds
    );
    println!("{}", crate::report::images::info_text(&ds));
    if rep.bad_rows > 0 {
        println!("{} bad rows:", rep.bad_rows);
        for e in rep.skipped.iter().take(20) {
            println!("  {}", crate::report::printable(&e.to_string()));
        }
        if rep.bad_rows > 20 {
            println!("  … and {} more", rep.bad_rows - 20);
        }
    }
    Ok(Outcome::Done)
}

/// `fergpu export-images`.
pub(super) fn export_images(a: ExportArgs) -> Result<Outcome> {
    // Checked before the data is read: a typo fails at once.
    let (augment, warp) = (a.augment.augment, a.augment.warp());
    let augmented = augment.is_active() || warp.is_active();
    if augmented {
        let checked = Settings {
            augment: a.augment.clone(),
            ..Settings::default()
        };
        checked.validate()?;
        if a.copies == 0 || a.copies > MAX_COPIES {
            return Err(Error::Config(format!(
                "--copies {}: write between 1 and {MAX_COPIES} augmented copies of each image",
                a.copies
            )));
        }
    }
    let (ds, _) = csv::load(&a.data, &csv::LoadOptions::default())?;
    let mut rows = match a.split {
        Some(s) => ds.rows_of(&[s]),
        None => (0..ds.len()).collect(),
    };
    if let Some(n) = a.limit {
        rows.truncate(n);
    }
    let n = if augmented {
        let draw = crate::report::images::AugmentedCopies {
            augment,
            warp,
            seed: a.seed,
            copies: a.copies,
        };
        crate::report::images::export_augmented_images(&ds, &rows, &a.out, &draw)?
    } else {
        crate::report::images::export_images(&ds, &rows, &a.out)?
    };
    eprintln!("wrote {n} images to {}", a.out.display());
    Ok(Outcome::Done)
}

/// The most augmented copies `export-images` writes of each image.
const MAX_COPIES: usize = 100;

/// `fergpu bench`.
pub(super) fn bench(a: BenchArgs) -> Result<Outcome> {
    struct BenchJob(crate::bench::BenchConfig, bool);
    impl Job for BenchJob {
        type Output = ();
        fn run<B: Backend>(self, be: &B, device: &str) -> Result<()> {
            eprintln!("benchmarking on {device}");
            // Every model at every batch size fits the device, before anything is allocated.
            for model in &self.0.models {
                let spec = ModelSpec::resolve(model, Activation::Relu, Activation::Selu)?;
                let plan = Plan::new(&spec, 1)?;
                for &b in &self.0.batch_sizes {
                    plan.check_batch(b, &be.memory_limits(), device)?;
                }
            }
            let rows = crate::bench::run(be, &self.0)?;
            if self.1 {
                let json = serde_json::json!({ "device": device, "rows": rows });
                println!("{json:#}");
            } else {
                print!("{}", crate::bench::table(device, &rows));
            }
            Ok(())
        }
    }
    check_bench(&a)?;
    let cfg = crate::bench::BenchConfig {
        models: a.models,
        batch_sizes: a.batch_sizes,
        steps: a.steps,
        kernel_reps: a.kernel_reps,
    };
    run_on(&a.device, BenchJob(cfg, a.json))?;
    Ok(Outcome::Done)
}

/// The most timed steps and kernel repetitions `fergpu bench` takes.
const MAX_BENCH_REPS: usize = 10_000;

/// Checks `fergpu bench`'s numbers; the message names the flag and the range.
fn check_bench(a: &BenchArgs) -> Result<()> {
    let bad = |flag: &str, got: usize, allowed: String| {
        Err(Error::Config(format!("{flag} {got}: must be {allowed}")))
    };
    if a.models.is_empty() || a.batch_sizes.is_empty() {
        return Err(Error::Config(
            "--models and --batch-sizes each need at least one value".into(),
        ));
    }
    for (flag, n) in [("--steps", a.steps), ("--kernel-reps", a.kernel_reps)] {
        if n == 0 || n > MAX_BENCH_REPS {
            return bad(flag, n, format!("between 1 and {MAX_BENCH_REPS}"));
        }
    }
    for &b in &a.batch_sizes {
        if b == 0 || b > 65_536 {
            return bad("--batch-sizes", b, "between 1 and 65536".into());
        }
        // Each measurement generates (steps + 2 warm-up) batches of faces.
        let faces = b.saturating_mul(a.steps + 2);
        if faces > synth::MAX_ROWS {
            return Err(Error::Config(format!(
                "--batch-sizes {b} with --steps {} would generate {faces} faces, over the {} \
                 that fit; use fewer steps or smaller batches",
                a.steps,
                synth::MAX_ROWS
            )));
        }
    }
    Ok(())
}

/// `ck` with its weights replaced by the moving average its run kept (`--average`).
fn averaged(ck: Checkpoint, path: &Path) -> Result<Checkpoint> {
    let Some(avg) = ck.optimizer.as_ref().and_then(|o| o.average.clone()) else {
        return Err(Error::Config(format!(
            "--average: {} holds no average of the weights (a run's checkpoint-last keeps one \
             when it trained with --ema)",
            path.display()
        )));
    };
    Ok(Checkpoint {
        params: avg.params,
        running: avg.running,
        ..ck
    })
}

/// `fergpu predict`.
pub(super) fn predict(a: PredictArgs) -> Result<Outcome> {
    let cfg = crate::predict::PredictConfig {
        model: ModelSource::from_flag(a.checkpoint),
        inputs: a.images,
        json: a.json,
        csv: a.csv,
        annotate: a.annotate,
        whole_image: a.whole_image,
        device: a.device,
    };
    let summary = crate::predict::run(&cfg)?;
    if summary.failed > 0 {
        return Err(Error::Config(format!(
            "{} of the inputs could not be read or written (named above)",
            summary.failed
        )));
    }
    Ok(Outcome::Done)
}

/// `fergpu profile --adapter cpu`: the CPU backend's ops, host-timed; the GPU-only flags
/// are errors.
fn profile_cpu(a: &ProfileArgs, cfg: &crate::profile::ProfileConfig) -> Result<Outcome> {
    let gpu_only = [
        ("--timer", a.timer.is_some()),
        ("--variant", a.variant.is_some()),
        ("--bounds-checks", a.bounds_checks),
        ("--skip-workgroup-zeroing", a.skip_workgroup_zeroing),
    ];
    if let Some((flag, _)) = gpu_only.iter().find(|(_, given)| *given) {
        return Err(Error::Config(format!(
            "{flag}: a GPU profile's flag; the CPU backend times each op on the host"
        )));
    }
    a.device.validate()?;
    let cpu = crate::backend::cpu::CpuBackend::try_new(a.device.threads)?;
    eprintln!("fergpu: profiling on {}", cpu.name());
    let p = crate::profile::run_cpu(&cpu, cfg)?;
    if a.json {
        println!("{:#}", serde_json::json!(p));
    } else {
        print!("{}", crate::profile::table(&p));
    }
    Ok(Outcome::Done)
}

/// `fergpu export`.
pub(super) fn export(a: ExportModelArgs) -> Result<Outcome> {
    let model = ModelSource::from_flag(a.checkpoint);
    if let Some(out) = &a.onnx {
        let done = crate::export::export_onnx(&model, out, a.softmax)?;
        eprintln!("{done}");
    }
    if let Some(out) = &a.weights {
        let Some(checkpoint) = model.file() else {
            return Err(Error::Config(
                "--weights exports a run's checkpoint with its provenance: give --checkpoint \
                 (the shipped model is already such a file, assets/model/)"
                    .into(),
            ));
        };
        let storage = if a.f16 { Storage::F16 } else { Storage::F32 };
        let done = crate::export::export_weights(checkpoint, out, storage)?;
        eprintln!("{done}");
    }
    Ok(Outcome::Done)
}

/// `fergpu profile`.
pub(super) fn profile(a: ProfileArgs) -> Result<Outcome> {
    if a.batch_size == 0 || a.batch_size > 65_536 {
        return Err(Error::Config(format!(
            "--batch-size {}: must be between 1 and 65536",
            a.batch_size
        )));
    }
    if a.steps == 0 || a.steps > MAX_BENCH_REPS {
        return Err(Error::Config(format!(
            "--steps {}: must be between 1 and {MAX_BENCH_REPS}",
            a.steps
        )));
    }
    // The profile generates (steps + 1) batches of faces.
    let faces = a.batch_size.saturating_mul(a.steps + 1);
    if faces > synth::MAX_ROWS {
        return Err(Error::Config(format!(
            "--batch-size {} with --steps {} would generate {faces} faces, over the {} that \
             fit; use fewer steps or a smaller batch",
            a.batch_size,
            a.steps,
            synth::MAX_ROWS
        )));
    }
    let cfg = crate::profile::ProfileConfig {
        model: a.model.clone(),
        batch: a.batch_size,
        steps: a.steps,
        timer: a.timer,
    };
    if crate::backend::gpu::adapter::AdapterRequest::parse(&a.device.adapter)
        == crate::backend::gpu::adapter::AdapterRequest::Cpu
    {
        return profile_cpu(&a, &cfg);
    }
    let build = crate::backend::gpu::kernels::BuildOptions {
        bounds_checks: a.bounds_checks,
        skip_workgroup_zeroing: a.skip_workgroup_zeroing,
    };
    use crate::backend::gpu::tiles::{TileConfig, Variant, TILE_CONFIGS};
    let variant = match a.variant.as_deref().map(|v| (v, Variant::parse(v))) {
        None => None,
        Some((_, Some(v))) => Some(v),
        Some((v, None)) => {
            let known: Vec<String> = TILE_CONFIGS.iter().map(TileConfig::to_string).collect();
            return Err(Error::Config(format!(
                "--variant '{v}': expected `register` or `tiled BMxBNxBK/TMxTN` with register \
                 blocks of 4 or 8 and a valid tile (e.g. tiled {})",
                known.join(", tiled ")
            )));
        }
    };
    let mut gpu = crate::device::open_gpu(&a.device, "fergpu profile", build)?;
    if let Some(v) = variant {
        if !v.fits(gpu.limits()) {
            return Err(Error::Config(format!(
                "--variant {v}: exceeds what {} allows per workgroup",
                gpu.adapter().name
            )));
        }
        gpu.set_variant(Some(v));
    }
    let p = crate::profile::run(&gpu, &cfg)?;
    gpu.check()?;
    if a.json {
        println!("{:#}", serde_json::json!(p));
    } else {
        print!("{}", crate::profile::table(&p));
    }
    Ok(Outcome::Done)
}
