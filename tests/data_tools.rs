//! `fergpu info` (rows and per-class counts per split, bad rows) and `fergpu export-images`
//! (`<row>_<emotion>.png`, 48×48, and augmented copies) on a file written by `fergpu synth`.

mod support;

use fergpu::data::{csv, Dataset, Usage, EMOTIONS};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use support::{fergpu, fresh_dir, run, run_ok, text};

/// Writes 300 generated faces with `fergpu synth`; returns the file and the rows as loaded.
fn synth_file(dir: &Path) -> (PathBuf, Dataset) {
    let path = dir.join("faces.csv");
    run_ok(fergpu(["synth", "--rows", "300", "--seed", "51", "--out"]).arg(&path));
    let (ds, _) = csv::load(&path, &csv::LoadOptions::default()).unwrap();
    assert_eq!(ds.len(), 300);
    (path, ds)
}

/// `info`'s table: emotion (and `total`) → counts in Training, PublicTest, PrivateTest, All.
fn parse_info(stdout: &str) -> BTreeMap<String, [usize; 4]> {
    let mut lines = stdout.lines().skip_while(|l| !l.starts_with("emotion"));
    let head: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(
        head,
        ["emotion", "Training", "PublicTest", "PrivateTest", "All"]
    );
    let mut table = BTreeMap::new();
    for line in lines.take(EMOTIONS.len() + 1) {
        let cols: Vec<&str> = line.split_whitespace().collect();
        let n: Vec<usize> = cols[1..].iter().map(|c| c.parse().unwrap()).collect();
        table.insert(cols[0].to_string(), [n[0], n[1], n[2], n[3]]);
    }
    table
}

fn assert_counts_match(table: &BTreeMap<String, [usize; 4]>, ds: &Dataset) {
    for (c, name) in EMOTIONS.iter().enumerate() {
        let row = table[*name];
        for (i, usage) in Usage::ALL.iter().enumerate() {
            let want = ds.split(&[*usage]).class_counts()[c];
            assert_eq!(row[i], want, "{name} in {}", usage.name());
        }
        assert_eq!(row[3], ds.class_counts()[c], "{name} overall");
    }
    let total = table["total"];
    for (i, usage) in Usage::ALL.iter().enumerate() {
        assert_eq!(total[i], ds.rows_of(&[*usage]).len());
    }
    assert_eq!(total[3], ds.len());
}

#[test]
fn info_counts_each_class_in_each_split() {
    let dir = fresh_dir("info");
    let (path, ds) = synth_file(&dir);
    let (stdout, _) = run_ok(fergpu(["info", "--data"]).arg(&path));
    assert!(stdout.contains("300 rows"), "{stdout}");
    assert_counts_match(&parse_info(&stdout), &ds);
    assert!(!stdout.contains("bad rows"), "{stdout}");
}

#[test]
fn info_reports_bad_rows_by_line_and_counts_the_rest() {
    let dir = fresh_dir("info-bad");
    let (path, ds) = synth_file(&dir);
    let mut text_in = std::fs::read_to_string(&path).unwrap();
    // Header is line 1, so the 300 good rows are lines 2..=301.
    let pixels = vec!["7"; 2304].join(" ");
    text_in.push_str("9,Training,1 2 3\n");
    text_in.push_str(&format!("3,Nowhere,{pixels}\n"));
    text_in.push_str(&format!("2,PublicTest,{pixels} 300\n"));
    let bad = dir.join("with-bad-rows.csv");
    std::fs::write(&bad, text_in).unwrap();

    let (stdout, _) = run_ok(fergpu(["info", "--data"]).arg(&bad));
    assert!(stdout.contains("3 bad rows"), "{stdout}");
    for line in [302, 303, 304] {
        assert!(
            stdout.contains(&format!("with-bad-rows.csv:{line}:")),
            "line {line} not reported:\n{stdout}"
        );
    }
    assert!(stdout.contains("emotion"), "{stdout}");
    assert!(stdout.contains("Nowhere"), "{stdout}");
    assert_counts_match(&parse_info(&stdout), &ds);
}

