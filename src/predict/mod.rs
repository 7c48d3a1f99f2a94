//! `fergpu predict`: the emotions of the faces in photos, from files and folders.
//!
//! Each photo is decoded (PNG, JPEG, BMP; EXIF orientation applied) and converted to 8-bit
//! grayscale (the `image` crate's luma, Rec. 709 weights). Then, by [`output::Crop`]:
//! - **faces** (the default): the SeetaFace detector ([`faces`]) finds frontal faces, and
//!   each is cropped as FER2013 crops its faces ([`crop::fer_square`]);
//! - **whole image** (`--whole-image`, and automatically for images of 48×48 to 64×64
//!   pixels, which are taken as already-cropped faces): the centred square.
//!
//! Crops are resized to 48×48 (triangle filter) and classified in batches on the chosen
//! backend through [`crate::eval::evaluate_checkpoint`]. Files are read in chunks of
//! [`CHUNK`], faces detected in parallel, so memory stays bounded on any folder size.
//! A file that cannot be read is reported by name and the others go on.

pub mod annotate;
pub mod crop;
pub mod faces;
pub mod output;
pub mod walk;

use crate::backend::Backend;
use crate::checkpoint::Checkpoint;
use crate::data::{Dataset, Usage};
use crate::device::{run_on, DeviceChoice, Job};
use crate::error::{Error, Result};
use crate::report::printable;
use crate::shape::{IMAGE_PIXELS, NUM_CLASSES};
use crate::shipped::ModelSource;
use crop::Square;
use faces::{FaceBox, FaceDetector};
use image::{DynamicImage, GrayImage, ImageDecoder, ImageReader};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use output::{Crop, FacePrediction, ImagePrediction};
use rayon::prelude::*;
use std::cell::RefCell;
use std::collections::HashSet;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use walk::Input;

/// Files decoded and searched for faces before their faces are classified together.
pub const CHUNK: usize = 32;

/// What `fergpu predict` was asked to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PredictConfig {
    /// The model: a checkpoint written by `fergpu train`, or the shipped one.
    pub model: ModelSource,
    /// Image files and folders (walked recursively, see [`walk::expand`]).
    pub inputs: Vec<PathBuf>,
    /// One JSON object per image on stdout instead of text.
    pub json: bool,
    /// Also write one CSV row per face here.
    pub csv: Option<PathBuf>,
    /// Also write annotated copies of the photos into this folder.
    pub annotate: Option<PathBuf>,
    /// Classify the centred square of every image instead of detected faces.
    pub whole_image: bool,
    /// The backend that classifies.
    pub device: DeviceChoice,
}

/// What a `predict` run did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PredictSummary {
    /// Images read.
    pub images: usize,
    /// Faces classified (one per image in whole-image modes).
    pub faces: usize,
    /// Images in which the detector found no face.
    pub without_face: usize,
    /// Files or folders that could not be read, or whose annotated copy could not be
    /// written (each already reported on stderr).
    pub failed: usize,
}

impl std::fmt::Display for PredictSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} image{}, {} face{} classified, {} without a face, {} failed",
            self.images,
            plural(self.images),
            self.faces,
            plural(self.faces),
            self.without_face,
            self.failed
        )
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

