//! `fergpu predict`: faces found in a public-domain photo (`tests/images/astronaut.jpg`, see
//! `tests/images/README.md`) and in a collage of it at other scales, the FER2013 crop rule,
//! the whole-image modes, folders with a bad file, CSV and annotated copies.

mod support;

use fergpu::backend::Activation;
use fergpu::checkpoint::Checkpoint;
use fergpu::data::{synth, EMOTIONS};
use fergpu::model::{ModelSpec, Plan};
use fergpu::predict::crop::{self, Square, FER_SCALE};
use fergpu::predict::faces::{FaceBox, FaceDetector};
use fergpu::predict::load_face;
use fergpu::rng::Rng;
use image::{imageops, GrayImage, ImageFormat, Luma, Rgb, RgbImage, Rgba, RgbaImage};
use std::path::{Path, PathBuf};
use support::{csv_rows, fergpu, fresh_dir, run, run_ok, text};

/// The test photo: Eileen Collins, NASA portrait, public domain (512×512).
fn astronaut_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/images/astronaut.jpg")
}

/// Where the detector finds the astronaut's face (x, y, side), measured once by hand.
const ASTRONAUT_FACE: (f64, f64, f64) = (173.0, 66.0, 101.0);

fn astronaut() -> RgbImage {
    image::open(astronaut_path()).unwrap().to_rgb8()
}

