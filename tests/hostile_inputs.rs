//! No input eats the machine: every size a user controls is checked before anything is
//! allocated for it, with the limit in the message and never a panic or an abort. Photo
//! sizes are read from their headers (a 2 KB JPEG declaring 65500×65500 is refused at
//! once), bad CSV rows are counted with only a sample kept, and generated rows, sweep
//! grids, profile steps and the counts in a checkpoint are range-checked; a resumed
//! folder's best checkpoint must hold its model.

mod support;

use fergpu::checkpoint::Checkpoint;
use fergpu::data::csv::{load, LoadOptions, MAX_BAD_ROWS_KEPT};
use fergpu::data::synth;
use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};
use support::{fergpu, fresh_dir, run, run_ok, text};

/// Runs `cmd`, asserts it failed with an error message (no panic, no abort) within `secs`
/// seconds, and returns its stderr.
fn refused_within(cmd: &mut Command, secs: u64) -> String {
    let t = Instant::now();
    let out = run(cmd);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{cmd:?}:\n{stdout}\n{stderr}");
    assert!(
        stderr.contains("error: ") && !stderr.contains("panicked"),
        "{stderr}"
    );
    assert!(
        t.elapsed() < Duration::from_secs(secs),
        "{cmd:?} took {:?}",
        t.elapsed()
    );
    stderr
}

/// A small image encoded as `format`.
fn encoded(format: image::ImageFormat) -> Vec<u8> {
    let img = image::RgbImage::from_fn(16, 16, |x, y| image::Rgb([x as u8 * 9, y as u8 * 9, 7]));
    let mut bytes = std::io::Cursor::new(Vec::new());
    img.write_to(&mut bytes, format).unwrap();
    bytes.into_inner()
}

/// A JPEG of 16×16 pixels whose frame header (SOF0) declares `w`×`h`.
fn jpeg_declaring(w: u16, h: u16) -> Vec<u8> {
    let mut bytes = encoded(image::ImageFormat::Jpeg);
    let sof = bytes
        .windows(2)
        .position(|m| m == [0xFF, 0xC0])
        .expect("a baseline JPEG has SOF0");
    // FFC0, length (2), precision (1), height (2), width (2).
    bytes[sof + 5..sof + 7].copy_from_slice(&h.to_be_bytes());
    bytes[sof + 7..sof + 9].copy_from_slice(&w.to_be_bytes());
    bytes
}

/// A PNG of 16×16 pixels whose header (IHDR) declares `w`×`h`, its checksum fixed.
fn png_declaring(w: u32, h: u32) -> Vec<u8> {
    let mut bytes = encoded(image::ImageFormat::Png);
    // Signature (8), IHDR length (4), "IHDR" (4), width (4), height (4), 5 bytes, CRC (4).
    bytes[16..20].copy_from_slice(&w.to_be_bytes());
    bytes[20..24].copy_from_slice(&h.to_be_bytes());
    let crc = crc32(&bytes[12..29]);
    bytes[29..33].copy_from_slice(&crc.to_be_bytes());
    bytes
}

/// The CRC-32 PNG chunks carry (ISO-HDLC).
fn crc32(bytes: &[u8]) -> u32 {
    let mut c = !0u32;
    for &b in bytes {
        c ^= u32::from(b);
        for _ in 0..8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
        }
    }
    !c
}

#[test]
fn photos_declaring_huge_sizes_are_refused_from_their_headers_at_once() {
    let dir = fresh_dir("hi-photos");
    let run = support::train_small_mlp(&dir.join("run"));
    let ck = run.join("checkpoint-best.safetensors");
    let jpeg = dir.join("bomb.jpg");
    let bytes = jpeg_declaring(65500, 65500);
    assert!(bytes.len() < 4096, "{} bytes", bytes.len());
    std::fs::write(&jpeg, bytes).unwrap();
    let png = dir.join("bomb.png");
    std::fs::write(&png, png_declaring(30000, 30000)).unwrap();
    let fine = dir.join("fine.png");
    std::fs::write(&fine, encoded(image::ImageFormat::Png)).unwrap();
    let e = refused_within(
        fergpu(["predict", "--adapter", "cpu", "--checkpoint"])
            .arg(&ck)
            .args([&jpeg, &png, &fine]),
        20,
    );
    for (name, size) in [("bomb.jpg", "65500×65500"), ("bomb.png", "30000×30000")] {
        assert!(
            e.contains(name)
                && e.contains(&format!(
                    "the image is {size} pixels, over the 67108864 (8192×8192)"
                )),
            "{name}: {e}"
        );
    }
    assert!(e.contains("2 of the inputs could not be read"), "{e}");
    // Up to the limit is fine (the header alone is checked here; a real 8192² photo decodes).
    let img = fergpu::predict::load_image(&fine).unwrap();
    assert_eq!((img.width(), img.height()), (16, 16));
}

#[test]
fn bad_csv_rows_are_counted_and_only_a_sample_is_kept() {
    let dir = fresh_dir("hi-bad-rows");
    let path = dir.join("bad.csv.gz");
    let good = synth::generate(3, 1);
    let plain = dir.join("good.csv");
    fergpu::data::csv::write(&plain, &good).unwrap();
    let mut text = std::fs::read_to_string(&plain).unwrap();
    let bad = 200_000;
    text.push_str(&"x\n".repeat(bad));
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(text.as_bytes()).unwrap();
    std::fs::write(&path, gz.finish().unwrap()).unwrap();
    let opts = LoadOptions {
        skip_bad_rows: true,
    };
    let (ds, report) = load(&path, &opts).unwrap();
    assert_eq!((ds.len(), report.bad_rows), (3, bad));
    assert_eq!(report.skipped.len(), MAX_BAD_ROWS_KEPT);
    let (stdout, _) = run_ok(fergpu(["info", "--data"]).arg(&path));
    assert!(
        stdout.contains(&format!("{bad} bad rows:"))
            && stdout.contains(&format!("… and {} more", bad - 20)),
        "{stdout}"
    );
}

