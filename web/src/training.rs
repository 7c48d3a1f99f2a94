//! Training in the page: the data (a FER2013 CSV streamed in chunks, or generated faces), the
//! settings (a preset and the page's fields, or a recipe TOML as native runs read), and a
//! training run the page advances a few batches at a time, awaiting the device in between
//! so that the page stays responsive and can stop and continue.

use crate::engine::{Device, Engine};
use crate::{busy, js_error};
use fergpu::backend::Backend;
use fergpu::checkpoint::Checkpoint;
use fergpu::data::csv::LoadOptions;
use fergpu::data::stream::CsvStream;
use fergpu::data::{synth, Dataset, Usage};
use fergpu::eval::{DeviceSet, EvalResult, Evaluator};
use fergpu::model::{ModelSpec, Plan};
use fergpu::settings::Settings;
use fergpu::train::{EpochRun, LrSchedule, Scheduler, Trainer};
use serde::Serialize;
use std::cell::RefCell;
use std::path::Path;
use std::rc::Rc;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::future_to_promise;
use web_time::Instant;

/// Bad rows listed by [`Data::summary`] (all are counted).
const SHOWN_BAD_ROWS: usize = 20;

/// A FER2013 CSV (plain or gzip) read chunk by chunk, with `fergpu train`'s checks and
/// messages (bad rows by line number).
#[wasm_bindgen]
pub struct CsvLoader {
    stream: Option<CsvStream>,
}

#[wasm_bindgen]
impl CsvLoader {
    /// A loader for the file `name` (used in messages); bad rows are skipped and listed when
    /// `skip_bad_rows`, else the first one is an error.
    #[wasm_bindgen(constructor)]
    pub fn new(name: &str, skip_bad_rows: bool) -> CsvLoader {
        let opts = LoadOptions { skip_bad_rows };
        CsvLoader {
            stream: Some(CsvStream::new(Path::new(name), &opts)),
        }
    }

    /// Parses the next chunk of the file.
    pub fn push(&mut self, chunk: &[u8]) -> Result<(), JsValue> {
        self.stream_mut()?.push(chunk).map_err(js_error)
    }

    /// Rows read so far.
    pub fn rows(&self) -> usize {
        self.stream.as_ref().map_or(0, CsvStream::rows)
    }

    /// Ends the file: the data set, with the bad rows skipped.
    pub fn finish(&mut self) -> Result<Data, JsValue> {
        let stream = self
            .stream
            .take()
            .ok_or_else(|| js_error("this CSV was finished already"))?;
        let (ds, report) = stream.finish().map_err(js_error)?;
        Ok(Data {
            ds,
            skipped: report.skipped.iter().map(ToString::to_string).collect(),
            seconds: report.seconds,
        })
    }

    fn stream_mut(&mut self) -> Result<&mut CsvStream, JsValue> {
        self.stream
            .as_mut()
            .ok_or_else(|| js_error("this CSV was finished already"))
    }
}

/// Images to train and test on.
#[wasm_bindgen]
pub struct Data {
    ds: Dataset,
    skipped: Vec<String>,
    seconds: f64,
}

/// What [`Data::summary`] tells.
#[derive(Serialize)]
struct DataSummary<'a> {
    rows: usize,
    per_split: Vec<(&'static str, usize)>,
    bad_rows: usize,
    first_bad_rows: &'a [String],
    seconds: f64,
}

#[wasm_bindgen]
impl Data {
    /// `n` generated faces (`fergpu synth`'s), split as FER2013 is (80% Training, 10% each
    /// PublicTest and PrivateTest).
    pub fn synthetic(n: usize, seed: u32) -> Data {
        Data {
            ds: synth::generate(n, u64::from(seed)),
            skipped: Vec::new(),
            seconds: 0.0,
        }
    }

    /// The JSON text of `{rows, per_split: [[name, rows]], bad_rows, first_bad_rows,
    /// seconds}`.
    pub fn summary(&self) -> String {
        let per_split = [Usage::Training, Usage::PublicTest, Usage::PrivateTest]
            .into_iter()
            .map(|u| (u.name(), self.ds.rows_of(&[u]).len()))
            .collect();
        let shown = self.skipped.len().min(SHOWN_BAD_ROWS);
        serde_json::to_string(&DataSummary {
            rows: self.ds.len(),
            per_split,
            bad_rows: self.skipped.len(),
            first_bad_rows: &self.skipped[..shown],
            seconds: self.seconds,
        })
        .expect("summary serializes")
    }

