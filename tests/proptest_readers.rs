//! Property tests of the three readers of user files: the FER2013 CSV reader, the model-file
//! reader and the checkpoint reader. Arbitrary bytes and mutations of valid files never
//! panic, never hang (each read is timed), and whatever a reader accepts is valid: every row
//! a CSV load returns is one of the file's rows and no undamaged row is lost, every model
//! accepted fits the machine, every checkpoint accepted holds finite numbers of its model's
//! sizes. Case counts keep each property to about a second.

use fergpu::checkpoint::{Checkpoint, OptimizerState};
use fergpu::data::csv::{load, LoadOptions};
use fergpu::data::{synth, Dataset};
use fergpu::model::{ModelLimits, ModelSpec, Plan};
use fergpu::Error;
use proptest::prelude::*;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A file for one property's cases under cargo's per-target temporary folder.
fn case_file(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("proptest-readers");
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

/// Asserts a read took less than two seconds (the files here are at most tens of KB).
fn quick<T>(what: &str, f: impl FnOnce() -> T) -> T {
    let t = Instant::now();
    let out = f();
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "{what} took {:?}",
        t.elapsed()
    );
    out
}

// ---- CSV --------------------------------------------------------------------------------

/// The rows of a generated data set in the icml layout, one `String` per line (no break).
fn icml_lines(ds: &Dataset) -> Vec<String> {
    let mut lines = vec!["emotion,Usage,pixels".to_string()];
    for i in 0..ds.len() {
        let px: Vec<String> = ds.image(i).iter().map(|p| p.to_string()).collect();
        let px = px.join(" ");
        // Every other row quotes its pixels, as copies of fer2013.csv do.
        let px = if i % 2 == 0 { format!("\"{px}\"") } else { px };
        lines.push(format!("{},{},{px}", ds.labels[i], ds.usage[i].name()));
    }
    lines
}

/// Bytes a damaged file may gain: the ones that matter to CSV, and two that do not belong.
const DAMAGE: [u8; 7] = [b'"', b',', b'\r', b'\n', 0, 0x1b, b'x'];

/// One edit of a file: at a position (a fraction of its length), insert or overwrite a byte.
#[derive(Clone, Debug)]
struct Edit {
    at: f64,
    byte: u8,
    insert: bool,
}

fn edits() -> impl Strategy<Value = Vec<Edit>> {
    prop::collection::vec(
        (
            0.0..1.0f64,
            prop::sample::select(DAMAGE.to_vec()),
            any::<bool>(),
        )
            .prop_map(|(at, byte, insert)| Edit { at, byte, insert }),
        1..4,
    )
}

