//! The one settings type from the command line: a recipe file with flags over it, the saved
//! config.json, unknown keys named with their file, resume refusing flags that would make
//! another run, and run folders that are never overwritten by accident.

mod support;

use std::path::Path;
use support::{fergpu, fresh_dir, read_json, run, run_ok, text};

const TINY_MODEL: &str = "[[layers]]\ntype = \"conv2d\"\nfilters = 2\nkernel = 5\n\
                          [[layers]]\ntype = \"maxpool\"\nsize = 4\n\
                          [[layers]]\ntype = \"flatten\"\n\
                          [[layers]]\ntype = \"dense\"\nunits = 7\n";

/// `fergpu train` on 120 generated faces with `args`, into `out`.
fn train(out: &Path, args: &[&str]) -> std::process::Output {
    run(
        fergpu(["train", "--synthetic", "120", "--adapter", "cpu", "--quiet"])
            .args(args)
            .arg("--out")
            .arg(out),
    )
}

#[test]
fn a_recipe_sets_what_it_names_and_flags_given_override_it() {
    let dir = fresh_dir("settings-recipe");
    let model = dir.join("tiny.toml");
    std::fs::write(&model, TINY_MODEL).unwrap();
    let recipe = dir.join("recipe.toml");
    std::fs::write(
        &recipe,
        format!(
            "[model]\nmodel = {model:?}\n[optimizer]\nlr = 0.01\n[schedule]\nepochs = 3\n\
             lr_schedule = \"cosine\"\n[run]\nbatch_size = 16\nseed = 4\n",
        ),
    )
    .unwrap();
    let out = dir.join("run");
    let o = train(
        &out,
        &[
            "--config",
            recipe.to_str().unwrap(),
            "--epochs",
            "1",
            "--seed",
            "5",
        ],
    );
    let (_, stderr) = text(&o);
    assert!(o.status.success(), "{stderr}");
    let s = &read_json(&out.join("config.json"))["settings"];
    assert_eq!(s["optimizer"]["lr"], 0.01, "from the recipe");
    assert_eq!(s["schedule"]["lr_schedule"], "cosine", "from the recipe");
    assert_eq!(s["run"]["batch_size"], 16, "from the recipe");
    assert_eq!(s["schedule"]["epochs"], 1, "the flag wins");
    assert_eq!(s["run"]["seed"], 5, "the flag wins");
    assert_eq!(
        s["data"]["synthetic"], 120,
        "a flag the recipe does not name"
    );
    assert_eq!(read_json(&out.join("summary.json"))["epochs_run"], 1);

    // A run's own config.json is a recipe too.
    let again = dir.join("again");
    let o = run(fergpu(["train", "--config"])
        .arg(out.join("config.json"))
        .arg("--out")
        .arg(&again));
    assert!(o.status.success(), "{}", text(&o).1);
    let a = &read_json(&again.join("config.json"))["settings"];
    for (section, key) in [("optimizer", "lr"), ("run", "seed"), ("model", "model")] {
        assert_eq!(a[section][key], s[section][key], "{section}.{key}");
    }
}

#[test]
fn unknown_keys_are_errors_naming_the_key_and_the_file_before_anything_is_written() {
    let dir = fresh_dir("settings-unknown");
    let recipe = dir.join("recipe.toml");
    std::fs::write(&recipe, "[optimizer]\nlr = 0.01\nmomentun = 0.9\n").unwrap();
    let out = dir.join("run");
    let o = train(&out, &["--config", recipe.to_str().unwrap()]);
    let (_, stderr) = text(&o);
    assert!(!o.status.success());
    assert!(
        stderr.contains("momentun") && stderr.contains("recipe.toml"),
        "{stderr}"
    );
    assert!(!out.exists(), "a refused run leaves no folder");

    // A misspelt key in a model file, too.
    let model = dir.join("typo.toml");
    std::fs::write(&model, TINY_MODEL.replace("kernel = 5", "kernal = 5")).unwrap();
    let o = train(&out, &["--model", model.to_str().unwrap()]);
    let (_, stderr) = text(&o);
    assert!(!o.status.success());
    assert!(
        stderr.contains("kernal") && stderr.contains("typo.toml"),
        "{stderr}"
    );
    assert!(!out.exists(), "a refused model leaves no folder");
}

