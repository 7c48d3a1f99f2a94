//! `fergpu predict` on photos of other sizes, colours and formats drawn from generated faces,
//! plus a file that is not an image: it is reported by name, the others are still predicted.

mod support;

use fergpu::cancel::Cancel;
use fergpu::data::{synth, Usage, EMOTIONS};
use fergpu::predict::load_face;
use fergpu::rng::Rng;
use fergpu::run::{train_on, Start};
use fergpu::settings::{Settings, Splits};
use image::{imageops, GrayImage, ImageFormat, Rgb, RgbImage, Rgba, RgbaImage};
use std::path::{Path, PathBuf};
use support::{fergpu, fresh_dir, run, text};

/// A briefly trained MLP's best checkpoint.
fn checkpoint(dir: &Path) -> PathBuf {
    let ds = synth::generate(300, 41);
    let splits = Splits {
        train: ds.split(&[Usage::Training]),
        val: ds.split(&[Usage::PrivateTest]),
        test: ds.split(&[Usage::PublicTest]),
    };
    let mut cfg = Settings::default();
    cfg.model.model = "mlp".into();
    cfg.schedule.epochs = 1;
    cfg.device.adapter = "cpu".into();
    cfg.run.out = Some(dir.join("run"));
    cfg.run.quiet = true;
    train_on(
        &cfg,
        &splits,
        Start::New { overwrite: false },
        &Cancel::new(),
    )
    .unwrap();
    dir.join("run").join("checkpoint-best.safetensors")
}

/// A generated 48×48 face of emotion `label` as a grayscale image.
fn face(label: u8, seed: u64) -> GrayImage {
    let px = synth::face(label, &mut Rng::new(seed));
    GrayImage::from_raw(48, 48, px).unwrap()
}

/// `face` scaled to `side`×`side` and centred on a `w`×`h` canvas of `fill`, tinted to RGB.
fn rgb_photo(face: &GrayImage, side: u32, w: u32, h: u32, fill: [u8; 3]) -> RgbImage {
    let big = imageops::resize(face, side, side, imageops::FilterType::Triangle);
    let mut img = RgbImage::from_pixel(w, h, Rgb(fill));
    let (x0, y0) = ((w - side) / 2, (h - side) / 2);
    for (x, y, p) in big.enumerate_pixels() {
        let v = p.0[0] as f32;
        img.put_pixel(
            x0 + x,
            y0 + y,
            Rgb([v as u8, (v * 0.9) as u8, (v * 0.8) as u8]),
        );
    }
    img
}

struct Photos {
    png: PathBuf,
    jpeg: PathBuf,
    bmp: PathBuf,
    text: PathBuf,
}

/// A 100×60 RGB PNG, a 48×48 grayscale JPEG, a 300×300 RGBA BMP and a text file.
fn photos(dir: &Path) -> Photos {
    let p = Photos {
        png: dir.join("wide rgb.png"),
        jpeg: dir.join("gray.jpg"),
        bmp: dir.join("big-rgba.bmp"),
        text: dir.join("notes.png"),
    };
    rgb_photo(&face(3, 1), 60, 100, 60, [200, 30, 30])
        .save_with_format(&p.png, ImageFormat::Png)
        .unwrap();
    face(5, 2)
        .save_with_format(&p.jpeg, ImageFormat::Jpeg)
        .unwrap();
    let rgb = rgb_photo(&face(0, 3), 300, 300, 300, [0, 0, 0]);
    let rgba = RgbaImage::from_fn(300, 300, |x, y| {
        let [r, g, b] = rgb.get_pixel(x, y).0;
        Rgba([r, g, b, 255])
    });
    rgba.save_with_format(&p.bmp, ImageFormat::Bmp).unwrap();
    // Named like an image, but text: the error must come from the content.
    std::fs::write(&p.text, "these are not pixels\n").unwrap();
    p
}

