//! The smaller hostile cases: data from a pipe (plain or gzip), a FIFO among the photos,
//! control bytes in checkpoint metadata, file names and recipe files, temporary files a
//! killed writer left, over-long sweep run names, and graphics-driver noise without
//! `XDG_RUNTIME_DIR`.

mod support;

use fergpu::checkpoint::Checkpoint;
use fergpu::data::synth;
use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};
use support::{fergpu, fresh_dir, run, run_ok, text};

/// Runs `cmd` with `input` on its stdin; its output.
fn with_stdin(cmd: &mut Command, input: Vec<u8>) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the fergpu binary starts");
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        // A closed pipe (the reader gave up) is the reader's to report.
        let _ = stdin.write_all(&input);
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    out
}

#[test]
fn data_streams_through_a_pipe_plain_or_gzip() {
    let dir = fresh_dir("hs-stdin");
    let data = dir.join("d.csv");
    support::write_synth_csv(&data, 90, 2);
    let plain = std::fs::read(&data).unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&plain).unwrap();
    let gz = gz.finish().unwrap();
    for (name, bytes) in [
        ("-", &plain),
        ("/dev/stdin", &plain),
        ("-", &gz),
        ("/dev/stdin", &gz),
    ] {
        let out = with_stdin(&mut fergpu(["info", "--data", name]), bytes.clone());
        let (stdout, stderr) = text(&out);
        assert!(out.status.success(), "{name}: {stderr}");
        assert!(
            stdout.contains(&format!("{name}: 90 rows read")),
            "{stdout}"
        );
    }
    let out = with_stdin(
        fergpu([
            "train",
            "--data",
            "-",
            "--model",
            "mlp",
            "--epochs",
            "1",
            "--adapter",
            "cpu",
            "--quiet",
            "--out",
        ])
        .arg(dir.join("run")),
        gz,
    );
    assert!(out.status.success(), "{}", text(&out).1);
}

#[test]
#[cfg(unix)]
fn a_fifo_among_the_photos_is_named_and_skipped_not_waited_for() {
    let dir = fresh_dir("hs-fifo");
    let run = support::train_small_mlp(&dir.join("run"));
    let photos = dir.join("photos");
    std::fs::create_dir_all(&photos).unwrap();
    image::GrayImage::from_raw(48, 48, synth::generate(1, 1).pixels)
        .unwrap()
        .save(photos.join("a.png"))
        .unwrap();
    let fifo = photos.join("x.png");
    assert!(Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    let t = Instant::now();
    let mut cmd = fergpu(["predict", "--adapter", "cpu", "--checkpoint"]);
    let out = cmd
        .arg(run.join("checkpoint-best.safetensors"))
        .arg(&photos)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = wait_at_most(out, Duration::from_secs(60));
    let (stdout, stderr) = text(&out);
    assert!(t.elapsed() < Duration::from_secs(60));
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stdout.contains("a.png: "), "{stdout}");
    assert!(
        stderr.contains("x.png: not a regular file (a FIFO, device or socket)"),
        "{stderr}"
    );
}