    /// Rows `(n, 48·48)` u8 pixels of split `split` (`Training`, `PublicTest`,
    /// `PrivateTest`), at most `limit` (0: all); the labels come from [`Data::labels`].
    pub fn pixels(&self, split: &str, limit: usize) -> Result<Vec<u8>, JsValue> {
        Ok(self.subset(split, limit)?.pixels)
    }

    /// The labels `(n)` of [`Data::pixels`]'s rows.
    pub fn labels(&self, split: &str, limit: usize) -> Result<Vec<u8>, JsValue> {
        Ok(self.subset(split, limit)?.labels)
    }

    fn subset(&self, split: &str, limit: usize) -> Result<Dataset, JsValue> {
        let usage = Usage::from_name(split).ok_or_else(|| {
            js_error(format!(
                "unknown split '{split}': Training, PublicTest or PrivateTest"
            ))
        })?;
        let mut rows = self.ds.rows_of(&[usage]);
        if limit > 0 {
            rows.truncate(limit);
        }
        Ok(self.ds.subset(&rows))
    }
}

/// The settings of a page's run: `fergpu train`'s defaults, then the recipe (TOML, as
/// `--config` reads it) if any, then the page's fields (given as a JSON object of setting
/// names, as a recipe's keys are), checked as native runs check them.
fn settings(recipe: Option<String>, fields: &str) -> fergpu::Result<Settings> {
    let mut s = Settings::default();
    if let Some(text) = recipe.filter(|t| !t.trim().is_empty()) {
        s.load_text(&text, Path::new("recipe.toml"))?;
    }
    let tree: serde_json::Map<String, serde_json::Value> = serde_json::from_str(fields)
        .map_err(|e| fergpu::Error::Config(format!("the page's settings: {e}")))?;
    s.apply_tree(&tree, "the page's settings")?;
    s.validate()?;
    Ok(s)
}

/// One epoch's figures, for the curves.
#[derive(Clone, Serialize)]
struct EpochRecord {
    epoch: usize,
    lr: f64,
    train_loss: f64,
    train_acc: f64,
    val_loss: f64,
    val_acc: f64,
    seconds: f64,
}

/// What one [`Training::advance`] call did.
#[derive(Serialize)]
struct Progress {
    /// Epochs completed.
    epoch: usize,
    epochs: usize,
    /// Batches of the current epoch done, of `batches`.
    batch: usize,
    batches: usize,
    /// The running training loss and accuracy of the current epoch.
    running: (f64, f64),
    /// Every epoch completed so far.
    history: Vec<EpochRecord>,
    /// All epochs are done.
    done: bool,
    /// Training images per second over the run so far (device time included).
    images_per_second: f64,
}

/// A test-split evaluation, for the page.
#[derive(Serialize)]
struct TestReport {
    images: usize,
    loss: f64,
    accuracy: f64,
    macro_f1: f64,
    /// Rows true, columns predicted.
    confusion: Vec<Vec<u64>>,
}

impl From<&EvalResult> for TestReport {
    fn from(r: &EvalResult) -> TestReport {
        TestReport {
            images: r.confusion.total() as usize,
            loss: r.loss,
            accuracy: r.accuracy,
            macro_f1: r.confusion.macro_f1(),
            confusion: r.confusion.counts.iter().map(|row| row.to_vec()).collect(),
        }
    }
}

/// A run on one backend.
struct Session<B: Backend + 'static> {
    trainer: Trainer<'static, B>,
    scheduler: Scheduler,
    epochs: usize,
    /// The epoch under way, if one was begun.
    current: Option<EpochRun>,
    val: DeviceSet<B>,
    test: DeviceSet<B>,
    ev: Evaluator<'static, B>,
    history: Vec<EpochRecord>,
    /// Time spent in [`Session::advance`] and images trained in it.
    seconds: f64,
    images: usize,
    /// Images of the current epoch trained so far (what its batches reported last).
    epoch_images: usize,
    epoch_started: Option<Instant>,
}

