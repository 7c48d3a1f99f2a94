//! The commands around training: `eval`, `predict`, `bench`, `info`, `synth`, `adapters`,
//! `export-images`.

use super::{
    AdaptersArgs, BenchArgs, EvalArgs, ExportArgs, InfoArgs, Outcome, PredictArgs, SynthArgs,
};
use crate::backend::Backend;
use crate::checkpoint::Checkpoint;
use crate::data::{csv, synth, Dataset};
use crate::device::{run_on, Job};
use crate::error::{Error, Result};
use crate::eval::{evaluate_checkpoint_with_tta, report_text, EvalResult, Tta};

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
    let ck = Checkpoint::load(&a.checkpoint)?;
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
    let r = run_on(&a.device, job)?;
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
    if !rep.skipped.is_empty() {
        println!("{} bad rows:", rep.skipped.len());
        for e in rep.skipped.iter().take(20) {
            println!("  {e}");
        }
        if rep.skipped.len() > 20 {
            println!("  … and {} more", rep.skipped.len() - 20);
        }
    }
    Ok(Outcome::Done)
}

/// `fergpu export-images`.
pub(super) fn export_images(a: ExportArgs) -> Result<Outcome> {
    let (ds, _) = csv::load(&a.data, &csv::LoadOptions::default())?;
    let mut rows = match a.split {
        Some(s) => ds.rows_of(&[s]),
        None => (0..ds.len()).collect(),
    };
    if let Some(n) = a.limit {
        rows.truncate(n);
    }
    let n = crate::report::images::export_images(&ds, &rows, &a.out)?;
    eprintln!("wrote {n} images to {}", a.out.display());
    Ok(Outcome::Done)
}

/// `fergpu bench`.
pub(super) fn bench(a: BenchArgs) -> Result<Outcome> {
    struct BenchJob(crate::bench::BenchConfig, bool);
    impl Job for BenchJob {
        type Output = ();
        fn run<B: Backend>(self, be: &B, device: &str) -> Result<()> {
            eprintln!("benchmarking on {device}");
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
    let cfg = crate::bench::BenchConfig {
        models: a.models,
        batch_sizes: a.batch_sizes,
        steps: a.steps.max(1),
        kernel_reps: a.kernel_reps.max(1),
    };
    run_on(&a.device, BenchJob(cfg, a.json))?;
    Ok(Outcome::Done)
}

/// `fergpu predict`.
pub(super) fn predict(a: PredictArgs) -> Result<Outcome> {
    let ck = Checkpoint::load(&a.checkpoint)?;
    let (ds, rows) = crate::predict::load_faces(&a.images);
    let probs = if ds.is_empty() {
        Vec::new()
    } else {
        let job = EvalJob {
            ck: &ck,
            ds: &ds,
            keep_probs: true,
            tta: Tta::None,
        };
        run_on(&a.device, job)?.probs.unwrap_or_default()
    };
    let mut failed = 0;
    for (path, row) in a.images.iter().zip(&rows) {
        match row {
            Ok(r) => {
                let p = &probs[r * 7..(r + 1) * 7];
                println!("{}", crate::predict::prediction_text(path, p, a.json));
            }
            Err(e) => {
                failed += 1;
                eprintln!("error: {e}");
            }
        }
    }
    if failed > 0 {
        return Err(Error::Config(format!(
            "{failed} of {} images could not be read",
            a.images.len()
        )));
    }
    Ok(Outcome::Done)
}
