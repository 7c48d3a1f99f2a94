//! Recognition in the page: a checkpoint loaded onto the page's backend, classifying photos
//! (as `fergpu predict` does: same decoding, detector, crops and model, so the same
//! probabilities), camera frames, and ready-made 48×48 crops.

use crate::engine::{Device, Engine};
use crate::{busy, js_error};
use fergpu::backend::Backend;
use fergpu::checkpoint::Checkpoint;
use fergpu::data::{Dataset, Usage};
use fergpu::eval::{DeviceSet, Evaluator};
use fergpu::predict::crop::crop_to_input;
use fergpu::predict::faces::FaceDetector;
use fergpu::predict::output::{FacePrediction, ImagePrediction};
use fergpu::predict::{decode_image, regions};
use fergpu::shape::{IMAGE_PIXELS, NUM_CLASSES};
use image::{DynamicImage, GrayImage, RgbaImage};
use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::future_to_promise;

/// Faces classified per batch on the device (a photo rarely has more).
const BATCH: usize = 16;

/// A checkpoint's model on one backend, ready to classify.
struct Model<B: Backend + 'static> {
    be: &'static B,
    ev: Evaluator<'static, B>,
}

impl<B: Backend> Model<B> {
    fn new(be: &'static B, ck: &Checkpoint) -> fergpu::Result<Model<B>> {
        let mut ev = Evaluator::new(be, &ck.spec, &ck.params, BATCH)?;
        ev.set_params(&ck.params, &ck.running);
        Ok(Model { be, ev })
    }

    /// The probabilities `(n, 7)` of the crops `pixels (n, 48·48)`.
    async fn probs(&mut self, pixels: &[u8]) -> fergpu::Result<Vec<f32>> {
        if pixels.is_empty() {
            return Ok(Vec::new());
        }
        let mut ds = Dataset::default();
        for face in pixels.chunks_exact(IMAGE_PIXELS) {
            ds.push(face, 0, Usage::PublicTest);
        }
        let set = DeviceSet::new(self.be, &ds);
        let result = self.ev.evaluate_async(&set, true).await?;
        Ok(result.probs.expect("probabilities were asked for"))
    }
}

/// The model on whichever backend the engine has.
enum Loaded {
    Gpu(Box<Model<fergpu::backend::gpu::GpuBackend>>),
    Cpu(Box<Model<fergpu::backend::cpu::CpuBackend>>),
}

impl Loaded {
    async fn probs(&mut self, pixels: &[u8]) -> fergpu::Result<Vec<f32>> {
        match self {
            Loaded::Gpu(m) => m.probs(pixels).await,
            Loaded::Cpu(m) => m.probs(pixels).await,
        }
    }
}

/// What a classifier holds between calls; taken out while a call runs.
struct State {
    model: Loaded,
    detector: FaceDetector,
}

/// A checkpoint loaded for recognition.
#[wasm_bindgen]
pub struct Classifier {
    state: Rc<RefCell<Option<State>>>,
    name: String,
    describe: String,
}

#[wasm_bindgen]
impl Engine {
    /// Loads a checkpoint (the bytes of a `.safetensors` file written by `fergpu train` or by
    /// this page) onto the engine's backend. `name` names the file in errors.
    #[wasm_bindgen(js_name = loadModel)]
    pub fn load_model(&self, bytes: &[u8], name: &str) -> Result<Classifier, JsValue> {
        let ck = Checkpoint::from_bytes(bytes, Path::new(name)).map_err(js_error)?;
        let model = match self.dev {
            Device::Gpu(be) => Loaded::Gpu(Box::new(Model::new(be, &ck).map_err(js_error)?)),
            Device::Cpu(be) => Loaded::Cpu(Box::new(Model::new(be, &ck).map_err(js_error)?)),
        };
        let plan = fergpu::model::Plan::new(&ck.spec, 1).map_err(js_error)?;
        Ok(Classifier {
            state: Rc::new(RefCell::new(Some(State {
                model,
                detector: FaceDetector::new(),
            }))),
            name: ck.spec.name.clone(),
            describe: format!(
                "{} ({} parameters, {} layers)",
                ck.spec.name,
                plan.num_params,
                ck.spec.layers.len()
            ),
        })
    }
}

/// One face in a camera frame, for the page to draw.
#[derive(serde::Serialize)]
struct FrameFace {
    x: i64,
    y: i64,
    width: u32,
    height: u32,
    top: usize,
    probs: [f32; NUM_CLASSES],
}

#[wasm_bindgen]
impl Classifier {
    /// The model's name (`cnn`, `compact`, a model file's stem).
    #[wasm_bindgen(js_name = modelName)]
    pub fn model_name(&self) -> String {
        self.name.clone()
    }