/// An untrained MLP checkpoint (Glorot weights from a fixed seed): predictions are
/// arbitrary but well-formed, which is all these tests read.
fn checkpoint(dir: &Path) -> PathBuf {
    let spec = ModelSpec::mlp(Activation::Relu);
    let params = Plan::new(&spec, 1).unwrap().init_params(5);
    let path = dir.join("mlp.safetensors");
    Checkpoint {
        spec,
        params,
        running: vec![],
        optimizer: None,
        train_state: None,
    }
    .save(&path)
    .unwrap();
    path
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

fn assert_box_near(got: &FaceBox, want: (f64, f64, f64), what: &str) {
    // The detector's pyramid quantises positions and sizes to a few percent of the face.
    let tol = (0.06 * want.2).max(3.0);
    let ok = (got.x as f64 - want.0).abs() <= tol
        && (got.y as f64 - want.1).abs() <= tol
        && (f64::from(got.width) - want.2).abs() <= tol
        && got.width == got.height;
    assert!(ok, "{what}: got {got:?}, want about {want:?} (±{tol:.1})");
}

#[test]
fn the_detector_finds_the_astronauts_face_where_expected() {
    let gray = image::open(astronaut_path()).unwrap().to_luma8();
    let faces = FaceDetector::new().detect(&gray);
    assert_eq!(faces.len(), 1, "{faces:?}");
    assert_box_near(&faces[0], ASTRONAUT_FACE, "astronaut.jpg");
    assert!(faces[0].score > 10.0, "{faces:?}");
}

/// The photo twice on a wider canvas: shrunk to 60% on the left, mirrored and shrunk to 45%
/// on the right. Both faces are found, left to right, where the transforms put them.
#[test]
fn the_detector_finds_two_faces_at_other_scales_left_to_right() {
    let src = astronaut();
    let mut canvas = RgbImage::from_pixel(900, 420, Rgb([90, 90, 90]));
    let a = imageops::resize(&src, 307, 307, imageops::FilterType::Triangle);
    let b = imageops::flip_horizontal(&imageops::resize(
        &src,
        230,
        230,
        imageops::FilterType::Triangle,
    ));
    imageops::replace(&mut canvas, &a, 40, 60);
    imageops::replace(&mut canvas, &b, 600, 150);
    let (x, y, s) = ASTRONAUT_FACE;
    let (ka, kb) = (307.0 / 512.0, 230.0 / 512.0);
    let want_a = (40.0 + x * ka, 60.0 + y * ka, s * ka);
    let want_b = (600.0 + (512.0 - x - s) * kb, 150.0 + y * kb, s * kb);
    let faces = FaceDetector::new().detect(&image::DynamicImage::ImageRgb8(canvas).to_luma8());
    assert_eq!(faces.len(), 2, "{faces:?}");
    assert_box_near(&faces[0], want_a, "60% copy");
    assert_box_near(&faces[1], want_b, "mirrored 45% copy");
}

/// A synthetic case of the crop rule: the square it names, painted white on black, is
/// exactly what reaches the model (all 48×48 pixels white), and one pixel more or less on
/// any side would let black in.
#[test]
fn the_crop_rule_takes_the_fer_square_around_the_box() {
    let b = FaceBox {
        x: 150,
        y: 100,
        width: 100,
        height: 100,
        score: 5.0,
    };
    let sq = crop::fer_square(&b);
    let side = (100.0 * FER_SCALE).round() as u32;
    assert_eq!(sq.side, side);
    // Centred on the box: FER2013 frames are centred on the detector's box (measured shift 0).
    assert_eq!(sq.x, 200 - i64::from(side) / 2);
    assert_eq!(sq.y, 150 - i64::from(side) / 2);
    let paint = |s: Square| {
        GrayImage::from_fn(400, 300, |x, y| {
            let inside = |v: u32, lo: i64| (lo..lo + i64::from(s.side)).contains(&i64::from(v));
            Luma([if inside(x, s.x) && inside(y, s.y) {
                255
            } else {
                0
            }])
        })
    };
    let px = crop::crop_to_input(&paint(sq), sq);
    assert_eq!(px.len(), 48 * 48);
    assert!(px.iter().all(|&v| v == 255), "black got into the crop");
    for shifted in [
        Square { x: sq.x + 1, ..sq },
        Square { y: sq.y - 1, ..sq },
        Square {
            side: sq.side - 1,
            ..sq
        },
    ] {
        let px = crop::crop_to_input(&paint(shifted), sq);
        assert!(px.iter().any(|&v| v < 250), "{shifted:?} looks the same");
    }
    // A face at the corner: the square reaches past the image, which repeats its edge.
    let corner = FaceBox {
        x: -10,
        y: -10,
        width: 60,
        height: 60,
        score: 5.0,
    };
    let sq = crop::fer_square(&corner);
    assert!(sq.x < 0 && sq.y < 0);
    let img = GrayImage::from_pixel(80, 80, Luma([77]));
    assert!(crop::crop_to_input(&img, sq).iter().all(|&v| v == 77));
}

/// The whole-image crop keeps the centred square: a face centred on a wide canvas reads as
/// the face alone, whatever the canvas around it holds.
#[test]
fn whole_image_photos_are_centre_cropped_then_resized_to_48() {
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

fn json_lines(stdout: &str) -> Vec<serde_json::Value> {
    stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// Probabilities of one JSON face: 7 values in 0..1 summing to 1, `emotion` their argmax.
fn check_face(face: &serde_json::Value) {
    let probs = face["probabilities"].as_object().unwrap();
    assert_eq!(probs.len(), 7);
    let values: Vec<f64> = EMOTIONS
        .iter()
        .map(|e| probs[*e].as_f64().unwrap())
        .collect();
    assert!(values.iter().all(|v| (0.0..=1.0).contains(v)), "{face}");
    let sum: f64 = values.iter().sum();
    assert!(
        (sum - 1.0).abs() < 1e-4,
        "probabilities sum to {sum}: {face}"
    );
    let top = (0..7).fold(0, |b, i| if values[i] > values[b] { i } else { b });
    assert_eq!(face["emotion"], EMOTIONS[top], "{face}");
}

/// Detection by default, the centred square for 48×48 to 64×64 images and for every image
/// with `--whole-image`; each image says which it got.
#[test]
fn predict_detects_faces_and_takes_small_images_whole() {
    let dir = fresh_dir("predict-modes");
    let ckpt = checkpoint(&dir);
    let small = dir.join("small 48.jpg");
    face(5, 2)
        .save_with_format(&small, ImageFormat::Jpeg)
        .unwrap();
    let odd = dir.join("odd 64x50.png");
    rgb_photo(&face(3, 1), 50, 64, 50, [10, 10, 10])
        .save(&odd)
        .unwrap();
    let blank = dir.join("blank.png");
    GrayImage::from_pixel(200, 150, Luma([128]))
        .save(&blank)
        .unwrap();
    let photo = astronaut_path();

    let (stdout, _) = run_ok(
        fergpu(["predict", "--json", "--adapter", "cpu", "--checkpoint"])
            .arg(&ckpt)
            .args([&photo, &small, &odd, &blank]),
    );
    let lines = json_lines(&stdout);
    assert_eq!(lines.len(), 4, "{stdout}");
    let crops: Vec<&str> = lines.iter().map(|l| l["crop"].as_str().unwrap()).collect();
    assert_eq!(
        crops,
        ["faces", "whole-image-auto", "whole-image-auto", "faces"]
    );
    let faces = lines[0]["faces"].as_array().unwrap();
    assert_eq!(faces.len(), 1, "{}", lines[0]);
    let b = &faces[0]["box"];
    let got = FaceBox {
        x: b["x"].as_i64().unwrap(),
        y: b["y"].as_i64().unwrap(),
        width: b["width"].as_u64().unwrap() as u32,
        height: b["height"].as_u64().unwrap() as u32,
        score: faces[0]["score"].as_f64().unwrap(),
    };
    assert_box_near(&got, ASTRONAUT_FACE, "predict --json");
    assert_eq!(lines[0]["width"], 512);
    for l in &lines[..3] {
        for f in l["faces"].as_array().unwrap() {
            check_face(f);
        }
    }
    assert_eq!(lines[1]["faces"][0]["score"], serde_json::Value::Null);
    assert_eq!(lines[1]["faces"][0]["box"]["width"], 48);
    assert_eq!(lines[2]["faces"][0]["box"]["width"], 50);
    assert!(lines[3]["faces"].as_array().unwrap().is_empty());

    // Text says the same, in words.
    let (stdout, _) = run_ok(
        fergpu(["predict", "--adapter", "cpu", "--checkpoint"])
            .arg(&ckpt)
            .args([&photo, &small, &blank]),
    );
    let text: Vec<&str> = stdout.lines().collect();
    assert_eq!(text.len(), 4, "{stdout}");
    assert_eq!(text[0], format!("{}: 1 face", photo.display()));
    assert!(text[1].starts_with("  face 1 at x="), "{}", text[1]);
    assert_eq!(text[1].matches('%').count(), 7, "{}", text[1]);
    assert!(text[2].starts_with(&format!("{}: ", small.display())));
    assert!(
        text[2].contains("[whole image: 48 to 64 pixels"),
        "{}",
        text[2]
    );
    for e in EMOTIONS {
        assert!(text[2].contains(&format!("{e} ")), "{}", text[2]);
    }
    assert!(text[3].contains("no face found"), "{}", text[3]);

    // --whole-image: every image is one centred square, the photo included.
    let (stdout, _) = run_ok(
        fergpu(["predict", "--json", "--whole-image", "--adapter", "cpu"])
            .arg("--checkpoint")
            .arg(&ckpt)
            .args([&photo, &blank]),
    );
    let lines = json_lines(&stdout);
    for l in &lines {
        assert_eq!(l["crop"], "whole-image", "{l}");
        assert_eq!(l["faces"].as_array().unwrap().len(), 1, "{l}");
        check_face(&l["faces"][0]);
    }
    assert_eq!(lines[1]["faces"][0]["box"]["width"], 150);
    assert_eq!(lines[1]["faces"][0]["box"]["x"], 25);
}

/// A folder walked recursively, with a file that is not an image among the photos: it is
/// named, the rest are predicted, the CSV has one row per face, annotated copies appear
/// under the same relative names, and the exit status is nonzero.
#[test]
fn predict_walks_folders_past_a_bad_file_with_csv_and_annotations() {
    let dir = fresh_dir("predict-folder");
    let ckpt = checkpoint(&dir);
    let photos = dir.join("photos");
    std::fs::create_dir_all(photos.join("sub")).unwrap();
    std::fs::copy(astronaut_path(), photos.join("astronaut.jpg")).unwrap();
    let rgba = {
        let rgb = rgb_photo(&face(0, 3), 60, 64, 64, [0, 0, 0]);
        RgbaImage::from_fn(64, 64, |x, y| {
            let [r, g, b] = rgb.get_pixel(x, y).0;
            Rgba([r, g, b, 255])
        })
    };
    rgba.save_with_format(photos.join("sub/face.bmp"), ImageFormat::Bmp)
        .unwrap();
    std::fs::write(photos.join("sub/broken.png"), "these are not pixels\n").unwrap();
    std::fs::write(photos.join("notes.txt"), "not an image, not read\n").unwrap();
    let csv = dir.join("faces.csv");
    let annotated = dir.join("annotated");

    let out = run(fergpu(["predict", "--adapter", "cpu", "--checkpoint"])
        .arg(&ckpt)
        .arg(&photos)
        .arg("--csv")
        .arg(&csv)
        .arg("--annotate")
        .arg(&annotated));
    let (stdout, stderr) = text(&out);
    assert!(
        !out.status.success(),
        "a bad file must fail the run\n{stderr}"
    );
    assert!(
        stderr.contains("broken.png"),
        "bad file not named:\n{stderr}"
    );
    assert!(stderr.contains("not a readable image"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(!stderr.contains("notes.txt"), "{stderr}");
    assert!(
        stderr.contains("2 images, 2 faces classified, 0 without a face, 1 failed"),
        "{stderr}"
    );
    assert!(stdout.contains("astronaut.jpg: 1 face"), "{stdout}");
    assert!(stdout.contains("face.bmp: "), "{stdout}");

    let rows = csv_rows(&csv);
    assert_eq!(
        rows[0][..9].join(","),
        "image,face,crop,x,y,width,height,score,emotion"
    );
    assert_eq!(rows[0].len(), 16);
    assert_eq!(rows.len(), 3, "{rows:?}");
    assert!(rows[1][0].ends_with("astronaut.jpg") && rows[1][2] == "faces");
    assert!(rows[2][0].ends_with("face.bmp") && rows[2][2] == "whole-image-auto");
    let probs: Vec<f64> = rows[1][9..].iter().map(|v| v.parse().unwrap()).collect();
    assert!((probs.iter().sum::<f64>() - 1.0).abs() < 1e-4, "{rows:?}");

    // The annotated photo: same size, changed along the face box, unchanged far from it.
    let a = image::open(annotated.join("astronaut.jpg"))
        .unwrap()
        .to_rgb8();
    let orig = astronaut();
    assert_eq!(a.dimensions(), orig.dimensions());
    let diff = |x0: u32, y0: u32, w: u32, h: u32| {
        let mut sum = 0u64;
        for y in y0..y0 + h {
            for x in x0..x0 + w {
                let (p, q) = (a.get_pixel(x, y).0, orig.get_pixel(x, y).0);
                sum += (0..3).map(|c| p[c].abs_diff(q[c]) as u64).sum::<u64>();
            }
        }
        sum as f64 / f64::from(3 * w * h)
    };
    let (fx, fy, fs) = (ASTRONAUT_FACE.0 as u32, ASTRONAUT_FACE.1 as u32, 101);
    // The box's left edge (the label sits above the top edge).
    let edge = diff(fx - 1, fy + 10, 4, fs - 20);
    let far = diff(400, 440, 60, 60);
    assert!(edge > 30.0 && far < 6.0, "edge {edge:.1}, far {far:.1}");
    assert!(annotated.join("sub/face.bmp").is_file());
    assert!(!annotated.join("sub/broken.png").exists());
}

#[test]
fn an_empty_folder_and_a_missing_checkpoint_are_clear_errors() {
    let dir = fresh_dir("predict-empty");
    let ckpt = checkpoint(&dir);
    std::fs::create_dir_all(dir.join("empty")).unwrap();
    let out = run(fergpu(["predict", "--adapter", "cpu", "--checkpoint"])
        .arg(&ckpt)
        .arg(dir.join("empty")));
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(stderr.contains("no PNG, JPEG or BMP files in"), "{stderr}");
    let out = run(fergpu(["predict", "--adapter", "cpu", "--checkpoint"])
        .arg(dir.join("nope.safetensors"))
        .arg(astronaut_path()));
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(stderr.contains("nope.safetensors"), "{stderr}");
}