impl<B: Backend> Session<B> {
    fn new(be: &'static B, s: &Settings, data: &Dataset) -> fergpu::Result<Session<B>> {
        let splits = s.data.split(data);
        for (name, set) in [("validation", &splits.val), ("test", &splits.test)] {
            if set.is_empty() {
                return Err(fergpu::Error::Config(format!(
                    "the {name} split has no images; the data needs rows of every split"
                )));
            }
        }
        let spec =
            ModelSpec::resolve(&s.model.model, s.model.activation, s.model.dense_activation)?;
        let plan = Plan::new(&spec, 1)?;
        plan.check_batch(s.run.batch_size, &be.memory_limits(), &be.name())?;
        let params = plan.init_params(s.run.seed);
        let trainer = Trainer::new(
            be,
            spec.clone(),
            &params,
            &splits.train,
            &s.trainer_options(),
        )?;
        let schedule = LrSchedule::parse(&s.schedule.lr_schedule)?;
        let most = splits.val.len().max(splits.test.len());
        Ok(Session {
            trainer,
            scheduler: Scheduler::new(schedule, s.optimizer.lr, s.schedule.epochs),
            epochs: s.schedule.epochs,
            current: None,
            val: DeviceSet::new(be, &splits.val),
            test: DeviceSet::new(be, &splits.test),
            ev: Evaluator::new(be, &spec, &params, most)?,
            history: Vec::new(),
            seconds: 0.0,
            images: 0,
            epoch_images: 0,
            epoch_started: None,
        })
    }

    /// Trains up to `batches` batches (fewer at the epoch's end); at an epoch's end reads
    /// its statistics, validates and moves the schedule on.
    async fn advance(&mut self, batches: usize) -> fergpu::Result<Progress> {
        let started = Instant::now();
        let done = self.trainer.state().epoch >= self.epochs;
        if !done {
            let lr = self.scheduler.lr();
            let epoch_started = *self.epoch_started.get_or_insert(started);
            let current = match &mut self.current {
                Some(e) => e,
                None => self.current.insert(self.trainer.begin_epoch()),
            };
            let mut last = self.epoch_images;
            for _ in 0..batches {
                let Some(b) = self.trainer.train_batch(current, lr) else {
                    break;
                };
                self.images += b.images - last;
                last = b.images;
            }
            self.epoch_images = last;
            let at_end = self.trainer.state().next_batch >= self.trainer.batches_per_epoch();
            if at_end {
                self.end_epoch(lr, epoch_started).await?;
            }
        }
        let running = self.trainer.running_stats_async().await;
        self.seconds += started.elapsed().as_secs_f64();
        Ok(self.progress(running))
    }

    /// Ends the current epoch: its statistics, the validation pass, the schedule.
    async fn end_epoch(&mut self, lr: f64, started: Instant) -> fergpu::Result<()> {
        let epoch = self.current.take().expect("an epoch is under way");
        let outcome = self.trainer.finish_epoch_async(epoch).await;
        self.ev
            .load_params(self.trainer.params_tensor(), self.trainer.running_tensor());
        let val = self.ev.evaluate_async(&self.val, false).await?;
        self.scheduler.end_epoch(val.loss, val.accuracy);
        self.history.push(EpochRecord {
            epoch: self.trainer.state().epoch,
            lr,
            train_loss: outcome.loss,
            train_acc: outcome.accuracy,
            val_loss: val.loss,
            val_acc: val.accuracy,
            seconds: started.elapsed().as_secs_f64(),
        });
        self.epoch_started = None;
        self.epoch_images = 0;
        Ok(())
    }

    fn progress(&self, running: (f64, f64)) -> Progress {
        Progress {
            epoch: self.trainer.state().epoch,
            epochs: self.epochs,
            batch: self.trainer.state().next_batch,
            batches: self.trainer.batches_per_epoch(),
            running,
            history: self.history.clone(),
            done: self.trainer.state().epoch >= self.epochs,
            images_per_second: self.images as f64 / self.seconds.max(1e-9),
        }
    }

    /// The test split evaluated with the current weights.
    async fn test(&mut self) -> fergpu::Result<TestReport> {
        self.ev
            .load_params(self.trainer.params_tensor(), self.trainer.running_tensor());
        Ok(TestReport::from(
            &self.ev.evaluate_async(&self.test, false).await?,
        ))
    }

    /// The current weights as a checkpoint.
    async fn checkpoint(&self) -> Checkpoint {
        Checkpoint {
            spec: self.trainer.spec().clone(),
            params: self.trainer.params_async().await,
            running: self.trainer.running_async().await,
            optimizer: None,
            train_state: None,
        }
    }
}

/// A run on whichever backend the engine has.
enum AnySession {
    Gpu(Box<Session<fergpu::backend::gpu::GpuBackend>>),
    Cpu(Box<Session<fergpu::backend::cpu::CpuBackend>>),
}

/// Runs `$body` with `$s` bound to the session, whichever backend it is on.
macro_rules! on_session {
    ($any:expr, $s:ident => $body:expr) => {
        match $any {
            AnySession::Gpu($s) => $body,
            AnySession::Cpu($s) => $body,
        }
    };
}