    /// The model in one line: name, parameters, layers.
    pub fn describe(&self) -> String {
        self.describe.clone()
    }

    /// Classifies crops `pixels (n, 48·48)` (u8, row-major, FER2013's own format); resolves
    /// to a `Float32Array` of probabilities `(n, 7)`, as `fergpu eval --predictions` gives.
    #[wasm_bindgen(js_name = classifyCrops)]
    pub fn classify_crops(&self, pixels: Vec<u8>) -> js_sys::Promise {
        let state = self.state.clone();
        future_to_promise(async move {
            if !pixels.len().is_multiple_of(IMAGE_PIXELS) {
                return Err(js_error(format!(
                    "{} bytes are not whole 48×48 crops",
                    pixels.len()
                )));
            }
            let mut s = take(&state)?;
            let probs = s.model.probs(&pixels).await;
            state.replace(Some(s));
            let probs = probs.map_err(js_error)?;
            Ok(js_sys::Float32Array::from(&probs[..]).into())
        })
    }

    /// Classifies a photo (the bytes of a PNG, JPEG or BMP file) as `fergpu predict` does:
    /// the faces the detector finds, or the centred square when `whole_image` or when the
    /// photo is 48–64 pixels square. Resolves to the JSON text `fergpu predict --json` prints
    /// for it (boxes in the photo's pixels after its EXIF orientation).
    #[wasm_bindgen(js_name = predictPhoto)]
    pub fn predict_photo(
        &self,
        bytes: Vec<u8>,
        name: String,
        whole_image: bool,
    ) -> js_sys::Promise {
        let state = self.state.clone();
        future_to_promise(async move {
            let path = PathBuf::from(&name);
            let img = decode_image(&bytes, &path).map_err(js_error)?;
            let mut s = take(&state)?;
            let pred = s.predict(&img, &path, whole_image).await;
            state.replace(Some(s));
            let pred = pred.map_err(js_error)?;
            Ok(pred.json().to_string().into())
        })
    }

    /// Classifies the faces of one camera frame, `rgba (height, width, 4)` as a canvas's
    /// `getImageData` gives it; resolves to the JSON text of `[{x, y, width, height, top,
    /// probs}]`, one entry per face, boxes in the frame's pixels.
    #[wasm_bindgen(js_name = predictFrame)]
    pub fn predict_frame(&self, rgba: Vec<u8>, width: u32, height: u32) -> js_sys::Promise {
        let state = self.state.clone();
        future_to_promise(async move {
            let frame = RgbaImage::from_raw(width, height, rgba)
                .ok_or_else(|| js_error("the frame's size does not match its pixels"))?;
            let img = DynamicImage::ImageRgba8(frame);
            let mut s = take(&state)?;
            let pred = s.predict(&img, Path::new("camera"), false).await;
            state.replace(Some(s));
            let pred = pred.map_err(js_error)?;
            let faces: Vec<FrameFace> = pred
                .faces
                .iter()
                .map(|f| {
                    let (x, y, width, height) = f.region();
                    FrameFace {
                        x,
                        y,
                        width,
                        height,
                        top: f.top(),
                        probs: f.probs,
                    }
                })
                .collect();
            Ok(serde_json::to_string(&faces)
                .expect("faces serialize")
                .into())
        })
    }
}

impl State {
    /// `fergpu predict`'s pipeline on one decoded image: 8-bit luma, regions, 48×48 crops,
    /// the model's probabilities.
    async fn predict(
        &mut self,
        img: &DynamicImage,
        path: &Path,
        whole: bool,
    ) -> fergpu::Result<ImagePrediction> {
        let gray: GrayImage = img.to_luma8();
        let (width, height) = gray.dimensions();
        let (crop, regions) = regions(&mut self.detector, &gray, whole);
        let pixels: Vec<u8> = regions
            .iter()
            .flat_map(|&(_, sq)| crop_to_input(&gray, sq))
            .collect();
        let probs = self.model.probs(&pixels).await?;
        let faces = regions
            .iter()
            .zip(probs.chunks_exact(NUM_CLASSES))
            .map(|(&(face, square), p)| FacePrediction {
                face,
                square,
                probs: p.try_into().expect("7 classes"),
            })
            .collect();
        Ok(ImagePrediction {
            path: path.to_path_buf(),
            width,
            height,
            crop,
            faces,
        })
    }
}

/// The classifier's state, taken out for one call (an error if a call is already running).
fn take(state: &Rc<RefCell<Option<State>>>) -> Result<State, JsValue> {
    state.borrow_mut().take().ok_or_else(|| busy("classifier"))
}