#[test]
fn generated_rows_and_profile_steps_are_checked_before_allocating() {
    let dir = fresh_dir("hi-sizes");
    let run = support::train_small_mlp(&dir.join("run"));
    let ck = run.join("checkpoint-best.safetensors");
    let data = dir.join("d.csv");
    support::write_synth_csv(&data, 60, 2);
    for n in ["100000000", "18446744073709551615"] {
        let e = refused_within(
            fergpu(["eval", "--adapter", "cpu", "--synthetic", n, "--checkpoint"]).arg(&ck),
            20,
        );
        assert!(
            e.contains(&format!(
                "--synthetic {n}: synthetic must be between 1 and 200000"
            )),
            "{e}"
        );
    }
    let e = refused_within(
        fergpu(["eval", "--adapter", "cpu", "--synthetic", "10", "--data"])
            .arg(&data)
            .arg("--checkpoint")
            .arg(&ck),
        20,
    );
    assert!(e.contains("--data and --synthetic both given"), "{e}");
    for (steps, words) in [
        (
            "100000000",
            "--steps 100000000: must be between 1 and 10000",
        ),
        ("18446744073709551615", "--steps 18446744073709551615"),
        ("0", "--steps 0"),
    ] {
        let e = refused_within(
            &mut fergpu(["profile", "--adapter", "cpu", "--steps", steps]),
            20,
        );
        assert!(e.contains(words), "{e}");
    }
    let e = refused_within(
        &mut fergpu([
            "profile",
            "--adapter",
            "cpu",
            "--batch-size",
            "65536",
            "--steps",
            "10",
        ]),
        20,
    );
    assert!(
        e.contains("would generate 720896 faces, over the 200000"),
        "{e}"
    );
}

#[test]
fn sweep_grids_of_too_many_runs_are_refused_naming_the_product_and_the_limit() {
    let dir = fresh_dir("hi-grid");
    let data = dir.join("d.csv");
    support::write_synth_csv(&data, 60, 2);
    for (keys, values) in [
        (["seed", "warmup", "epochs"].as_slice(), 1000),
        (
            [
                "seed",
                "warmup",
                "epochs",
                "batch_size",
                "patience",
                "limit",
            ]
            .as_slice(),
            5000,
        ),
    ] {
        let mut grid = String::from("[grid]\n");
        for k in keys {
            let list: Vec<String> = (1..=values).map(|v| v.to_string()).collect();
            grid.push_str(&format!("{k} = [{}]\n", list.join(", ")));
        }
        let path = dir.join("big.toml");
        std::fs::write(&path, grid).unwrap();
        let e = refused_within(
            fergpu(["sweep", "--adapter", "cpu", "--data"])
                .arg(&data)
                .arg("--out")
                .arg(dir.join("S"))
                .arg(&path),
            60,
        );
        let product = vec![values.to_string(); keys.len()].join(" × ");
        assert!(
            e.contains(&format!("[grid] asks for {product} runs, over the 10000")),
            "{e}"
        );
        assert!(!dir.join("S").exists());
    }
}

/// `path`, a checkpoint, with metadata `key` set to `value`.
fn with_metadata(path: &Path, key: &str, value: &str) {
    let bytes = std::fs::read(path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let mut header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    header["__metadata__"][key] = value.into();
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
fn counts_in_a_checkpoint_and_a_foreign_best_checkpoint_are_refused_before_training() {
    let dir = fresh_dir("hi-counts");
    let run = support::train_small_mlp(&dir.join("run"));
    let last = run.join("checkpoint-last.safetensors");
    let kept = std::fs::read(&last).unwrap();
    with_metadata(&last, "fergpu.optimizer_step", &u64::MAX.to_string());
    let e = refused_within(fergpu(["train", "--epochs", "2", "--resume"]).arg(&run), 30);
    assert!(
        e.contains("optimizer step 18446744073709551615 is over the 1099511627776"),
        "{e}"
    );
    std::fs::write(&last, kept).unwrap();

    // Another model's best checkpoint in the folder: refused before an epoch is trained.
    let other = dir.join("other");
    let tiny = dir.join("tiny.toml");
    std::fs::write(
        &tiny,
        "[[layers]]\ntype = \"conv2d\"\nfilters = 2\nkernel = 5\n[[layers]]\ntype = \"maxpool\"\n\
         size = 4\n[[layers]]\ntype = \"flatten\"\n[[layers]]\ntype = \"dense\"\nunits = 7\n",
    )
    .unwrap();
    run_ok(
        fergpu([
            "train",
            "--synthetic",
            "120",
            "--epochs",
            "1",
            "--adapter",
            "cpu",
            "--quiet",
        ])
        .arg("--model")
        .arg(&tiny)
        .arg("--out")
        .arg(&other),
    );
    let best = run.join("checkpoint-best.safetensors");
    std::fs::copy(other.join("checkpoint-best.safetensors"), &best).unwrap();
    let metrics = std::fs::read(run.join("metrics.csv")).unwrap();
    for _ in 0..2 {
        let e = refused_within(fergpu(["train", "--epochs", "2", "--resume"]).arg(&run), 30);
        assert!(
            e.contains("checkpoint-best.safetensors holds model 'tiny', but the run trains 'mlp'"),
            "{e}"
        );
        assert_eq!(std::fs::read(run.join("metrics.csv")).unwrap(), metrics);
    }
    assert_eq!(Checkpoint::load(&best).unwrap().spec.name, "tiny");
}
