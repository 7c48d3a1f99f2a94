//! Times loading a FER2013 CSV: `cargo run --release --example load_time -- PATH`.
//!
//! Prints the rows, the per-split and per-class counts and the seconds the load took.

use std::io::Write;
use std::path::PathBuf;

use fergpu::data::csv::{load, LoadOptions};
use fergpu::data::{Usage, EMOTIONS};

fn main() -> anyhow::Result<()> {
    let path: PathBuf = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .ok_or_else(|| anyhow::anyhow!("usage: load_time PATH.csv[.gz]"))?;
    let (ds, report) = load(&path, &LoadOptions::default())?;
    // Written with `writeln!` so a closed pipe (`| head -1`) ends the program with an error
    // instead of `println!`'s panic.
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{}: {} rows in {:.2} s",
        path.display(),
        report.rows,
        report.seconds
    )?;
    writeln!(out, "{:<12} {:>6}  {}", "split", "rows", EMOTIONS.join(" "))?;
    for usage in Usage::ALL {
        let part = ds.split(&[usage]);
        let counts: Vec<String> = part.class_counts().iter().map(|c| c.to_string()).collect();
        writeln!(
            out,
            "{:<12} {:>6}  {}",
            usage.name(),
            part.len(),
            counts.join(" ")
        )?;
    }
    Ok(())
}