/// Runs `fergpu predict`: predictions on stdout (text or JSON lines), errors and the summary
/// on stderr, a progress bar on stderr when it is a terminal, and the CSV and annotated
/// copies when asked. Unreadable inputs are counted in [`PredictSummary::failed`], not
/// returned as errors; a bad checkpoint, an unusable device or an unwritable `--csv` or
/// `--annotate` folder are.
pub fn run(cfg: &PredictConfig) -> Result<PredictSummary> {
    let ck = cfg.model.load()?;
    let (inputs, walk_errors) = walk::expand(&cfg.inputs);
    for e in &walk_errors {
        eprintln!("error: {}", printable(&e.to_string()));
    }
    if inputs.is_empty() && walk_errors.is_empty() {
        return Err(Error::Config(format!(
            "no PNG, JPEG or BMP files in {}",
            cfg.inputs
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    check_outputs(cfg, &inputs)?;
    if let Some(dir) = &cfg.annotate {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    let mut csv_rows = Vec::new();
    let mut summary = if inputs.is_empty() {
        PredictSummary::default()
    } else {
        let job = PredictJob {
            cfg,
            ck: &ck,
            inputs: &inputs,
            csv_rows: &mut csv_rows,
        };
        run_on(&cfg.device, job).map_err(|e| crate::eval::blame_checkpoint(cfg.model.path(), e))?
    };
    summary.failed += walk_errors.len();
    if let Some(path) = &cfg.csv {
        write_csv(path, &csv_rows)?;
        eprintln!("wrote {}", printable(&path.display().to_string()));
    }
    eprintln!("fergpu: {summary}");
    Ok(summary)
}

/// The most pixels a photo may have (8192 × 8192): a photo's size is read from its header
/// and checked before it is decoded, so a small file that declares a huge image costs
/// nothing (each decoded pixel takes up to 5 bytes here, on every decoding thread).
pub const MAX_IMAGE_PIXELS: u64 = 8192 * 8192;

/// Checks the files `predict` writes before it predicts: `--csv` is none of its inputs
/// (the checkpoint, a photo) and `--annotate` is no file.
fn check_outputs(cfg: &PredictConfig, inputs: &[Input]) -> Result<()> {
    if let Some(path) = &cfg.csv {
        let mut read = cfg.model.inputs();
        read.extend(
            inputs
                .iter()
                .map(|i| ("a photo to predict", i.path.as_path())),
        );
        crate::files::check_output(path, "--csv", &read)?;
    }
    match &cfg.annotate {
        Some(dir) if dir.exists() && !dir.is_dir() => Err(Error::Config(format!(
            "--annotate {}: a file, not a folder; name a folder for the annotated copies",
            dir.display()
        ))),
        _ => Ok(()),
    }
}

/// The photo at `path`, decoded by content (not by extension), EXIF orientation applied. A
/// file that is not a readable image, or whose header declares more than
/// [`MAX_IMAGE_PIXELS`], is [`Error::BadData`] naming it.
pub fn load_image(path: &Path) -> Result<DynamicImage> {
    // Read as a stream: a huge file is refused by its header before it is all read.
    let reader = ImageReader::open(path).map_err(|e| Error::io(path, e))?;
    decode(reader, path)
}

/// [`load_image`] of a file's bytes already read (a page's dropped photo); `path` only names
/// it in errors.
pub fn decode_image(bytes: &[u8], path: &Path) -> Result<DynamicImage> {
    decode(ImageReader::new(std::io::Cursor::new(bytes)), path)
}

/// Decodes what `reader` reads, as [`load_image`] says.
fn decode<R: std::io::BufRead + std::io::Seek>(
    reader: ImageReader<R>,
    path: &Path,
) -> Result<DynamicImage> {
    let bad = |e: &dyn std::fmt::Display| Error::BadData {
        path: path.into(),
        problem: format!("not a readable image (PNG, JPEG or BMP): {e}"),
    };
    let mut reader = reader
        .with_guessed_format()
        .map_err(|e| Error::io(path, e))?;
    // A backstop for what decoders allocate beyond the image itself.
    let mut limits = image::Limits::default();
    limits.max_alloc = Some(8 * MAX_IMAGE_PIXELS);
    reader.limits(limits);
    let mut decoder = reader.into_decoder().map_err(|e| bad(&e))?;
    let (w, h) = decoder.dimensions();
    if u64::from(w) * u64::from(h) > MAX_IMAGE_PIXELS {
        return Err(Error::BadData {
            path: path.into(),
            problem: format!(
                "the image is {w}×{h} pixels, over the {MAX_IMAGE_PIXELS} (8192×8192) that \
                 fergpu decodes; scale it down first"
            ),
        });
    }
    let orientation = decoder.orientation().map_err(|e| bad(&e))?;
    let mut img = DynamicImage::from_decoder(decoder).map_err(|e| bad(&e))?;
    img.apply_orientation(orientation);
    Ok(img)
}

/// Reads a photo and turns its centred square into the 48×48 grayscale pixels `(48·48)` a
/// model takes (the whole-image mode).
pub fn load_face(path: &Path) -> Result<Vec<u8>> {
    let gray = load_image(path)?.to_luma8();
    let (w, h) = gray.dimensions();
    Ok(crop::crop_to_input(&gray, crop::centre_square(w, h)))
}

/// One image read and cropped, before classification.
struct Prepared {
    width: u32,
    height: u32,
    crop: Crop,
    /// Per face: the detector's box (if any) and the square cropped.
    regions: Vec<(Option<FaceBox>, Square)>,
    /// The crops, `(faces, 48·48)`.
    pixels: Vec<u8>,
}

/// The regions of `gray` to classify and how they were chosen: the detector's faces with
/// their FER2013 squares, or the centred square (whole-image modes, see the module docs).
pub fn regions(
    detector: &mut FaceDetector,
    gray: &GrayImage,
    whole_image: bool,
) -> (Crop, Vec<(Option<FaceBox>, Square)>) {
    let (w, h) = gray.dimensions();
    let crop = if whole_image {
        Crop::WholeImage
    } else if crop::is_face_sized(w, h) {
        Crop::WholeImageAuto
    } else {
        Crop::Faces
    };
    let regions = match crop {
        Crop::Faces => detector
            .detect(gray)
            .into_iter()
            .map(|f| (Some(f), crop::fer_square(&f)))
            .collect(),
        _ => vec![(None, crop::centre_square(w, h))],
    };
    (crop, regions)
}

fn prepare(input: &Input, whole_image: bool) -> Result<Prepared> {
    thread_local! {
        static DETECTOR: RefCell<FaceDetector> = RefCell::new(FaceDetector::new());
    }
    let gray = load_image(&input.path)?.to_luma8();
    let (width, height) = gray.dimensions();
    let (crop, regions) = DETECTOR.with(|d| regions(&mut d.borrow_mut(), &gray, whole_image));
    let pixels = regions
        .iter()
        .flat_map(|&(_, sq)| crop::crop_to_input(&gray, sq))
        .collect();
    Ok(Prepared {
        width,
        height,
        crop,
        regions,
        pixels,
    })
}

/// The whole run on one backend.
struct PredictJob<'a> {
    cfg: &'a PredictConfig,
    ck: &'a Checkpoint,
    inputs: &'a [Input],
    csv_rows: &'a mut Vec<Vec<String>>,
}

impl Job for PredictJob<'_> {
    type Output = PredictSummary;

    fn run<B: Backend>(self, be: &B, device: &str) -> Result<PredictSummary> {
        let bar = progress_bar(self.inputs.len());
        let say = |line: &str, err: bool| {
            let print = || {
                if err {
                    eprintln!("{line}");
                } else {
                    println!("{line}");
                }
            };
            match &bar {
                Some(b) => b.suspend(print),
                None => print(),
            }
        };
        say(&format!("classifying on {device}"), true);
        let mut summary = PredictSummary::default();
        let mut annotated_names = HashSet::new();
        for chunk in self.inputs.chunks(CHUNK) {
            let prepared: Vec<Result<Prepared>> = chunk
                .par_iter()
                .map(|input| {
                    let p = prepare(input, self.cfg.whole_image);
                    if let Some(b) = &bar {
                        b.inc(1);
                    }
                    p
                })
                .collect();
            let mut ds = Dataset::default();
            for p in prepared.iter().flatten() {
                for face in p.pixels.chunks_exact(IMAGE_PIXELS) {
                    ds.push(face, 0, Usage::PublicTest);
                }
            }
            let probs = if ds.is_empty() {
                Vec::new()
            } else {
                crate::eval::evaluate_checkpoint(be, self.ck, &ds, true)?
                    .probs
                    .expect("probabilities were asked for")
            };
            assert_eq!(probs.len(), ds.len() * NUM_CLASSES);
            let mut next = probs.chunks_exact(NUM_CLASSES);
            for (input, p) in chunk.iter().zip(prepared) {
                let p = match p {
                    Ok(p) => p,
                    Err(e) => {
                        summary.failed += 1;
                        say(&format!("error: {}", printable(&e.to_string())), true);
                        continue;
                    }
                };
                let faces: Vec<FacePrediction> = p
                    .regions
                    .iter()
                    .map(|&(face, square)| FacePrediction {
                        face,
                        square,
                        probs: next
                            .next()
                            .expect("one probability row per face")
                            .try_into()
                            .expect("7 classes"),
                    })
                    .collect();
                let pred = ImagePrediction {
                    path: input.path.clone(),
                    width: p.width,
                    height: p.height,
                    crop: p.crop,
                    faces,
                };
                summary.images += 1;
                summary.faces += pred.faces.len();
                summary.without_face += usize::from(pred.faces.is_empty());
                if self.cfg.json {
                    say(&pred.json().to_string(), false);
                } else {
                    say(&pred.text(), false);
                }
                self.csv_rows.extend(pred.csv_rows());
                if let Some(dir) = &self.cfg.annotate {
                    let out = annotated_path(dir, &input.name, &mut annotated_names);
                    if let Err(e) = write_annotated(input, &out, &pred) {
                        summary.failed += 1;
                        say(&format!("error: {}", printable(&e.to_string())), true);
                    }
                }
                if let Some(b) = &bar {
                    b.set_message(format!("{} faces", summary.faces));
                }
            }
            assert!(next.next().is_none(), "every probability row was used");
        }
        if let Some(b) = bar {
            b.finish_and_clear();
        }
        Ok(summary)
    }
}

/// A bar over the files when stderr is a terminal and there is more than one file.
fn progress_bar(files: usize) -> Option<ProgressBar> {
    if files < 2 || !std::io::stderr().is_terminal() {
        return None;
    }
    let style = ProgressStyle::with_template(
        "predict [{bar:32.cyan/blue}] {pos}/{len} images  {msg}  {eta} left",
    )
    .expect("the bar template is valid")
    .progress_chars("=> ");
    Some(
        ProgressBar::with_draw_target(Some(files as u64), ProgressDrawTarget::stderr())
            .with_style(style),
    )
}

/// `dir/name`, made unique among the names already given out (`photo-2.jpg`, …).
fn annotated_path(dir: &Path, name: &Path, taken: &mut HashSet<PathBuf>) -> PathBuf {
    let mut path = dir.join(name);
    let stem = name
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "image".into());
    let ext = name
        .extension()
        .map(|e| format!(".{}", e.to_string_lossy()))
        .unwrap_or_default();
    let mut n = 1;
    while taken.contains(&path) {
        n += 1;
        path = dir.join(name).with_file_name(format!("{stem}-{n}{ext}"));
    }
    taken.insert(path.clone());
    path
}

/// Reads `input` again (decoded images are not kept between detection and
/// classification), draws `pred`'s faces on it and writes it to `out`.
fn write_annotated(input: &Input, out: &Path, pred: &ImagePrediction) -> Result<()> {
    let same = |a: &Path, b: &Path| matches!((a.canonicalize(), b.canonicalize()), (Ok(x), Ok(y)) if x == y);
    if same(out, &input.path) {
        return Err(Error::Config(format!(
            "{}: the annotated copy would overwrite the photo itself; choose another \
             --annotate folder",
            out.display()
        )));
    }
    let mut rgb = load_image(&input.path)?.to_rgb8();
    let marks: Vec<annotate::Mark> = pred
        .faces
        .iter()
        .enumerate()
        .map(|(i, f)| annotate::Mark {
            face: f.face,
            square: f.square,
            number: i + 1,
            class: f.top(),
            probability: f.probs[f.top()],
        })
        .collect();
    annotate::draw(out, &mut rgb, &marks)?;
    annotate::write(out, &rgb)
}

/// Writes the `--csv` file (header, then `rows`) atomically, or into a special file.
fn write_csv(path: &Path, rows: &[Vec<String>]) -> Result<()> {
    let mut w = csv::Writer::from_writer(Vec::new());
    let io = |e: csv::Error| Error::io(path, std::io::Error::other(e.to_string()));
    w.write_record(output::csv_header()).map_err(io)?;
    for r in rows {
        w.write_record(r).map_err(io)?;
    }
    let bytes = w
        .into_inner()
        .map_err(|e| Error::io(path, std::io::Error::other(e.to_string())))?;
    crate::files::write_output(path, &bytes)
}