#[test]
fn resume_refuses_flags_that_would_make_another_run_and_takes_the_others() {
    let dir = fresh_dir("settings-resume");
    let model = dir.join("tiny.toml");
    std::fs::write(&model, TINY_MODEL).unwrap();
    let out = dir.join("run");
    let o = train(&out, &["--model", model.to_str().unwrap(), "--epochs", "1"]);
    assert!(o.status.success(), "{}", text(&o).1);
    let before = std::fs::read(out.join("config.json")).unwrap();
    for flags in [&["--lr", "0.5"][..], &["--model", "cnn"], &["--seed", "2"]] {
        let o = run(fergpu(["train", "--resume"]).arg(&out).args(flags));
        let (_, stderr) = text(&o);
        assert!(!o.status.success(), "{flags:?} accepted");
        assert!(
            stderr.contains(flags[0]) && stderr.contains("cannot change when resuming"),
            "{stderr}"
        );
    }
    assert_eq!(
        std::fs::read(out.join("config.json")).unwrap(),
        before,
        "a refused resume leaves config.json alone"
    );
    // Fewer epochs than already run is refused; more extend the run.
    let o = run(fergpu(["train", "--epochs", "1", "--resume"]).arg(&out));
    assert!(
        o.status.success(),
        "the same length is a no-op: {}",
        text(&o).1
    );
    let (_, _) = run_ok(
        fergpu([
            "train",
            "--epochs",
            "2",
            "--threads",
            "1",
            "--quiet",
            "--resume",
        ])
        .arg(&out),
    );
    let s = &read_json(&out.join("config.json"))["settings"];
    assert_eq!(s["schedule"]["epochs"], 2);
    assert_eq!(s["device"]["threads"], 1);
    let o = run(fergpu(["train", "--epochs", "1", "--resume"]).arg(&out));
    let (_, stderr) = text(&o);
    assert!(!o.status.success());
    assert!(stderr.contains("fewer than the 2 epochs"), "{stderr}");
}

#[test]
fn a_folder_that_holds_a_run_is_refused_unless_overwrite() {
    let dir = fresh_dir("settings-overwrite");
    let model = dir.join("tiny.toml");
    std::fs::write(&model, TINY_MODEL).unwrap();
    let m = model.to_str().unwrap();
    let out = dir.join("run");
    assert!(train(&out, &["--model", m, "--epochs", "1"])
        .status
        .success());
    let summary = std::fs::read(out.join("summary.json")).unwrap();
    let o = train(&out, &["--model", m, "--epochs", "1", "--seed", "3"]);
    let (_, stderr) = text(&o);
    assert!(!o.status.success());
    assert!(
        stderr.contains("already holds a run") && stderr.contains("--resume"),
        "{stderr}"
    );
    assert_eq!(std::fs::read(out.join("summary.json")).unwrap(), summary);
    let o = train(
        &out,
        &["--model", m, "--epochs", "1", "--seed", "3", "--overwrite"],
    );
    assert!(o.status.success(), "{}", text(&o).1);
    assert_eq!(
        read_json(&out.join("config.json"))["settings"]["run"]["seed"],
        3
    );
}

#[test]
fn the_shipped_recipes_load_and_validate() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/recipes");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let mut s = fergpu::settings::Settings::default();
        s.load_file(&path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        s.validate()
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        assert_eq!(
            s.model.model,
            name,
            "{} trains its own preset",
            path.display()
        );
        seen += 1;
    }
    assert!(seen >= 2, "recipes for compact and vgg");
}
