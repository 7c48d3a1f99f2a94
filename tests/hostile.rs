//! Nothing lost, nothing silently wrong: the command line against hostile files, flags and
//! neighbours. A run folder is never overwritten or mixed with another run (a second writer
//! is refused with the holder's process id), oversized models are refused before anything
//! is allocated, every flag is range-checked before the folder is touched, empty splits are
//! named with their flag, checkpoints with non-finite numbers are refused, and `--adapter
//! auto` prefers the CPU backend to a software GPU.

mod support;

use fergpu::checkpoint::Checkpoint;
use fergpu::data::{csv, synth, Usage};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};
use support::{fergpu, fresh_dir, read_json, run_ok, spawn_until, text};

/// `fergpu train` with `args`, by default of the MLP for one epoch on 120 generated faces on
/// the CPU, into `out`.
fn train_cmd(out: &Path, args: &[&str]) -> Command {
    let mut cmd = fergpu(["train", "--quiet"]);
    let given = |flag: &str| args.iter().any(|a| a.split('=').next() == Some(flag));
    for (flag, value) in [
        ("--synthetic", "120"),
        ("--model", "mlp"),
        ("--epochs", "1"),
        ("--adapter", "cpu"),
    ] {
        if !given(flag) {
            cmd.args([flag, value]);
        }
    }
    cmd.args(args).arg("--out").arg(out);
    cmd
}

/// Runs `cmd`, killing it after `secs` seconds (a hang is a failure, not a stuck suite).
fn run_within(cmd: &mut Command, secs: u64) -> Output {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the fergpu binary starts");
    let deadline = Instant::now() + Duration::from_secs(secs);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{cmd:?} still running after {secs} s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

/// Runs `cmd`, asserts it failed with a message (no panic) and returns its stderr.
fn refused(cmd: &mut Command) -> String {
    let out = run_within(cmd, 120);
    let (_, stderr) = text(&out);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{cmd:?} did not fail:\n{stderr}"
    );
    assert!(stderr.contains("error: "), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    stderr
}

/// Every file of a folder with its bytes.
fn snapshot(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let path = e.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&path).unwrap())
        })
        .collect()
}

#[test]
fn a_finished_run_survives_refused_runs_and_invalid_settings_then_resumes() {
    let dir = fresh_dir("hostile-finished");
    let out = dir.join("run");
    run_ok(&mut train_cmd(&out, &[]));
    let before = snapshot(&out);
    assert!(before.contains_key("summary.json"));

    let e = refused(&mut train_cmd(&out, &["--seed", "3"]));
    assert!(
        e.contains("already holds a run")
            && e.contains("--resume")
            && e.contains("--overwrite")
            && e.contains("another --out folder"),
        "{e}"
    );
    // Invalid settings are refused before the folder is touched, --overwrite or not.
    let typo = dir.join("typo.toml");
    std::fs::write(
        &typo,
        "[[layers]]\ntype = \"flatten\"\n[[layers]]\ntype = \"dense\"\nunits = 7\nactivaton = \"relu\"\n",
    )
    .unwrap();
    for (flags, words) in [
        (
            &["--lr", "nan"][..],
            "--lr NaN: lr must be a finite number > 0",
        ),
        (&["--lr", "inf"], "--lr inf: lr must be"),
        (&["--lr=-1"], "--lr -1: lr must be"),
        (&["--lr", "0"], "--lr 0: lr must be"),
        (
            &["--patience", "0"],
            "--patience 0: patience must be between 1",
        ),
        (&["--batch-size", "0"], "--batch-size 0"),
        (
            &["--threads", "100000"],
            "--threads 100000: threads must be at most",
        ),
        (&["--model", typo.to_str().unwrap()], "activaton"),
    ] {
        let mut args = flags.to_vec();
        args.push("--overwrite");
        let e = refused(&mut train_cmd(&out, &args));
        assert!(e.contains(words), "{flags:?}: {e}");
        assert_eq!(snapshot(&out), before, "{flags:?} touched the folder");
    }
    // config.json still holds valid settings: the run resumes and extends.
    run_ok(fergpu(["train", "--epochs", "2", "--quiet", "--resume"]).arg(&out));
    let summary = read_json(&out.join("summary.json"));
    assert_eq!(summary["epochs_run"], 2);
    assert_eq!(
        read_json(&out.join("config.json"))["settings"]["optimizer"]["lr"],
        1e-3
    );
}

