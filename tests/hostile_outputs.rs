//! No output destroys an input: a file a command writes is checked before the work against
//! everything the command reads (the same file by any path, links included), and special
//! files (`/dev/stdout`, FIFOs) are written in place, never replaced by a rename.

mod support;

use fergpu::data::synth;
use std::path::{Path, PathBuf};
use std::process::Command;
use support::{fergpu, fresh_dir, run, run_ok, text};

/// Runs `cmd`, asserts it failed with an error message before doing the work (no line
/// saying it evaluated or classified) and returns its stderr.
fn refused_up_front(cmd: &mut Command) -> String {
    let out = run(cmd);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{cmd:?}:\n{stdout}\n{stderr}");
    assert!(
        stderr.contains("error: ") && !stderr.contains("panicked"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("evaluating on") && !stderr.contains("classifying on"),
        "the work ran first: {stderr}"
    );
    stderr
}

/// A trained MLP's best checkpoint, a data file and a photo in `dir`.
fn inputs(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let out = dir.join("run");
    support::train_small_mlp(&out);
    let data = dir.join("faces.csv");
    support::write_synth_csv(&data, 60, 3);
    let photo = dir.join("photos").join("face.png");
    std::fs::create_dir_all(photo.parent().unwrap()).unwrap();
    image::GrayImage::from_raw(48, 48, synth::generate(1, 1).pixels)
        .unwrap()
        .save(&photo)
        .unwrap();
    (out.join("checkpoint-best.safetensors"), data, photo)
}

#[test]
fn no_command_writes_over_a_file_it_reads() {
    let dir = fresh_dir("ho-inputs");
    let (ck, data, photo) = inputs(&dir);
    let link = dir.join("also-the-checkpoint.safetensors");
    std::fs::hard_link(&ck, &link).unwrap();
    let kept: Vec<Vec<u8>> = [&ck, &data, &photo]
        .iter()
        .map(|p| std::fs::read(p).unwrap())
        .collect();
    for onnx in [&ck, &link] {
        let e = refused_up_front(
            fergpu(["export", "--checkpoint"])
                .arg(&ck)
                .arg("--onnx")
                .arg(onnx),
        );
        assert!(
            e.contains("that is the --checkpoint file, which this command reads"),
            "{e}"
        );
    }
    let eval = |predictions: &Path| {
        let mut cmd = fergpu(["eval", "--adapter", "cpu", "--checkpoint"]);
        cmd.arg(&ck)
            .arg("--data")
            .arg(&data)
            .arg("--predictions")
            .arg(predictions);
        cmd
    };
    let e = refused_up_front(&mut eval(&data));
    assert!(
        e.contains("--predictions") && e.contains("the --data file"),
        "{e}"
    );
    let e = refused_up_front(&mut eval(&ck));
    assert!(e.contains("the --checkpoint file"), "{e}");
    let e = refused_up_front(&mut eval(&dir.join("missing/p.csv")));
    assert!(
        e.contains("the folder") && e.contains("does not exist"),
        "{e}"
    );
    let predict = |args: &[&Path]| {
        let mut cmd = fergpu(["predict", "--adapter", "cpu", "--checkpoint"]);
        cmd.arg(&ck).args(args);
        cmd
    };
    let csv = Path::new("--csv");
    let folder = photo.parent().unwrap();
    for args in [[&photo, csv, &photo], [folder, csv, &photo]] {
        let e = refused_up_front(&mut predict(&args));
        assert!(
            e.contains("--csv") && e.contains("a photo to predict"),
            "{e}"
        );
    }
    let e = refused_up_front(&mut predict(&[&photo, Path::new("--annotate"), &data]));
    assert!(
        e.contains("--annotate") && e.contains("a file, not a folder"),
        "{e}"
    );
    let now: Vec<Vec<u8>> = [&ck, &data, &photo]
        .iter()
        .map(|p| std::fs::read(p).unwrap())
        .collect();
    assert!(now == kept, "an input changed");
}

#[test]
#[cfg(unix)]
fn special_files_are_written_in_place() {
    let dir = fresh_dir("ho-special");
    let (ck, data, _) = inputs(&dir);
    // /dev/stdout, here a pipe: the predictions arrive on stdout.
    let (stdout, _) = run_ok(
        fergpu(["eval", "--adapter", "cpu", "--checkpoint"])
            .arg(&ck)
            .arg("--data")
            .arg(&data)
            .args(["--predictions", "/dev/stdout"]),
    );
    assert!(
        stdout.starts_with("index,true,predicted,p_Angry"),
        "{stdout}"
    );
    let (stdout, _) = run_ok(&mut fergpu([
        "synth",
        "--rows",
        "3",
        "--out",
        "/dev/stdout",
    ]));
    assert_eq!(stdout.lines().count(), 4, "header and 3 rows");
    // A FIFO: written into while a reader reads it, and still a FIFO after.
    let fifo = dir.join("model.onnx");
    assert!(Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    let reader = {
        let fifo = fifo.clone();
        std::thread::spawn(move || std::fs::read(fifo).unwrap())
    };
    run_ok(
        fergpu(["export", "--checkpoint"])
            .arg(&ck)
            .arg("--onnx")
            .arg(&fifo),
    );
    let bytes = reader.join().unwrap();
    assert!(bytes.len() > 1000, "{} bytes through the FIFO", bytes.len());
    use std::os::unix::fs::FileTypeExt;
    assert!(std::fs::metadata(&fifo).unwrap().file_type().is_fifo());
    let left: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}
