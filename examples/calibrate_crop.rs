//! Measures where the SeetaFace detector puts its box inside FER2013 frames, which gives the
//! crop rule of `fergpu predict` (`src/predict/crop.rs`): the crop is the inverse of the box.
//!
//! Each 48×48 image of a split is enlarged `UPSCALE` times (triangle filter), surrounded by
//! half a frame of border (mid-grey or repeated edge pixels: the detector needs context
//! around a face that fills the frame), and searched. For the detection nearest the frame's
//! centre it records the frame's side in box sides and the frame centre's offset from the
//! box centre in box sides. It prints the medians and quartiles, the detection rate, and how
//! well the median rule recovers each frame (intersection over union).
//!
//! ```sh
//! cargo run --release --example calibrate_crop -- ../shared/data/icml_face_data.csv.gz \
//!     [--split PublicTest] [--limit 1000] [--upscale 4] [--border grey|edge]
//! ```
//! FER2013 itself is never copied into the project; this reads it where it lies.

use fergpu::data::{csv, Usage};
use fergpu::predict::faces::FaceDetector;
use image::{imageops, GrayImage, Luma};
use std::path::PathBuf;

fn main() {
    let mut args = std::env::args().skip(1);
    let mut data: Option<PathBuf> = None;
    let (mut split, mut limit, mut upscale, mut border) =
        (Usage::PublicTest, 1000usize, 4u32, "grey".to_string());
    while let Some(a) = args.next() {
        let mut value = || args.next().expect("a value after the flag");
        match a.as_str() {
            "--split" => split = Usage::from_name(&value()).expect("a split name"),
            "--limit" => limit = value().parse().expect("a number"),
            "--upscale" => upscale = value().parse().expect("a number"),
            "--border" => border = value(),
            _ => data = Some(PathBuf::from(a)),
        }
    }
    let data = data.expect("usage: calibrate_crop DATA.csv[.gz] [flags]");
    let (ds, _) = csv::load(&data, &csv::LoadOptions::default()).expect("the data loads");
    let rows: Vec<usize> = ds.rows_of(&[split]).into_iter().take(limit).collect();

    let frame = 48 * upscale;
    let pad = frame / 2;
    let mut detector = FaceDetector::new();
    let (mut scale, mut dx, mut dy) = (vec![], vec![], vec![]);
    let mut boxes = vec![];
    for &r in &rows {
        let small = GrayImage::from_raw(48, 48, ds.image(r).to_vec()).unwrap();
        let big = imageops::resize(&small, frame, frame, imageops::FilterType::Triangle);
        let canvas = GrayImage::from_fn(frame + 2 * pad, frame + 2 * pad, |x, y| {
            let inside = |v: u32| (pad..pad + frame).contains(&v);
            if border == "edge" || (inside(x) && inside(y)) {
                let cx = x.clamp(pad, pad + frame - 1) - pad;
                let cy = y.clamp(pad, pad + frame - 1) - pad;
                *big.get_pixel(cx, cy)
            } else {
                Luma([128])
            }
        });
        let centre = f64::from(pad + frame / 2);
        let best = detector.detect(&canvas).into_iter().min_by(|a, b| {
            let d = |f: &fergpu::predict::faces::FaceBox| {
                let cx = f.x as f64 + f64::from(f.width) / 2.0 - centre;
                let cy = f.y as f64 + f64::from(f.height) / 2.0 - centre;
                cx * cx + cy * cy
            };
            d(a).total_cmp(&d(b))
        });
        if let Some(f) = best {
            let side = f64::from(f.width);
            scale.push(f64::from(frame) / side);
            dx.push((centre - (f.x as f64 + side / 2.0)) / side);
            dy.push((centre - (f.y as f64 + side / 2.0)) / side);
            boxes.push(f);
        }
    }
    let found = scale.len();
    println!(
        "{split:?}: {found} of {} frames have a face ({:.1}%), upscale {upscale}, border {border}",
        rows.len(),
        100.0 * found as f64 / rows.len().max(1) as f64
    );
    let q = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        let at = |p: f64| v[((v.len() - 1) as f64 * p).round() as usize];
        (at(0.25), at(0.5), at(0.75))
    };
    let (s, x, y) = (
        q(&mut scale.clone()),
        q(&mut dx.clone()),
        q(&mut dy.clone()),
    );
    println!(
        "frame side / box side: median {:.3} (quartiles {:.3} .. {:.3})",
        s.1, s.0, s.2
    );
    println!(
        "centre shift x / box side: median {:+.3} (quartiles {:+.3} .. {:+.3})",
        x.1, x.0, x.2
    );
    println!(
        "centre shift y / box side: median {:+.3} (quartiles {:+.3} .. {:+.3})",
        y.1, y.0, y.2
    );

    // How well the median rule recovers each frame.
    let mut ious: Vec<f64> = boxes
        .iter()
        .map(|f| {
            let side = f64::from(f.width);
            let w = side * s.1;
            let x0 = f.x as f64 + side / 2.0 + x.1 * side - w / 2.0;
            let y0 = f.y as f64 + side / 2.0 + y.1 * side - w / 2.0;
            iou(
                (x0, y0, w),
                (f64::from(pad), f64::from(pad), f64::from(frame)),
            )
        })
        .collect();
    if !ious.is_empty() {
        let i = q(&mut ious);
        println!(
            "intersection over union of the rule's square with the frame: median {:.3} \
             (quartiles {:.3} .. {:.3})",
            i.1, i.0, i.2
        );
    }
}

/// Intersection over union of two squares `(x, y, side)`.
fn iou(a: (f64, f64, f64), b: (f64, f64, f64)) -> f64 {
    let ix = (a.0 + a.2).min(b.0 + b.2) - a.0.max(b.0);
    let iy = (a.1 + a.2).min(b.1 + b.2) - a.1.max(b.1);
    let inter = ix.max(0.0) * iy.max(0.0);
    inter / (a.2 * a.2 + b.2 * b.2 - inter)
}
