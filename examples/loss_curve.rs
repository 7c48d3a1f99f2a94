//! Real-data parity check (a measurement, not a test): from the same initial weights, trains
//! on the first batches of FER2013's Training rows on a GPU adapter and on the CPU reference,
//! and prints both loss curves and their largest relative difference.
//!
//! `cargo run --release --example loss_curve -- PATH.csv[.gz] [--model mlp|cnn|vgg|compact] [--steps N]
//! [--batch B] [--every K] [--adapter software] [--seed S]`
//!
//! Each printed loss is the mean class-unweighted cross-entropy over the last `every` steps,
//! read from the device's running statistics once per `every` steps (not per batch). Both
//! backends see the same batches: a seeded shuffle of the Training rows, gathered on the
//! device from the data set uploaded once, exactly as `fergpu train` does.

use anyhow::{bail, Context as _};
use fergpu::backend::cpu::CpuBackend;
use fergpu::backend::gpu::adapter::AdapterRequest;
use fergpu::backend::gpu::GpuBackend;
use fergpu::backend::{stats, Activation, Backend};
use fergpu::data::csv::{load, LoadOptions};
use fergpu::data::{Dataset, Usage};
use fergpu::model::network::{Mode, Network, Optimizer};
use fergpu::model::{ModelSpec, Plan};
use fergpu::rng::Rng;
use fergpu::shape::NUM_CLASSES;
use std::path::PathBuf;
use std::time::Instant;

/// Command-line settings.
struct Args {
    data: PathBuf,
    model: String,
    steps: usize,
    batch: usize,
    every: usize,
    adapter: String,
    seed: u64,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut it = std::env::args().skip(1);
    let mut a = Args {
        data: PathBuf::new(),
        model: "mlp".into(),
        steps: 300,
        batch: 32,
        every: 10,
        adapter: "software".into(),
        seed: 1,
    };
    while let Some(arg) = it.next() {
        let mut value = || it.next().with_context(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--model" => a.model = value()?,
            "--steps" => a.steps = value()?.parse()?,
            "--batch" => a.batch = value()?.parse()?,
            "--every" => a.every = value()?.parse()?,
            "--adapter" => a.adapter = value()?,
            "--seed" => a.seed = value()?.parse()?,
            _ if arg.starts_with("--") => bail!("unknown flag {arg}"),
            _ => a.data = PathBuf::from(arg),
        }
    }
    if a.data.as_os_str().is_empty() {
        bail!("usage: loss_curve PATH.csv[.gz] [--model mlp|cnn|vgg|compact] [--steps N] [--batch B] [--every K] [--adapter A] [--seed S]");
    }
    if a.steps == 0 || a.batch == 0 || a.every == 0 {
        bail!("--steps, --batch and --every must be positive");
    }
    Ok(a)
}

/// A loss curve: one mean loss per `every` steps, and the seconds the steps took.
struct Curve {
    losses: Vec<f64>,
    seconds: f64,
    last_params: Vec<f32>,
}

/// `a.steps` Adam steps (lr 1e-3) of `plan` from `params` over `order` on `be`.
fn train<B: Backend>(
    be: &B,
    plan: &Plan,
    params: &[f32],
    ds: &Dataset,
    order: &[u32],
    a: &Args,
) -> Curve {
    let mut net = Network::new(be, plan.clone(), params);
    let mut opt = Optimizer::new(
        be,
        plan,
        fergpu::settings::Settings::default().optimizer.config(),
    );
    let images = be.upload_images(&ds.pixels, &ds.labels);
    let order_buf = be.upload_indices(order); // (steps·batch) row indices
    let ones = be.upload(&[1.0; NUM_CLASSES]); // (7) class weights
    let mut st = be.zeros(stats::LEN); // (4) running loss statistics
    let mut losses = Vec::new();
    let mut seen = (0.0f64, 0.0f64);
    let t0 = Instant::now();
    for step in 0..a.steps {
        let offset = step * a.batch;
        be.gather_batch(
            &mut net.x,
            &mut net.labels,
            &images,
            &order_buf,
            offset,
            a.batch,
        );
        let mode = Mode::Train {
            seed: a.seed,
            step: opt.t,
        };
        net.forward(be, a.batch, mode);
        net.loss_forward(be, &mut st, &ones, 0.0, a.batch);
        net.backward(be, &ones, 0.0, a.batch);
        opt.step(be, &mut net, 1e-3);
        be.submit();
        if (step + 1) % a.every == 0 || step + 1 == a.steps {
            let s = be.download(&st);
            let (sum, weight) = (s[stats::LOSS_SUM] as f64, s[stats::WEIGHT_SUM] as f64);
            losses.push((sum - seen.0) / (weight - seen.1));
            seen = (sum, weight);
        }
        if step == 0 {
            // An estimate before committing to a long run (the first step includes warm-up).
            be.download(&st);
            let per = t0.elapsed().as_secs_f64();
            eprintln!(
                "  first step {:.2} s; {} steps ≈ {:.0} s at most",
                per,
                a.steps,
                per * a.steps as f64
            );
        }
    }
    Curve {
        losses,
        seconds: t0.elapsed().as_secs_f64(),
        last_params: be.download(&net.params),
    }
}

fn main() -> anyhow::Result<()> {
    let a = parse_args()?;
    let (all, report) = load(&a.data, &LoadOptions::default())?;
    let ds = all.split(&[Usage::Training]);
    eprintln!(
        "loaded {} rows ({} Training) in {:.1} s",
        report.rows,
        ds.len(),
        report.seconds
    );
    let needed = a.steps * a.batch;
    if needed > ds.len() {
        bail!(
            "{} steps of {} need {needed} rows; Training has {}",
            a.steps,
            a.batch,
            ds.len()
        );
    }
    let spec = ModelSpec::resolve(&a.model, Activation::Relu, Activation::Selu)?;
    let plan = Plan::new(&spec, a.batch)?;
    let params = plan.init_params(a.seed);
    let mut order: Vec<u32> = (0..ds.len() as u32).collect();
    Rng::new(a.seed).shuffle(&mut order);
    order.truncate(needed);

    let gpu = GpuBackend::new(&AdapterRequest::parse(&a.adapter), None)?;
    eprintln!("GPU: {}", gpu.name());
    let g = train(&gpu, &plan, &params, &ds, &order, &a);
    gpu.check()?;
    let cpu = CpuBackend::new(0);
    eprintln!("CPU: {}", cpu.name());
    let c = train(&cpu, &plan, &params, &ds, &order, &a);

    println!(
        "{} batch {} from seed {}: {} steps on {} ({:.1} s) and {} ({:.1} s)",
        spec.name,
        a.batch,
        a.seed,
        a.steps,
        gpu.name(),
        g.seconds,
        cpu.name(),
        c.seconds
    );
    println!(
        "{:>6} {:>12} {:>12} {:>10}",
        "step", "gpu loss", "cpu loss", "rel diff"
    );
    let mut worst = 0f64;
    for (i, (gl, cl)) in g.losses.iter().zip(&c.losses).enumerate() {
        let step = ((i + 1) * a.every).min(a.steps);
        let rel = (gl - cl).abs() / cl.abs();
        worst = worst.max(rel);
        println!("{step:>6} {gl:>12.6} {cl:>12.6} {rel:>10.2e}");
    }
    let drift = g
        .last_params
        .iter()
        .zip(&c.last_params)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max);
    println!("max relative loss difference: {worst:.3e}");
    println!(
        "max absolute weight difference after {} steps: {drift:.3e}",
        a.steps
    );
    Ok(())
}
