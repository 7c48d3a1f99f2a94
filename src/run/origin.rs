//! What made a run besides its settings: its data (images per split and a fingerprint of
//! their pixels and labels), the experiment it belongs to (a cross-validation fold, a sweep
//! run) and fergpu's version. `config.json` records it beside the settings.
//!
//! A folder's run is reused (resumed by `train --resume`, or resumed or taken as finished by
//! `cv` and `sweep`) only when its settings and this record match the run asked for now;
//! otherwise [`check_reuse`] refuses, listing every difference.

use super::{RunFolder, RunRecord};
use crate::error::{Error, Result};
use crate::settings::{Settings, Splits};

/// The experiment a run folder belongs to: a fold of a cross-validation or a run of a sweep.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ExperimentPart {
    /// `cv` or `sweep`.
    pub kind: String,
    /// The experiment's plan, for `cv` its folds (`3 folds, contiguous, rows
    /// Training,PrivateTest, validation PublicTest`); empty for a sweep, whose runs differ
    /// by their settings.
    pub plan: String,
    /// This part: `fold 2`, or the sweep run's name.
    pub part: String,
}

impl std::fmt::Display for ExperimentPart {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.kind.as_str() {
            "cv" => write!(f, "{} of a cross-validation ({})", self.part, self.plan),
            "sweep" => write!(f, "run '{}' of a sweep", self.part),
            other => write!(f, "{} of a {other}", self.part),
        }
    }
}

/// What a run is about to train on and for, compared with a folder's [`RunRecord`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origin {
    /// Images in the training, validation and test splits.
    pub images: [usize; 3],
    /// [`data_fingerprint`] of the splits.
    pub data_fingerprint: String,
    /// The experiment the run is part of (`None`: a run of its own).
    pub experiment: Option<ExperimentPart>,
}

impl Origin {
    /// The origin of a run on `splits`, as part of `experiment` if any.
    pub fn new(splits: &Splits, experiment: Option<ExperimentPart>) -> Origin {
        Origin {
            images: [splits.train.len(), splits.val.len(), splits.test.len()],
            data_fingerprint: data_fingerprint(splits),
            experiment,
        }
    }
}

/// The three splits' [`crate::data::Dataset::fingerprint`]s combined, as 16 hex digits.
pub fn data_fingerprint(splits: &Splits) -> String {
    let mut h = 0u64;
    for set in [&splits.train, &splits.val, &splits.test] {
        h = (h.rotate_left(21) ^ set.fingerprint()).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
    format!("{h:016x}")
}

/// Settings that may differ between a folder's run and a run that reuses it: where the run
/// goes, how it prints and which device runs it (none changes what it computes), and the
/// data file's path (the data itself is compared by its fingerprint, so a file reached by
/// another path is the same data, and a changed file is not).
const NEVER_COMPARED: [&str; 7] = [
    "out",
    "quiet",
    "adapter",
    "gpu_backend",
    "threads",
    "autotune",
    "data",
];

/// How strictly a record is compared.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reuse {
    /// `train --resume DIR`: the folder's own settings, of which `--epochs` may grow. A
    /// record from a fergpu that did not fingerprint its data is compared by its image
    /// counts only, with a note.
    Resume,
    /// `cv` and `sweep`: every setting must match, and the data's fingerprint must be
    /// recorded.
    Experiment,
}

/// Checks that the run recorded in `folder` is the run `now` and `origin` describe; the
/// error names the folder, every difference and `hint` (what to do instead).
pub fn check_reuse(
    folder: &RunFolder,
    now: &Settings,
    origin: &Origin,
    reuse: Reuse,
    hint: &str,
) -> Result<()> {
    let saved = folder.read_settings()?;
    let record = folder.read_record()?;
    let mut diffs = settings_differences(&saved, now, reuse);
    diffs.extend(record_differences(&record, origin, reuse));
    if diffs.is_empty() {
        return Ok(());
    }
    Err(Error::Config(format!(
        "{} holds a run that is not this one: {}; {hint}",
        folder.path().display(),
        diffs.join("; ")
    )))
}

/// The settings that differ, as `lr 0.001 there, 0.05 here`.
fn settings_differences(saved: &Settings, now: &Settings, reuse: Reuse) -> Vec<String> {
    Settings::keys()
        .iter()
        .filter(|k| !NEVER_COMPARED.contains(&k.field))
        .filter(|k| !(reuse == Reuse::Resume && k.field == "epochs"))
        .filter_map(|&k| {
            let (there, here) = (saved.get(k), now.get(k));
            (there != here).then(|| format!("{} {there} there, {here} here", k.field))
        })
        .collect()
}