/// Waits for `child`, killing it (and failing) after `limit`.
fn wait_at_most(mut child: std::process::Child, limit: Duration) -> Output {
    let deadline = Instant::now() + limit;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("still running after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

#[test]
fn control_bytes_from_files_never_reach_the_terminal_raw() {
    let dir = fresh_dir("hs-escape");
    let folder = support::train_small_mlp(&dir.join("run"));
    let path = folder.join("checkpoint-best.safetensors");
    let mut ck = Checkpoint::load(&path).unwrap();
    ck.spec.name = "mlp\u{1b}[2J\u{7}".into();
    ck.save(&path).unwrap();
    let data = dir.join("d.csv");
    support::write_synth_csv(&data, 60, 3);
    let photo = dir.join("face\u{1b}[31m.png");
    image::GrayImage::from_raw(48, 48, synth::generate(1, 1).pixels)
        .unwrap()
        .save(&photo)
        .unwrap();
    let recipe = dir.join("r.toml");
    std::fs::write(&recipe, "model = \"cnn\u{1b}[5m\"\n").unwrap();
    let outputs = [
        run(fergpu(["eval", "--adapter", "cpu", "--checkpoint"])
            .arg(&path)
            .arg("--data")
            .arg(&data)),
        run(fergpu(["predict", "--adapter", "cpu", "--checkpoint"])
            .arg(&path)
            .arg(&photo)),
        run(fergpu(["predict", "--adapter", "cpu", "--checkpoint"])
            .arg(&path)
            .arg(dir.join("missing\u{1b}[0m.png"))),
        run(fergpu(["train", "--synthetic", "60", "--adapter", "cpu", "--config"]).arg(&recipe)),
    ];
    for out in outputs {
        let (stdout, stderr) = text(&out);
        for (what, s) in [("stdout", &stdout), ("stderr", &stderr)] {
            assert!(
                !s.contains('\u{1b}') && !s.contains('\u{7}'),
                "raw control bytes on {what}: {s:?}"
            );
        }
        assert!(
            stdout.contains("\\u{1b}") || stderr.contains("\\u{1b}"),
            "{stdout}{stderr}"
        );
    }
}

#[test]
fn temporary_files_of_killed_writers_are_removed_when_the_folder_is_taken() {
    let dir = fresh_dir("hs-tmp");
    let run = support::train_small_mlp(&dir.join("run"));
    // No process has id 4294967294 (pids are far smaller): the writer is gone.
    let stale = [
        "metrics.csv.4294967294.tmp",
        "checkpoint-last.safetensors.4294967294.tmp",
    ];
    for name in stale {
        std::fs::write(run.join(name), b"half").unwrap();
    }
    run_ok(fergpu(["train", "--epochs", "2", "--quiet", "--resume"]).arg(&run));
    for name in stale {
        assert!(!run.join(name).exists(), "{name} is still there");
    }
    assert!(run.join("summary.json").exists());
}

#[test]
fn sweep_run_names_stay_within_what_a_folder_name_may_be() {
    use fergpu::experiment::parse_grid;
    let long = "a".repeat(300);
    let e = parse_grid(&format!("[[run]]\nname = \"{long}\"\nseed = 2\n"), "g.toml")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("g.toml:2: [[run]] name") && e.contains("at most 100"),
        "{e}"
    );
    // Names derived from many settings are shortened, and stay apart.
    let grid = "[grid]\naugment = [\"flip,shift=1\", \"flip,shift=2\"]\nseed = [1, 2]\n\
                warmup = [0, 1]\nepochs = [1, 2]\nbatch_size = [8, 16]\npatience = [1, 2]\n\
                limit = [0, 10]\nrotate = [0, 10]\nerase = [0, 0.5]\nscale = [0, 0.1]\n\
                label_smoothing = [0, 0.1]\n";
    let runs = parse_grid(grid, "g.toml").unwrap();
    assert_eq!(runs.len(), 2048);
    let names: std::collections::BTreeSet<&str> = runs.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names.len(), runs.len());
    assert!(
        runs.iter().all(|r| r.name.len() <= 100),
        "{:?}",
        runs[0].name
    );
    assert!(
        runs[0].name.starts_with("augment-flip_shift_1_seed-1_"),
        "{}",
        runs[0].name
    );
}

#[test]
fn no_driver_noise_without_xdg_runtime_dir() {
    let dir = fresh_dir("hs-xdg");
    let run_dir = support::train_small_mlp(&dir.join("run"));
    let photo = dir.join("face.png");
    image::GrayImage::from_raw(48, 48, synth::generate(1, 1).pixels)
        .unwrap()
        .save(&photo)
        .unwrap();
    let mut adapters = fergpu(["adapters"]);
    let mut predict = fergpu(["predict", "--adapter", "cpu", "--checkpoint"]);
    predict
        .arg(run_dir.join("checkpoint-best.safetensors"))
        .arg(&photo);
    let mut auto = fergpu([
        "train",
        "--synthetic",
        "60",
        "--model",
        "mlp",
        "--epochs",
        "1",
        "--quiet",
        "--out",
    ]);
    auto.arg(dir.join("auto"));
    for cmd in [&mut adapters, &mut predict, &mut auto] {
        let out = run(cmd
            .env_remove("XDG_RUNTIME_DIR")
            .env_remove("WAYLAND_DISPLAY"));
        let (_, stderr) = text(&out);
        assert!(out.status.success(), "{cmd:?}: {stderr}");
        assert!(!stderr.contains("XDG_RUNTIME_DIR"), "{cmd:?}: {stderr}");
        assert!(!stderr.contains("error"), "{cmd:?}: {stderr}");
    }
}