/// Starts the seed CNN (slow enough on one thread to still be running while others try the
/// folder) into `out`, stderr into `log`; returns once it has taken the folder.
fn start_slow_run(out: &Path, log: &Path) -> std::process::Child {
    let mut cmd = fergpu([
        "train",
        "--synthetic",
        "150",
        "--model",
        "cnn",
        "--epochs",
        "2",
        "--batch-size",
        "40",
        "--adapter",
        "cpu",
        "--threads",
        "1",
        "--seed",
        "4",
        "--quiet",
    ]);
    cmd.arg("--out").arg(out);
    spawn_until(&mut cmd, log, "training cnn", "the first run starting")
}

#[test]
fn a_second_writer_is_refused_with_the_holders_process_id_and_nothing_mixes() {
    let dir = fresh_dir("hostile-two");
    let out = dir.join("run");
    let log = dir.join("first.log");
    let mut first = start_slow_run(&out, &log);
    let pid = first.id();
    let holder = format!("being written by another fergpu run (process {pid})");
    for flags in [&["--seed", "9"][..], &["--seed", "9", "--overwrite"]] {
        let e = refused(&mut train_cmd(&out, flags));
        assert!(e.contains(&holder), "{flags:?}: {e}");
    }
    let e = refused(fergpu(["train", "--adapter", "cpu", "--resume"]).arg(&out));
    assert!(e.contains(&holder), "{e}");
    assert_eq!(
        std::fs::read_to_string(out.join("run.lock"))
            .unwrap()
            .trim(),
        pid.to_string()
    );

    // The first run goes on undisturbed to a clean stop.
    assert!(Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status()
        .unwrap()
        .success());
    let status = first.wait().unwrap();
    let log = std::fs::read_to_string(&log).unwrap();
    assert_eq!(status.code(), Some(130), "{log}");
    let config = read_json(&out.join("config.json"));
    assert_eq!(
        config["settings"]["run"]["seed"], 4,
        "the first run's settings"
    );
    assert_eq!(config["settings"]["model"]["model"], "cnn");
    let last = Checkpoint::load(&out.join("checkpoint-last.safetensors")).unwrap();
    assert_eq!(last.spec.name, "cnn", "the first run's checkpoint");
    let left: Vec<String> = snapshot(&out).into_keys().collect();
    assert!(
        left.iter()
            .all(|f| !f.ends_with(".tmp") && f != "run.lock" && !f.contains("summary")),
        "{left:?}"
    );
}

/// A model file of a Flatten, a Dense of `units` and the Dense 7, as JSON (any integer).
fn dense_model(dir: &Path, units: &str) -> PathBuf {
    let path = dir.join(format!("dense-{}.json", units.len()));
    std::fs::write(
        &path,
        format!(
            "{{\"layers\": [{{\"type\": \"flatten\"}}, {{\"type\": \"dense\", \"units\": {units}}}, \
             {{\"type\": \"dense\", \"units\": 7}}]}}"
        ),
    )
    .unwrap();
    path
}