/// Applies `edits` to `bytes`; returns the damaged bytes and the original positions hit.
fn damage(bytes: &[u8], edits: &[Edit]) -> (Vec<u8>, Vec<usize>) {
    // Positions in the original, applied from the back so earlier ones stay valid.
    let mut at: Vec<(usize, &Edit)> = edits
        .iter()
        .map(|e| (((bytes.len() as f64) * e.at) as usize, e))
        .collect();
    at.sort_by_key(|&(p, _)| std::cmp::Reverse(p));
    let mut out = bytes.to_vec();
    for &(p, e) in &at {
        if e.insert || p >= out.len() {
            out.insert(p, e.byte);
        } else {
            out[p] = e.byte;
        }
    }
    (out, at.iter().map(|&(p, _)| p).collect())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Any bytes, after a valid header or not: no panic, and what loads is whole rows.
    #[test]
    fn csv_arbitrary_bytes_never_panic(
        header in any::<bool>(),
        body in prop::collection::vec(any::<u8>(), 0..3000),
        skip in any::<bool>(),
    ) {
        let mut bytes = if header { b"emotion,Usage,pixels\n".to_vec() } else { Vec::new() };
        bytes.extend_from_slice(&body);
        let path = case_file("arbitrary.csv");
        std::fs::write(&path, &bytes).unwrap();
        let opts = LoadOptions { skip_bad_rows: skip };
        match quick("csv load", || load(&path, &opts)) {
            Ok((ds, report)) => {
                prop_assert_eq!(report.rows, ds.len());
                prop_assert_eq!(ds.pixels.len(), ds.len() * 48 * 48);
                prop_assert!(ds.labels.iter().all(|&l| l < 7));
            }
            Err(Error::BadData { .. } | Error::BadRow { .. }) => {}
            Err(other) => prop_assert!(false, "unexpected error {other:?}"),
        }
    }

    /// A valid file with a few bytes inserted or overwritten: with --skip-bad-rows, the rows
    /// loaded are the file's rows in order (an edit may change one row's values and leave
    /// it valid), and every row the damage did not touch is loaded (a stray quote or break
    /// never swallows its neighbours); each skipped row is named once, in file order.
    /// Without it, the load is every row or an error.
    #[test]
    fn csv_damage_costs_only_the_damaged_rows(seed in 0u64..1000, edits in edits()) {
        let ds = synth::generate(6, seed);
        let lines = icml_lines(&ds);
        let text = lines.join("\n") + "\n";
        // Row r (0-based, after the header) spans [starts[r], ends[r]], its `\n` included.
        let mut starts = Vec::new();
        let mut pos = 0;
        for l in &lines {
            starts.push(pos);
            pos += l.len() + 1;
        }
        let (bytes, hit) = damage(text.as_bytes(), &edits);
        let path = case_file("damaged.csv");
        std::fs::write(&path, &bytes).unwrap();
        // A line is touched by an edit in it or at the break before it.
        let touched = |line: usize| {
            let (start, end) = (starts[line], starts[line] + lines[line].len());
            hit.iter().any(|&p| p + 1 >= start && p <= end)
        };
        let skip = LoadOptions { skip_bad_rows: true };
        match quick("csv load", || load(&path, &skip)) {
            Ok((got, report)) => {
                // The original rows in order; an edit may at most change one row's values
                // and keep it valid (a digit of a quoted pixels field replaced by a line
                // break inside the quotes reads as white space).
                let (mut next, mut changed) = (0, 0);
                for i in 0..got.len() {
                    let found = (next..ds.len()).find(|&r| {
                        ds.image(r) == got.image(i)
                            && ds.labels[r] == got.labels[i]
                            && ds.usage[r] == got.usage[i]
                    });
                    match found {
                        Some(r) => next = r + 1,
                        None => changed += 1,
                    }
                }
                prop_assert!(changed <= edits.len(), "{} rows loaded are no original rows", changed);
                if !touched(0) {
                    for r in 0..ds.len() {
                        if !touched(r + 1) {
                            let kept = (0..got.len()).any(|i| got.image(i) == ds.image(r));
                            prop_assert!(kept, "undamaged row {} was lost", r);
                        }
                    }
                }
                let lines_at: Vec<u64> = report
                    .skipped
                    .iter()
                    .map(|e| match e {
                        Error::BadRow { line, .. } => *line,
                        other => panic!("{other:?}"),
                    })
                    .collect();
                prop_assert!(lines_at.windows(2).all(|w| w[0] < w[1]), "{:?}", lines_at);
                prop_assert!(got.len() + report.skipped.len() >= ds.len() - hit.len().min(ds.len()));
            }
            Err(Error::BadData { .. }) => {}
            Err(other) => prop_assert!(false, "unexpected error {other:?}"),
        }
        match quick("csv load", || load(&path, &LoadOptions::default())) {
            Ok((got, _)) => prop_assert_eq!(got.len(), ds.len()),
            Err(Error::BadData { .. } | Error::BadRow { .. }) => {}
            Err(other) => prop_assert!(false, "unexpected error {other:?}"),
        }
    }
}

// ---- model files ------------------------------------------------------------------------

/// A layer with any numbers (small ones most of the time, huge ones often enough).
fn layer() -> impl Strategy<Value = String> {
    let n = prop_oneof![
        4 => 0u64..64,
        1 => any::<u64>(),
        1 => Just(u64::MAX),
        1 => Just(1_000_000_000),
    ];
    let act = prop::sample::select(vec!["relu", "selu", "linear", "tanh", "swish"]);
    prop_oneof![
        (n.clone(), n.clone(), act.clone()).prop_map(|(f, k, a)| format!(
            "{{\"type\": \"conv2d\", \"filters\": {f}, \"kernel\": {k}, \"activation\": \"{a}\"}}"
        )),
        n.clone()
            .prop_map(|s| format!("{{\"type\": \"maxpool\", \"size\": {s}}}")),
        Just("{\"type\": \"flatten\"}".to_string()),
        (n, act).prop_map(|(u, a)| format!(
            "{{\"type\": \"dense\", \"units\": {u}, \"activation\": \"{a}\"}}"
        )),
        Just("{\"type\": \"dense\", \"units\": 7}".to_string()),
        Just("{\"type\": \"dense\", \"units\": 7, \"kernal\": 3}".to_string()),
    ]
}

/// A model file's JSON: a list of such layers, often ending as a valid model must.
fn model_json() -> impl Strategy<Value = String> {
    (prop::collection::vec(layer(), 0..7), any::<bool>()).prop_map(|(mut layers, end)| {
        if end {
            layers.push("{\"type\": \"dense\", \"units\": 7}".into());
        }
        format!("{{\"name\": \"p\", \"layers\": [{}]}}", layers.join(", "))
    })
}