#[test]
fn info_on_a_missing_file_is_an_error_naming_it() {
    let dir = fresh_dir("info-missing");
    let out = run(fergpu(["info", "--data"]).arg(dir.join("nope.csv")));
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(stderr.contains("nope.csv"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// `fergpu info … | head -0`: output into a pipe whose reader has gone ends the program as
/// SIGPIPE does for `cat`, without a panic message. Another test's child, forked while the
/// read end is open here, holds it until its `exec`; under heavy load that can outlast the
/// write, which then succeeds, so the check is tried up to five times (a SIGPIPE can only
/// come from a pipe with no reader, so a retry never passes a wrong program).
#[cfg(unix)]
#[test]
fn output_into_a_closed_pipe_ends_quietly() {
    use std::os::unix::process::ExitStatusExt;
    use std::process::Stdio;
    let dir = fresh_dir("info-pipe");
    let (path, _) = synth_file(&dir);
    let mut statuses = Vec::new();
    for _ in 0..5 {
        let mut child = fergpu(["info", "--data"])
            .arg(&path)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take()); // the reader goes before the CSV is even read
        let out = child.wait_with_output().unwrap();
        let (_, stderr) = text(&out);
        assert!(!stderr.contains("panicked"), "{stderr}");
        if out.status.signal() == Some(13) {
            return;
        }
        statuses.push(format!("{:?}: {stderr}", out.status));
    }
    panic!("no try ended by SIGPIPE: {statuses:?}");
}

#[test]
fn export_images_writes_named_48x48_pngs_of_the_chosen_rows() {
    let dir = fresh_dir("export");
    let (path, ds) = synth_file(&dir);
    let out = dir.join("images");
    run_ok(
        fergpu([
            "export-images",
            "--split",
            "PublicTest",
            "--limit",
            "5",
            "--data",
        ])
        .arg(&path)
        .arg("--out")
        .arg(&out),
    );
    let want: Vec<usize> = ds.rows_of(&[Usage::PublicTest])[..5].to_vec();
    let mut names: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let mut expected: Vec<String> = want
        .iter()
        .map(|&r| format!("{r}_{}.png", EMOTIONS[ds.labels[r] as usize]))
        .collect();
    expected.sort();
    assert_eq!(names, expected);
    for &r in &want {
        let name = format!("{r}_{}.png", EMOTIONS[ds.labels[r] as usize]);
        let img = image::open(out.join(name)).unwrap();
        assert_eq!((img.width(), img.height()), (48, 48));
        assert_eq!(img.color(), image::ColorType::L8);
        assert_eq!(img.to_luma8().as_raw().as_slice(), ds.image(r), "row {r}");
    }

    // Without --split, rows are taken from the start of the file.
    let all = dir.join("all");
    run_ok(
        fergpu(["export-images", "--limit", "3", "--data"])
            .arg(&path)
            .arg("--out")
            .arg(&all),
    );
    for r in 0..3 {
        let name = format!("{r}_{}.png", EMOTIONS[ds.labels[r] as usize]);
        assert!(all.join(&name).exists(), "{name} missing");
    }
    assert_eq!(std::fs::read_dir(&all).unwrap().count(), 3);
}

/// The luma bytes of a written PNG.
fn png_bytes(path: &Path) -> Vec<u8> {
    let img = image::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!((img.width(), img.height()), (48, 48));
    img.to_luma8().into_raw()
}

#[test]
fn export_images_writes_augmented_copies_as_training_draws_them() {
    let dir = fresh_dir("export-augment");
    let (path, ds) = synth_file(&dir);
    let export = |out: &Path, seed: &str| {
        run_ok(
            fergpu([
                "export-images",
                "--limit",
                "3",
                "--augment",
                "flip,shift=2",
                "--scale",
                "0.2",
                "--rotate",
                "20",
                "--erase",
                "1",
                "--copies",
                "2",
                "--seed",
                seed,
                "--data",
            ])
            .arg(&path)
            .arg("--out")
            .arg(out),
        )
    };
    let (a, b, c) = (dir.join("a"), dir.join("b"), dir.join("c"));
    let (_, stderr) = export(&a, "4");
    assert!(stderr.contains("wrote 9 images"), "{stderr}");
    export(&b, "4");
    export(&c, "5");
    for r in 0..3 {
        let emotion = EMOTIONS[ds.labels[r] as usize];
        assert_eq!(
            png_bytes(&a.join(format!("{r}_{emotion}.png"))),
            ds.image(r)
        );
        for k in 1..=2 {
            let name = format!("{r}_{emotion}_aug{k}.png");
            let copy = png_bytes(&a.join(&name));
            assert_eq!(copy, png_bytes(&b.join(&name)), "{name}: seeded");
            assert_ne!(copy, png_bytes(&c.join(&name)), "{name}: another seed");
            assert_ne!(copy, ds.image(r), "{name}: augmented");
        }
    }
    assert_eq!(std::fs::read_dir(&a).unwrap().count(), 9);

    // Out-of-range settings are refused with the flag and its range, before writing.
    let out = run(fergpu(["export-images", "--rotate", "400", "--data"])
        .arg(&path)
        .arg("--out")
        .arg(dir.join("bad")));
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(
        stderr.contains("--rotate") && stderr.contains("180"),
        "{stderr}"
    );
    assert!(!dir.join("bad").exists());
}