/// A training run in the page: settings fixed, data on the device, advanced by the page.
#[wasm_bindgen]
pub struct Training {
    session: Rc<RefCell<Option<AnySession>>>,
    summary: String,
}

#[wasm_bindgen]
impl Engine {
    /// Starts a training run on `data` with `fergpu train`'s settings: the defaults, the
    /// recipe TOML `recipe` (may be empty), then `fields` (a JSON object of setting names to
    /// values, e.g. `{"model": "cnn", "epochs": 2, "batch_size": 32}`). Errors are the
    /// native checks' messages.
    #[wasm_bindgen(js_name = startTraining)]
    pub fn start_training(
        &self,
        data: &Data,
        recipe: Option<String>,
        fields: &str,
    ) -> Result<Training, JsValue> {
        let s = settings(recipe, fields).map_err(js_error)?;
        let session = match self.dev {
            Device::Gpu(be) => {
                AnySession::Gpu(Box::new(Session::new(be, &s, &data.ds).map_err(js_error)?))
            }
            Device::Cpu(be) => {
                AnySession::Cpu(Box::new(Session::new(be, &s, &data.ds).map_err(js_error)?))
            }
        };
        let (train, batches) =
            on_session!(&session, x => (x.trainer.train_len(), x.trainer.batches_per_epoch()));
        let summary = format!(
            "{} on {}: {} training images, {} batches of {} per epoch, {} epochs, lr {}",
            s.model.model,
            self.dev.name(),
            train,
            batches,
            s.run.batch_size,
            s.schedule.epochs,
            s.optimizer.lr
        );
        Ok(Training {
            session: Rc::new(RefCell::new(Some(session))),
            summary,
        })
    }
}

#[wasm_bindgen]
impl Training {
    /// The run in one line: model, device, images, batches, epochs.
    pub fn summary(&self) -> String {
        self.summary.clone()
    }

    /// Trains up to `batches` more batches (an epoch's end validates); resolves to the JSON
    /// text of `{epoch, epochs, batch, batches, running: [loss, acc], history: [{epoch, lr,
    /// train_loss, train_acc, val_loss, val_acc, seconds}], done, images_per_second}`.
    /// Stopping is not calling it again; continuing is calling it.
    pub fn advance(&self, batches: usize) -> js_sys::Promise {
        let cell = self.session.clone();
        future_to_promise(async move {
            let mut s = take(&cell)?;
            let p = on_session!(&mut s, x => x.advance(batches.max(1)).await);
            cell.replace(Some(s));
            let p = p.map_err(js_error)?;
            Ok(serde_json::to_string(&p)
                .expect("progress serializes")
                .into())
        })
    }

    /// Evaluates the test split with the current weights; resolves to the JSON text of
    /// `{images, loss, accuracy, macro_f1, confusion: 7×7 rows true, columns predicted}`.
    pub fn test(&self) -> js_sys::Promise {
        let cell = self.session.clone();
        future_to_promise(async move {
            let mut s = take(&cell)?;
            let r = on_session!(&mut s, x => x.test().await);
            cell.replace(Some(s));
            let r = r.map_err(js_error)?;
            Ok(serde_json::to_string(&r).expect("report serializes").into())
        })
    }

    /// The current weights as a checkpoint file (`Uint8Array`, safetensors in fergpu's
    /// layout: `fergpu eval --checkpoint` and PyTorch read it).
    pub fn checkpoint(&self) -> js_sys::Promise {
        self.export(|ck| ck.to_bytes(Path::new("model.safetensors")))
    }

    /// The current weights as an ONNX model (`Uint8Array`) with a softmax output, as `fergpu
    /// export` writes.
    pub fn onnx(&self) -> js_sys::Promise {
        self.export(|ck| Ok(fergpu::export::onnx::model_bytes(ck, true)))
    }

    fn export(&self, bytes: fn(&Checkpoint) -> fergpu::Result<Vec<u8>>) -> js_sys::Promise {
        let cell = self.session.clone();
        future_to_promise(async move {
            let s = take(&cell)?;
            let ck = on_session!(&s, x => x.checkpoint().await);
            cell.replace(Some(s));
            let out = bytes(&ck).map_err(js_error)?;
            Ok(js_sys::Uint8Array::from(&out[..]).into())
        })
    }
}

/// The session, taken out for one call (an error if a call is already running).
fn take(cell: &Rc<RefCell<Option<AnySession>>>) -> Result<AnySession, JsValue> {
    cell.borrow_mut().take().ok_or_else(|| busy("training run"))
}