/// Checks a model a reader accepted: it plans, within this machine's limits.
fn assert_fits(spec: &ModelSpec) -> Result<(), TestCaseError> {
    let plan = Plan::new(spec, 1);
    prop_assert!(plan.is_ok(), "accepted but does not plan: {:?}", plan.err());
    let plan = plan.unwrap();
    let limits = ModelLimits::of_machine();
    prop_assert!(plan.num_params as u64 <= limits.max_params);
    for op in &plan.ops {
        prop_assert!(op.output_len() as u64 <= limits.max_floats_per_image);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    /// Layer lists with any numbers, as JSON and as TOML: refused with an error or
    /// accepted within the limits; never a panic or an allocation failure.
    #[test]
    fn model_files_with_any_numbers_are_refused_or_fit(json in model_json(), as_toml in any::<bool>()) {
        let path = if as_toml {
            let value: serde_json::Value = serde_json::from_str(&json).unwrap();
            let path = case_file("model.toml");
            match toml::to_string(&value) {
                Ok(text) => std::fs::write(&path, text).unwrap(),
                // TOML integers are i64: write the JSON instead.
                Err(_) => return Ok(()),
            }
            path
        } else {
            let path = case_file("model.json");
            std::fs::write(&path, &json).unwrap();
            path
        };
        match quick("model load", || ModelSpec::from_file(&path)) {
            Ok(spec) => assert_fits(&spec)?,
            Err(Error::BadModel(m)) => prop_assert!(!m.is_empty()),
            Err(other) => prop_assert!(false, "unexpected error {other:?}"),
        }
    }

    /// Any text, or a valid model file with bytes changed: no panic.
    #[test]
    fn model_files_of_any_bytes_never_panic(
        body in prop::collection::vec(any::<u8>(), 0..400),
        edits in edits(),
        as_toml in any::<bool>(),
    ) {
        let valid = "{\"layers\": [{\"type\": \"conv2d\", \"filters\": 4}, {\"type\": \"maxpool\"}, \
                     {\"type\": \"flatten\"}, {\"type\": \"dense\", \"units\": 7}]}";
        let (damaged, _) = damage(valid.as_bytes(), &edits);
        for bytes in [body, damaged] {
            let path = case_file(if as_toml { "bytes.toml" } else { "bytes.json" });
            std::fs::write(&path, &bytes).unwrap();
            match quick("model load", || ModelSpec::from_file(&path)) {
                Ok(spec) => assert_fits(&spec)?,
                Err(Error::BadModel(_) | Error::Io { .. }) => {}
                Err(other) => prop_assert!(false, "unexpected error {other:?}"),
            }
        }
    }
}

// ---- checkpoints ------------------------------------------------------------------------

/// A small valid checkpoint with batch-norm running statistics and optimizer state, as
/// bytes.
fn valid_checkpoint() -> Vec<u8> {
    let spec: ModelSpec = serde_json::from_str(
        "{\"name\": \"tiny\", \"layers\": [{\"type\": \"conv2d\", \"filters\": 2, \"kernel\": 5}, \
         {\"type\": \"batchnorm\"}, \
         {\"type\": \"maxpool\", \"size\": 4}, {\"type\": \"flatten\"}, \
         {\"type\": \"dense\", \"units\": 7}]}",
    )
    .unwrap();
    let plan = Plan::new(&spec, 1).unwrap();
    let params = plan.init_params(1);
    let n = params.len();
    let ck = Checkpoint {
        spec,
        params,
        running: plan.init_running(),
        optimizer: Some(OptimizerState {
            m: vec![0.1; n],
            v: vec![0.01; n],
            t: 3,
            average: None,
        }),
        train_state: Some("{}".into()),
    };
    let path = case_file("valid.safetensors");
    ck.save(&path).unwrap();
    std::fs::read(&path).unwrap()
}

/// `bytes` (a checkpoint) with its header's model metadata replaced by `model`.
fn with_model(bytes: &[u8], model: &str) -> Vec<u8> {
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let mut header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    header["__metadata__"]["fergpu.model"] = model.into();
    let text = serde_json::to_vec(&header).unwrap();
    let mut out = (text.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&text);
    out.extend_from_slice(&bytes[8 + n..]);
    out
}

/// Checks a checkpoint the reader accepted: its model plans, its tensors have the model's
/// sizes, and every number is finite.
fn assert_sound(ck: &Checkpoint) -> Result<(), TestCaseError> {
    assert_fits(&ck.spec)?;
    let p = Plan::new(&ck.spec, 1).unwrap().num_params;
    prop_assert_eq!(ck.params.len(), p);
    prop_assert!(ck.params.iter().all(|x| x.is_finite()));
    if let Some(o) = &ck.optimizer {
        prop_assert_eq!((o.m.len(), o.v.len()), (p, p));
        prop_assert!(o.m.iter().chain(&o.v).all(|x| x.is_finite()));
        prop_assert!(o.v.iter().all(|&x| x >= 0.0));
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    /// Arbitrary bytes, a valid checkpoint with bytes changed or cut, or with another model
    /// in its metadata: a `BadCheckpoint` or a sound checkpoint, never a panic.
    #[test]
    fn checkpoints_damaged_or_foreign_are_refused_or_sound(
        body in prop::collection::vec(any::<u8>(), 0..600),
        flips in prop::collection::vec((0.0..1.0f64, any::<u8>()), 1..4),
        cut in 0.0..1.0f64,
        model in model_json(),
    ) {
        let valid = valid_checkpoint();
        let mut flipped = valid.clone();
        for &(at, byte) in &flips {
            let i = (at * flipped.len() as f64) as usize;
            flipped[i] = byte;
        }
        let cut = valid[..(cut * valid.len() as f64) as usize].to_vec();
        let foreign = with_model(&valid, &model);
        let path = case_file("case.safetensors");
        for bytes in [body, flipped, cut, foreign] {
            std::fs::write(&path, &bytes).unwrap();
            match quick("checkpoint load", || Checkpoint::load(&path)) {
                Ok(ck) => assert_sound(&ck)?,
                Err(Error::BadCheckpoint { problem, .. }) => prop_assert!(!problem.is_empty()),
                Err(other) => prop_assert!(false, "unexpected error {other:?}"),
            }
        }
    }
}

// ---- sweep grids ------------------------------------------------------------------------

/// One TOML value of any kind a grid may hold, small and large.
fn toml_value() -> impl Strategy<Value = String> {
    prop_oneof![
        (0i64..70).prop_map(|n| n.to_string()),
        any::<i64>().prop_map(|n| n.to_string()),
        prop::sample::select(vec!["1e-3", "0.5", "-0.0", "nan", "inf", "1e400", "3.5"])
            .prop_map(str::to_string),
        prop::sample::select(vec![
            "\"mlp\"",
            "\"relu\"",
            "\"\"",
            "\"a/b\"",
            "\"cosine\"",
            "\"x\u{1b}\""
        ])
        .prop_map(str::to_string),
        any::<bool>().prop_map(|b| b.to_string()),
    ]
}

/// A sweep file from a small vocabulary: the three sections, keys with both spellings and
/// typos, values and lists of values of every kind.
fn grid_text() -> impl Strategy<Value = String> {
    let key = prop::sample::select(vec![
        "lr",
        "\"optimizer.lr\"",
        "epochs",
        "\"schedule.epochs\"",
        "seed",
        "batch_size",
        "model",
        "activation",
        "name",
        "kernal",
        "augment",
    ]);
    let value = prop_oneof![
        2 => toml_value(),
        1 => prop::collection::vec(toml_value(), 0..40).prop_map(|v| format!("[{}]", v.join(", "))),
    ];
    let entry = (key, value).prop_map(|(k, v)| format!("{k} = {v}\n"));
    let section = (
        prop::sample::select(vec!["[grid]", "[fixed]", "[[run]]", "[other]", ""]),
        prop::collection::vec(entry, 0..5),
    )
        .prop_map(|(head, entries)| format!("{head}\n{}", entries.concat()));
    prop::collection::vec(section, 0..5).prop_map(|s| s.concat())
}

/// Checks runs a grid file gave: at most the limit, unique safe names, and every run's
/// settings apply and validate.
fn assert_runs_sound(runs: &[fergpu::experiment::RunSpec]) -> Result<(), TestCaseError> {
    prop_assert!(!runs.is_empty() && runs.len() <= fergpu::experiment::grid::MAX_RUNS);
    let names: std::collections::BTreeSet<&str> = runs.iter().map(|r| r.name.as_str()).collect();
    prop_assert_eq!(names.len(), runs.len());
    for r in runs {
        prop_assert!(r.name.len() <= 200 && !r.name.contains('/'), "{}", r.name);
        let mut s = fergpu::settings::Settings::default();
        for (k, v) in &r.settings {
            prop_assert!(s.set(k, v.to_json()).is_ok(), "{} = {}", k, v);
        }
        prop_assert!(s.validate().is_ok(), "{:?}", r.settings);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    /// Grid files of any bytes, of the grid vocabulary, or valid ones damaged: an error
    /// naming the file, or runs that are all sound; never a panic, never a huge expansion.
    #[test]
    fn grid_files_of_any_bytes_are_refused_or_sound(
        body in prop::collection::vec(any::<u8>(), 0..600),
        text in grid_text(),
        edits in edits(),
    ) {
        let valid = "[grid]\nlr = [0.1, 0.01]\nseed = [1, 2, 3]\n[fixed]\nmodel = \"mlp\"\n\
                     [[run]]\nname = \"one\"\nepochs = 2\n";
        let (damaged, _) = damage(valid.as_bytes(), &edits);
        for bytes in [body, text.into_bytes(), damaged] {
            let path = case_file("grid.toml");
            std::fs::write(&path, &bytes).unwrap();
            match quick("grid load", || fergpu::experiment::load_grid(&path)) {
                Ok(runs) => assert_runs_sound(&runs)?,
                Err(Error::Config(m)) => prop_assert!(m.contains("grid.toml"), "{}", m),
                Err(Error::BadData { .. }) => {}
                Err(other) => prop_assert!(false, "unexpected error {other:?}"),
            }
        }
    }
}

// ---- photos -----------------------------------------------------------------------------

/// A small valid image in each format `predict` reads.
fn valid_images() -> Vec<Vec<u8>> {
    let img = image::RgbImage::from_fn(20, 12, |x, y| image::Rgb([x as u8 * 7, y as u8 * 11, 3]));
    [
        image::ImageFormat::Png,
        image::ImageFormat::Jpeg,
        image::ImageFormat::Bmp,
    ]
    .into_iter()
    .map(|f| {
        let mut out = std::io::Cursor::new(Vec::new());
        img.write_to(&mut out, f).unwrap();
        out.into_inner()
    })
    .collect()
}

/// Where each format keeps its size: `(offset of the width, of the height, bytes each,
/// big-endian)`; for JPEG, relative to its SOF0 marker.
fn size_fields(bytes: &[u8]) -> Option<(usize, usize, usize, bool)> {
    match bytes.get(..2)? {
        [0x89, b'P'] => Some((16, 20, 4, true)),
        [b'B', b'M'] => Some((18, 22, 4, false)),
        [0xFF, 0xD8] => {
            let sof = bytes.windows(2).position(|m| m == [0xFF, 0xC0])?;
            Some((sof + 7, sof + 5, 2, true))
        }
        _ => None,
    }
}

/// `bytes` with the declared size set to `w`×`h` (truncated to the field's width).
fn declaring(bytes: &[u8], w: u32, h: u32) -> Vec<u8> {
    let mut out = bytes.to_vec();
    if let Some((wo, ho, n, big)) = size_fields(bytes) {
        for (at, v) in [(wo, w), (ho, h)] {
            let b = if big {
                v.to_be_bytes()
            } else {
                v.to_le_bytes()
            };
            let b = if big { &b[4 - n..] } else { &b[..n] };
            out[at..at + n].copy_from_slice(b);
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Any bytes, a valid PNG, JPEG or BMP with bytes changed, or declaring any size: an
    /// error naming the file, or an image within the pixel limit; never a panic, and never
    /// a decode of more pixels than the limit.
    #[test]
    fn photos_of_any_bytes_or_sizes_are_refused_or_within_the_limit(
        body in prop::collection::vec(any::<u8>(), 0..600),
        which in 0usize..3,
        flips in prop::collection::vec((0.0..1.0f64, any::<u8>()), 1..4),
        w in prop_oneof![1u32..64, any::<u32>(), Just(65500)],
        h in prop_oneof![1u32..64, any::<u32>(), Just(65500)],
    ) {
        let valid = valid_images().swap_remove(which);
        let mut flipped = valid.clone();
        for &(at, byte) in &flips {
            let i = (at * flipped.len() as f64) as usize;
            flipped[i] = byte;
        }
        let sized = declaring(&valid, w, h);
        let path = case_file("photo.img");
        for bytes in [body, flipped, sized] {
            std::fs::write(&path, &bytes).unwrap();
            match quick("photo load", || fergpu::predict::load_image(&path)) {
                Ok(img) => prop_assert!(
                    u64::from(img.width()) * u64::from(img.height())
                        <= fergpu::predict::MAX_IMAGE_PIXELS
                ),
                Err(Error::BadData { path: p, .. }) => prop_assert_eq!(p, path.clone()),
                Err(Error::Io { .. }) => {}
                Err(other) => prop_assert!(false, "unexpected error {other:?}"),
            }
        }
    }
}
