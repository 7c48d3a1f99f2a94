//! Run folders written by earlier fergpu versions still read and resume: a fixture written
//! by fergpu 0.1.0 (flat `config.json`, its checkpoints' resume state) is resumed today.

mod support;

use fergpu::augment::Augment;
use fergpu::checkpoint::Checkpoint;
use fergpu::run::RunFolder;
use std::path::{Path, PathBuf};
use support::{fergpu, fresh_dir, read_json, run_ok};

/// A fresh copy of the fixture (resuming writes into it).
fn fixture_copy(name: &str) -> PathBuf {
    let from = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/run-0.1.0");
    let dir = fresh_dir(name).join("run");
    std::fs::create_dir_all(&dir).unwrap();
    for entry in std::fs::read_dir(&from).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, dir.join(path.file_name().unwrap())).unwrap();
    }
    dir
}

#[test]
fn settings_of_a_0_1_0_run_folder_read_back_in_sections() {
    let dir = fixture_copy("compat-read");
    let s = RunFolder::new(&dir).read_settings().unwrap();
    assert_eq!(s.model.model, "tiny.toml");
    assert_eq!(s.data.synthetic, Some(150));
    assert_eq!(s.schedule.epochs, 1);
    assert_eq!(s.schedule.patience, Some(3));
    assert_eq!(s.schedule.lr_schedule, "plateau:patience=1");
    assert_eq!(s.run.batch_size, 16);
    assert_eq!(s.optimizer.lr, 1e-3);
    assert_eq!(s.device.adapter, "cpu");
    assert_eq!(s.augment.augment, Augment::parse("flip,shift=1").unwrap());
    assert_eq!(s.run.out.as_deref(), Some(dir.as_path()));
    let ck = Checkpoint::load(&dir.join("checkpoint-last.safetensors")).unwrap();
    assert_eq!(ck.spec.name, "tiny");
    assert_eq!(
        ck.optimizer.unwrap().t,
        8,
        "125 images at batch 16: 8 steps"
    );
}

#[test]
fn a_0_1_0_run_folder_resumes_and_is_rewritten_in_the_current_layout() {
    let dir = fixture_copy("compat-resume");
    let (_, stderr) = run_ok(fergpu(["train", "--epochs", "2", "--quiet", "--resume"]).arg(&dir));
    assert!(
        stderr.contains("resuming") && stderr.contains("at epoch 2"),
        "{stderr}"
    );
    let summary = read_json(&dir.join("summary.json"));
    assert_eq!(summary["epochs_run"], 2);
    let config = read_json(&dir.join("config.json"));
    assert_eq!(config["settings"]["schedule"]["epochs"], 2);
    assert_eq!(config["settings"]["augment"]["augment"], "flip,shift=1");
    assert_eq!(config["settings"]["schedule"]["patience"], 3);
    // And the new layout resumes as well.
    let (_, stderr) = run_ok(fergpu(["train", "--epochs", "3", "--quiet", "--resume"]).arg(&dir));
    assert!(stderr.contains("at epoch 3"), "{stderr}");
}
