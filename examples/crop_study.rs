//! Does a looser or tighter face crop change what a model answers? For FER2013 faces with
//! known labels, put in photo-like surroundings as `calibrate_crop` does (enlarged 4× with
//! half a frame of grey border), the SeetaFace detector finds each face and the model
//! classifies the square of `scale` × the box's side around the box's centre, for several
//! scales: the accuracy per scale is the evidence for `fergpu predict`'s crop
//! (`src/predict/crop.rs`, `FER_SCALE`). The original 48×48 frames give the ceiling.
//!
//! ```sh
//! cargo run --release --example crop_study -- ../shared/data/icml_face_data.csv.gz \
//!     --checkpoint runs/compact-s1/checkpoint-best.safetensors [--limit 1000] [--split PublicTest]
//! ```
//! (Without `--checkpoint`, the shipped model.) FER2013 is read where it lies, never copied.

use fergpu::backend::cpu::CpuBackend;
use fergpu::checkpoint::Checkpoint;
use fergpu::data::{csv, Dataset, Usage};
use fergpu::eval::evaluate_checkpoint;
use fergpu::predict::crop::{crop_to_input, Square};
use fergpu::predict::faces::{FaceBox, FaceDetector};
use image::{imageops, GrayImage, Luma};
use std::path::PathBuf;

/// Crop sides in detector-box sides; 1.10 is `predict`'s.
const SCALES: [f64; 8] = [0.8, 0.9, 1.0, 1.1, 1.2, 1.3, 1.45, 1.6];
const UPSCALE: u32 = 4;

fn main() {
    let mut args = std::env::args().skip(1);
    let (mut data, mut checkpoint): (Option<PathBuf>, Option<PathBuf>) = (None, None);
    let (mut split, mut limit) = (Usage::PublicTest, 1000usize);
    while let Some(a) = args.next() {
        let mut value = || args.next().expect("a value after the flag");
        match a.as_str() {
            "--split" => split = Usage::from_name(&value()).expect("a split name"),
            "--limit" => limit = value().parse().expect("a number"),
            "--checkpoint" => checkpoint = Some(PathBuf::from(value())),
            _ => data = Some(PathBuf::from(a)),
        }
    }
    let data = data.expect("usage: crop_study DATA.csv[.gz] [--checkpoint C] [flags]");
    let ck = match &checkpoint {
        Some(p) => Checkpoint::load(p).expect("the checkpoint loads"),
        None => fergpu::shipped::checkpoint().expect("the shipped model loads"),
    };
    let (ds, _) = csv::load(&data, &csv::LoadOptions::default()).expect("the data loads");
    let rows: Vec<usize> = ds.rows_of(&[split]).into_iter().take(limit).collect();

    let frame = 48 * UPSCALE;
    let pad = frame / 2;
    let mut detector = FaceDetector::new();
    // Per scale, the crops of the faces the detector found; and those faces' own frames.
    let mut crops: Vec<Dataset> = SCALES.iter().map(|_| Dataset::default()).collect();
    let mut frames = Dataset::default();
    for &r in &rows {
        let canvas = photo(ds.image(r), frame, pad);
        let Some(face) = nearest_to_centre(detector.detect(&canvas), f64::from(pad + frame / 2))
        else {
            continue;
        };
        for (set, &s) in crops.iter_mut().zip(&SCALES) {
            set.push(
                &crop_to_input(&canvas, square(&face, s)),
                ds.labels[r],
                split,
            );
        }
        frames.push(ds.image(r), ds.labels[r], split);
    }
    let be = CpuBackend::new(0);
    let accuracy = |set: &Dataset| {
        evaluate_checkpoint(&be, &ck, set, false)
            .expect("evaluation runs")
            .accuracy
    };
    println!(
        "{split:?}: the detector found {} of {} faces; accuracy of {} on them:",
        frames.len(),
        rows.len(),
        ck.spec.name
    );
    println!(
        "  the FER2013 frames themselves: {:.2}%",
        100.0 * accuracy(&frames)
    );
    for (set, s) in crops.iter().zip(SCALES) {
        println!(
            "  crop {s:.2} × the detector's box: {:.2}%",
            100.0 * accuracy(set)
        );
    }
}

/// A 48×48 face enlarged to `frame` pixels with `pad` pixels of mid-grey around it.
fn photo(face: &[u8], frame: u32, pad: u32) -> GrayImage {
    let small = GrayImage::from_raw(48, 48, face.to_vec()).expect("48×48");
    let big = imageops::resize(&small, frame, frame, imageops::FilterType::Triangle);
    GrayImage::from_fn(frame + 2 * pad, frame + 2 * pad, |x, y| {
        let inside = |v: u32| (pad..pad + frame).contains(&v);
        if inside(x) && inside(y) {
            *big.get_pixel(x - pad, y - pad)
        } else {
            Luma([128])
        }
    })
}

/// The detection whose centre is nearest `(centre, centre)`.
fn nearest_to_centre(found: Vec<FaceBox>, centre: f64) -> Option<FaceBox> {
    found.into_iter().min_by(|a, b| {
        let d = |f: &FaceBox| {
            let cx = f.x as f64 + f64::from(f.width) / 2.0 - centre;
            let cy = f.y as f64 + f64::from(f.height) / 2.0 - centre;
            cx * cx + cy * cy
        };
        d(a).total_cmp(&d(b))
    })
}

/// The square of `scale` × the box's side around the box's centre.
fn square(b: &FaceBox, scale: f64) -> Square {
    let side = f64::from(b.width.max(b.height));
    let s = (side * scale).round().max(1.0);
    let cx = b.x as f64 + f64::from(b.width) / 2.0;
    let cy = b.y as f64 + f64::from(b.height) / 2.0;
    Square {
        x: (cx - s / 2.0).round() as i64,
        y: (cy - s / 2.0).round() as i64,
        side: s as u32,
    }
}
