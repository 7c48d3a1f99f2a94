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