/// `path`, a checkpoint, with its model metadata replaced by `model` (JSON).
fn with_model_metadata(path: &Path, model: &str) {
    let bytes = std::fs::read(path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let mut header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    header["__metadata__"]["fergpu.model"] = model.into();
    let mut text = serde_json::to_vec(&header).unwrap();
    while !text.len().is_multiple_of(8) {
        text.push(b' ');
    }
    let mut out = (text.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&text);
    out.extend_from_slice(&bytes[8 + n..]);
    std::fs::write(path, out).unwrap();
}

#[test]
fn oversized_models_are_refused_naming_the_layer_and_the_limit_before_any_allocation() {
    let dir = fresh_dir("hostile-huge");
    for units in ["1000000000", "9223372036854775808", "18446744073709551615"] {
        let model = dense_model(&dir, units);
        let out = dir.join("run");
        let e = refused(&mut train_cmd(&out, &["--model", model.to_str().unwrap()]));
        assert!(
            e.contains("layer 2 (Dense")
                && e.contains("parameters, over the")
                && e.contains("MiB of memory"),
            "{units}: {e}"
        );
        assert_eq!(e.matches("model:").count(), 1, "{e}");
        assert!(!out.exists(), "a refused model leaves no folder");
    }
    let e = refused(&mut train_cmd(
        &dir.join("run"),
        &[
            "--model",
            dense_model(&dir, "18446744073709551616").to_str().unwrap(),
        ],
    ));
    assert!(e.contains("dense-20.json"), "{e}");

    // The same model in a checkpoint's metadata: refused at load, eval and predict alike.
    let out = dir.join("small");
    run_ok(&mut train_cmd(&out, &[]));
    let ck = out.join("checkpoint-best.safetensors");
    let huge = std::fs::read_to_string(dense_model(&dir, "1000000000")).unwrap();
    let spec: serde_json::Value = serde_json::from_str(&huge).unwrap();
    let mut spec = spec.as_object().unwrap().clone();
    spec.insert("name".into(), "mlp".into());
    with_model_metadata(&ck, &serde_json::Value::Object(spec).to_string());
    let data = dir.join("faces.csv");
    support::write_synth_csv(&data, 60, 3);
    let e = refused(
        fergpu(["eval", "--adapter", "cpu", "--data"])
            .arg(&data)
            .arg("--checkpoint")
            .arg(&ck),
    );
    assert!(
        e.contains("checkpoint-best.safetensors")
            && e.contains("layer 2 (Dense")
            && e.contains("parameters, over the"),
        "{e}"
    );
}

#[test]
fn threads_are_checked_for_every_command_that_takes_them() {
    let dir = fresh_dir("hostile-threads");
    let out = dir.join("run");
    run_ok(&mut train_cmd(&out, &[]));
    let ck = out.join("checkpoint-best.safetensors");
    let data = dir.join("faces.csv");
    support::write_synth_csv(&data, 60, 3);
    let photo = dir.join("face.png");
    image::GrayImage::from_raw(48, 48, synth::generate(1, 1).pixels)
        .unwrap()
        .save(&photo)
        .unwrap();
    let mut commands = [
        fergpu(["eval", "--adapter", "cpu", "--threads", "100000", "--data"]),
        fergpu(["predict", "--adapter", "cpu", "--threads", "100000"]),
        fergpu([
            "bench",
            "--adapter",
            "cpu",
            "--threads",
            "100000",
            "--steps",
            "1",
        ]),
        fergpu([
            "train",
            "--synthetic",
            "60",
            "--adapter",
            "cpu",
            "--threads",
            "100000",
        ]),
    ];
    commands[0].arg(&data).arg("--checkpoint").arg(&ck);
    commands[1].arg("--checkpoint").arg(&ck).arg(&photo);
    commands[3].arg("--out").arg(dir.join("never"));
    let most = std::thread::available_parallelism().unwrap().get() * 4;
    for cmd in &mut commands {
        let t = Instant::now();
        let e = refused(cmd);
        assert!(
            e.contains(&format!("--threads 100000: threads must be at most {most}")),
            "{e}"
        );
        assert!(t.elapsed() < Duration::from_secs(30), "{:?}", t.elapsed());
    }
    assert!(!dir.join("never").exists());
}

/// A FER2013 CSV of generated faces without any row of the splits in `missing`.
fn data_without(dir: &Path, missing: &[Usage]) -> PathBuf {
    let all = synth::generate(150, 5);
    let rows: Vec<usize> = (0..all.len())
        .filter(|&r| !missing.contains(&all.usage[r]))
        .collect();
    let path = dir.join("partial.csv");
    csv::write(&path, &all.subset(&rows)).unwrap();
    path
}

#[test]
fn an_empty_split_is_an_error_naming_its_flag_unless_another_is_named() {
    let dir = fresh_dir("hostile-splits");
    let data = data_without(&dir, &[Usage::PublicTest]);
    let base = |out: &Path| {
        let mut cmd = fergpu([
            "train",
            "--model",
            "mlp",
            "--epochs",
            "1",
            "--adapter",
            "cpu",
            "--quiet",
            "--data",
        ]);
        cmd.arg(&data).arg("--out").arg(out);
        cmd
    };
    let out = dir.join("run");
    let e = refused(&mut base(&out));
    assert!(
        e.contains("the test split (PublicTest) has no images") && e.contains("--test-split"),
        "{e}"
    );
    for (flag, what) in [("--train-split", "training"), ("--val-split", "validation")] {
        let e = refused(base(&out).args([flag, "PublicTest", "--test-split", "PrivateTest"]));
        assert!(
            e.contains(&format!("the {what} split (PublicTest) has no images")) && e.contains(flag),
            "{e}"
        );
    }
    assert!(!out.exists(), "refused runs leave no folder");
    // Naming another test split is the user's choice, and is recorded.
    run_ok(base(&out).args(["--test-split", "PrivateTest"]));
    let config = read_json(&out.join("config.json"));
    assert_eq!(config["settings"]["data"]["test_split"][0], "PrivateTest");
    assert!(config["test_images"].as_u64().unwrap() > 0);
}

#[test]
fn a_stray_quote_with_skip_bad_rows_costs_one_row_on_the_command_line() {
    let dir = fresh_dir("hostile-quote");
    let data = dir.join("faces.csv");
    support::write_synth_csv(&data, 50, 6);
    let text = std::fs::read_to_string(&data).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    lines[10] = lines[10].replacen(',', ",\"", 1);
    std::fs::write(&data, lines.join("\n") + "\n").unwrap();
    let (stdout, _) = run_ok(fergpu(["info", "--data"]).arg(&data));
    assert!(stdout.contains(": 49 rows read"), "{stdout}");
    assert!(
        stdout.contains("1 bad rows:") && stdout.contains(":11: "),
        "{stdout}"
    );
}

#[test]
fn divergence_suggests_a_rate_never_nan() {
    let dir = fresh_dir("hostile-diverge");
    let e = refused(&mut train_cmd(
        &dir.join("run"),
        &["--lr", "1e30", "--epochs", "2"],
    ));
    assert!(e.contains("try a smaller --lr (e.g. 1e29)"), "{e}");
    assert!(!e.contains("e.g. NaN") && !e.contains("e.g. inf"), "{e}");
}

#[test]
fn resume_refuses_another_models_checkpoint_in_the_folder() {
    let dir = fresh_dir("hostile-mixed");
    let mlp = dir.join("mlp");
    run_ok(&mut train_cmd(&mlp, &["--epochs", "1"]));
    let tiny = dir.join("tiny.toml");
    std::fs::write(
        &tiny,
        "[[layers]]\ntype = \"conv2d\"\nfilters = 2\nkernel = 5\n[[layers]]\ntype = \"maxpool\"\n\
         size = 4\n[[layers]]\ntype = \"flatten\"\n[[layers]]\ntype = \"dense\"\nunits = 7\n",
    )
    .unwrap();
    let other = dir.join("other");
    run_ok(&mut train_cmd(&other, &["--model", tiny.to_str().unwrap()]));
    std::fs::copy(
        other.join("checkpoint-last.safetensors"),
        mlp.join("checkpoint-last.safetensors"),
    )
    .unwrap();
    let before = snapshot(&mlp);
    let e = refused(fergpu(["train", "--epochs", "2", "--resume"]).arg(&mlp));
    assert!(
        e.contains("the last checkpoint holds model 'tiny'") && e.contains("mixes two runs"),
        "{e}"
    );
    assert_eq!(snapshot(&mlp), before, "a refused resume changes nothing");
    // Flags that would make another run are refused, not ignored.
    for flags in [&["--model", "cnn"][..], &["--lr", "0.5"]] {
        let e = refused(fergpu(["train", "--resume"]).arg(&other).args(flags));
        assert!(e.contains("cannot change when resuming"), "{e}");
    }
}

#[test]
fn nan_weights_are_refused_by_eval_and_predict() {
    let dir = fresh_dir("hostile-nan");
    let out = dir.join("run");
    run_ok(&mut train_cmd(&out, &[]));
    let path = out.join("checkpoint-best.safetensors");
    let mut ck = Checkpoint::load(&path).unwrap();
    ck.params.iter_mut().for_each(|p| *p = f32::NAN);
    ck.save(&path).unwrap();
    let data = dir.join("faces.csv");
    support::write_synth_csv(&data, 60, 3);
    let photo = dir.join("face.png");
    image::GrayImage::from_raw(48, 48, synth::generate(1, 1).pixels)
        .unwrap()
        .save(&photo)
        .unwrap();
    for cmd in [
        fergpu(["eval", "--adapter", "cpu", "--data"])
            .arg(&data)
            .arg("--checkpoint")
            .arg(&path),
        fergpu(["predict", "--adapter", "cpu", "--checkpoint"])
            .arg(&path)
            .arg(&photo),
    ] {
        let out = run_within(cmd, 60);
        let (stdout, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
        assert!(
            stderr.contains("tensor 'dense1.weight' holds NaN (element 0 of"),
            "{stderr}"
        );
        assert!(
            !stdout.contains('%') && !stdout.contains("Angry"),
            "{stdout}"
        );
    }
}

#[test]
fn auto_prefers_the_cpu_backend_to_a_software_adapter() {
    let (listing, _) = run_ok(&mut fergpu(["adapters"]));
    let adapters: Vec<&str> = listing.lines().filter(|l| l.starts_with('[')).collect();
    let dir = fresh_dir("hostile-auto");
    // The default adapter is auto.
    let (_, stderr) = run_ok(
        fergpu([
            "train",
            "--synthetic",
            "60",
            "--model",
            "mlp",
            "--epochs",
            "1",
            "--quiet",
            "--out",
        ])
        .arg(dir.join("run")),
    );
    let hardware = adapters.iter().any(|l| !l.contains("(software,"));
    if hardware {
        assert!(stderr.contains("using GPU adapter"), "{listing}\n{stderr}");
        return;
    }
    assert!(stderr.contains(") on CPU reference ("), "{stderr}");
    if let Some(software) = adapters.first() {
        let name = software.split(" (").next().unwrap();
        assert!(
            stderr.contains(&format!("passing over the software adapter {name}"))
                && stderr.contains("--adapter software"),
            "{stderr}"
        );
    }
}

#[test]
fn model_messages_say_what_is_wrong_once() {
    let dir = fresh_dir("hostile-messages");
    let zero = dir.join("zero.toml");
    std::fs::write(
        &zero,
        "[[layers]]\ntype = \"conv2d\"\nfilters = 0\n[[layers]]\ntype = \"flatten\"\n\
         [[layers]]\ntype = \"dense\"\nunits = 7\n",
    )
    .unwrap();
    let out = dir.join("run");
    let e = refused(&mut train_cmd(&out, &["--model", zero.to_str().unwrap()]));
    assert!(
        e.contains("error: model: ") && e.matches("model:").count() == 1,
        "{e}"
    );
    assert!(
        e.contains("layer 1") && e.contains("needs at least 1 filter"),
        "{e}"
    );
    let e = refused(&mut train_cmd(&out, &["--model", "cnnn"]));
    assert!(
        e.contains("--model cnnn: not a preset (mlp, cnn, vgg, compact)"),
        "{e}"
    );
    assert!(!out.exists(), "a failed model load leaves no folder");
}

#[test]
fn bench_and_synth_numbers_are_checked_before_anything_is_allocated() {
    let dir = fresh_dir("hostile-bench");
    for (args, words) in [
        (
            &["--batch-sizes", "0"][..],
            "--batch-sizes 0: must be between 1 and 65536",
        ),
        (&["--steps", "0"], "--steps 0: must be between 1 and 10000"),
        (&["--kernel-reps", "100000000"], "--kernel-reps 100000000"),
        (
            &["--batch-sizes", "60000", "--steps", "1000"],
            "would generate 60120000 faces",
        ),
    ] {
        let e = refused(fergpu(["bench", "--adapter", "cpu"]).args(args));
        assert!(e.contains(words), "{args:?}: {e}");
    }
    // A batch the machine cannot hold is refused with the largest that fits.
    let model = dir.join("wide.json");
    std::fs::write(
        &model,
        "{\"layers\": [{\"type\": \"conv2d\", \"filters\": 4096, \"kernel\": 1}, \
         {\"type\": \"maxpool\", \"size\": 48}, {\"type\": \"flatten\"}, \
         {\"type\": \"dense\", \"units\": 7}]}",
    )
    .unwrap();
    let e = refused(
        fergpu([
            "bench",
            "--adapter",
            "cpu",
            "--batch-sizes",
            "65536",
            "--steps",
            "1",
        ])
        .arg("--models")
        .arg(&model),
    );
    assert!(
        e.contains("--batch-size 65536 does not fit CPU reference"),
        "{e}"
    );
    let e = refused(fergpu(["synth", "--rows", "10000000000", "--out"]).arg(dir.join("x.csv")));
    assert!(
        e.contains("--rows 10000000000: rows must be between 1 and 200000"),
        "{e}"
    );
}