/// The differences between a folder's record and `origin`.
fn record_differences(record: &RunRecord, origin: &Origin, reuse: Reuse) -> Vec<String> {
    let mut diffs = Vec::new();
    if record.experiment != origin.experiment {
        let describe = |p: &Option<ExperimentPart>| match p {
            Some(p) => p.to_string(),
            None => "a run of its own".to_string(),
        };
        diffs.push(format!(
            "it is {}, this is {}",
            describe(&record.experiment),
            describe(&origin.experiment)
        ));
    }
    let there = [record.train_images, record.val_images, record.test_images];
    if there != origin.images {
        let counts = |c: [usize; 3]| format!("{}/{}/{}", c[0], c[1], c[2]);
        diffs.push(format!(
            "its data has {} training/validation/test images, this data {}",
            counts(there),
            counts(origin.images)
        ));
    }
    match &record.data_fingerprint {
        Some(f) if *f != origin.data_fingerprint => diffs.push(format!(
            "its data's fingerprint is {f}, this data's {} (the images or labels changed)",
            origin.data_fingerprint
        )),
        Some(_) => {}
        None if reuse == Reuse::Experiment => diffs.push(
            "it does not record its data's fingerprint (an older fergpu wrote it)".to_string(),
        ),
        None => eprintln!(
            "note: the run's config.json does not record its data's fingerprint (an older \
             fergpu wrote it); only the image counts per split were compared"
        ),
    }
    let version = env!("CARGO_PKG_VERSION");
    if record.fergpu_version != version {
        diffs.push(format!(
            "fergpu {} made it, this is fergpu {version}",
            record.fergpu_version
        ));
    }
    diffs
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{synth, Usage};

    fn splits(rows: usize) -> Splits {
        let ds = synth::generate(rows, 2);
        Splits {
            train: ds.split(&[Usage::Training]),
            val: ds.split(&[Usage::PrivateTest]),
            test: ds.split(&[Usage::PublicTest]),
        }
    }

    fn record(origin: &Origin) -> RunRecord {
        RunRecord {
            fergpu_version: env!("CARGO_PKG_VERSION").into(),
            train_images: origin.images[0],
            val_images: origin.images[1],
            test_images: origin.images[2],
            data_fingerprint: Some(origin.data_fingerprint.clone()),
            experiment: origin.experiment.clone(),
            ..RunRecord::default()
        }
    }

    #[test]
    fn settings_differences_skip_the_device_and_output_and_name_each_setting() {
        let saved = Settings::default();
        let mut now = saved.clone();
        now.device.threads = 1;
        now.run.quiet = true;
        now.data.data = Some("elsewhere/d.csv".into());
        assert!(settings_differences(&saved, &now, Reuse::Experiment).is_empty());
        now.optimizer.lr = 0.05;
        now.schedule.epochs = 3;
        let d = settings_differences(&saved, &now, Reuse::Experiment);
        assert_eq!(
            d,
            ["lr 0.001 there, 0.05 here", "epochs 12 there, 3 here"],
            "{d:?}"
        );
        let d = settings_differences(&saved, &now, Reuse::Resume);
        assert_eq!(d, ["lr 0.001 there, 0.05 here"]);
    }

    #[test]
    fn record_differences_name_the_data_the_experiment_and_the_version() {
        let origin = Origin::new(&splits(60), None);
        assert!(record_differences(&record(&origin), &origin, Reuse::Experiment).is_empty());
        let other = Origin::new(&splits(50), None);
        let d = record_differences(&record(&origin), &other, Reuse::Experiment).join("; ");
        assert!(
            d.contains("training/validation/test images") && d.contains("fingerprint"),
            "{d}"
        );
        let fold = Origin {
            experiment: Some(ExperimentPart {
                kind: "cv".into(),
                plan: "3 folds".into(),
                part: "fold 1".into(),
            }),
            ..origin.clone()
        };
        let d = record_differences(&record(&fold), &origin, Reuse::Resume).join("; ");
        assert!(
            d.contains("it is fold 1 of a cross-validation (3 folds), this is a run of its own"),
            "{d}"
        );
        let mut old = record(&origin);
        old.data_fingerprint = None;
        old.fergpu_version = "0.0.9".into();
        let d = record_differences(&old, &origin, Reuse::Experiment).join("; ");
        assert!(
            d.contains("does not record its data's fingerprint") && d.contains("fergpu 0.0.9"),
            "{d}"
        );
    }
}
