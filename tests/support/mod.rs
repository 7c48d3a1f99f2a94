//! Helpers for the tests that run the `fergpu` binary: fresh folders, generated data files,
//! and running a command with its output captured.
#![allow(dead_code)]

use fergpu::data::{csv, synth, Dataset};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A fresh, empty folder under the system temp folder, unique to this test process.
pub fn fresh_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("fergpu-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `rows` generated faces from `seed`, written as a FER2013 CSV at `path`; returns them.
pub fn write_synth_csv(path: &Path, rows: usize, seed: u64) -> Dataset {
    let ds = synth::generate(rows, seed);
    csv::write(path, &ds).unwrap();
    ds
}

/// The `fergpu` binary with `args`, output piped (so it is not a terminal).
pub fn fergpu<I, S>(args: I) -> Command
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_fergpu"));
    cmd.args(args);
    cmd
}

/// Starts `cmd` with stdout dropped and stderr written to `log`, and returns once the log
/// holds `text` (it panics after two minutes, saying `what` never happened).
pub fn spawn_until(cmd: &mut Command, log: &Path, text: &str, what: &str) -> Child {
    let child = cmd
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .expect("the fergpu binary starts");
    let deadline = Instant::now() + Duration::from_secs(120);
    while !std::fs::read_to_string(log).unwrap().contains(text) {
        assert!(Instant::now() < deadline, "{what} never happened");
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}

/// Runs `cmd` to the end; its status, stdout and stderr.
pub fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("the fergpu binary runs")
}

/// Stdout and stderr as text, for messages and searching.
pub fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs `cmd`, asserts it succeeded, and returns (stdout, stderr).
pub fn run_ok(cmd: &mut Command) -> (String, String) {
    let out = run(cmd);
    let (stdout, stderr) = text(&out);
    assert!(
        out.status.success(),
        "{cmd:?} failed with {}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    (stdout, stderr)
}

/// Trains the MLP (Dense 120 → ReLU → Dense 84 → ReLU → Dense 7) for one epoch on 120
/// generated faces into the run folder `out`, on the CPU backend; returns `out`.
pub fn train_small_mlp(out: &Path) -> PathBuf {
    run_ok(
        fergpu([
            "train",
            "--synthetic",
            "120",
            "--model",
            "mlp",
            "--epochs",
            "1",
            "--adapter",
            "cpu",
            "--quiet",
            "--out",
        ])
        .arg(out),
    );
    out.to_path_buf()
}

/// The lines of a CSV file, split into cells.
pub fn csv_rows(path: &Path) -> Vec<Vec<String>> {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    text.lines()
        .map(|l| l.split(',').map(str::to_string).collect())
        .collect()
}

/// A JSON file parsed.
pub fn read_json(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}