#[test]
fn predict_json_covers_every_readable_photo_and_names_the_bad_file() {
    let dir = fresh_dir("predict");
    let ckpt = checkpoint(&dir);
    let p = photos(&dir);
    let out = run(
        fergpu(["predict", "--json", "--adapter", "cpu", "--checkpoint"])
            .arg(&ckpt)
            .args([&p.png, &p.text, &p.jpeg, &p.bmp]),
    );
    let (stdout, stderr) = text(&out);
    assert!(
        !out.status.success(),
        "a bad file must fail the command\n{stderr}"
    );
    assert!(
        stderr.contains("notes.png"),
        "bad file not named:\n{stderr}"
    );
    assert!(stderr.contains("not a readable image"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");

    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert_eq!(
        lines.len(),
        3,
        "one JSON object per readable photo:\n{stdout}"
    );
    for (obj, path) in lines.iter().zip([&p.png, &p.jpeg, &p.bmp]) {
        assert_eq!(obj["image"], path.display().to_string());
        let probs = obj["probabilities"].as_object().unwrap();
        assert_eq!(probs.len(), 7);
        let values: Vec<f64> = EMOTIONS
            .iter()
            .map(|e| probs[*e].as_f64().unwrap())
            .collect();
        assert!(values.iter().all(|v| (0.0..=1.0).contains(v)), "{obj}");
        let sum: f64 = values.iter().sum();
        assert!(
            (sum - 1.0).abs() < 1e-4,
            "probabilities sum to {sum}: {obj}"
        );
        let top = (0..7).fold(0, |b, i| if values[i] > values[b] { i } else { b });
        assert_eq!(obj["emotion"], EMOTIONS[top], "{obj}");
    }
}

#[test]
fn predict_text_names_the_top_emotion_and_all_seven() {
    let dir = fresh_dir("predict-text");
    let ckpt = checkpoint(&dir);
    let p = photos(&dir);
    let out = run(fergpu(["predict", "--adapter", "cpu", "--checkpoint"])
        .arg(&ckpt)
        .arg(&p.jpeg));
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    let line = stdout.lines().next().unwrap();
    assert!(
        line.starts_with(&format!("{}: ", p.jpeg.display())),
        "{line}"
    );
    for e in EMOTIONS {
        assert!(line.contains(&format!("{e} ")), "{line}");
    }
    assert_eq!(line.matches('%').count(), 7, "{line}");
}

/// The crop keeps the centred square: a face centred on a wide canvas reads as the face
/// alone, whatever the canvas around it holds.
#[test]
fn photos_are_centre_cropped_then_resized_to_48() {
    let dir = fresh_dir("predict-crop");
    let f = face(4, 7);
    let wide = rgb_photo(&f, 60, 100, 60, [255, 0, 255]);
    let tall = rgb_photo(&f, 60, 60, 150, [0, 255, 0]);
    let square = rgb_photo(&f, 60, 60, 60, [0, 0, 0]);
    let mut loaded = Vec::new();
    for (name, img) in [("wide", &wide), ("tall", &tall), ("square", &square)] {
        let path = dir.join(format!("{name}.png"));
        img.save(&path).unwrap();
        let px = load_face(&path).unwrap();
        assert_eq!(px.len(), 48 * 48);
        loaded.push(px);
    }
    assert_eq!(loaded[0], loaded[2], "wide photo not centre-cropped");
    assert_eq!(loaded[1], loaded[2], "tall photo not centre-cropped");

    // A 48×48 grayscale photo is taken as it is (up to resampling rounding).
    let path = dir.join("exact.png");
    f.save(&path).unwrap();
    let px = load_face(&path).unwrap();
    let worst = px
        .iter()
        .zip(f.as_raw())
        .map(|(&a, &b)| (a as i32 - b as i32).abs())
        .max()
        .unwrap();
    assert!(worst <= 1, "48×48 gray changed by up to {worst}");
}
