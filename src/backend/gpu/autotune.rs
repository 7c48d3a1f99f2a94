//! Autotuning: the first time a GEMM-shaped launch meets a shape (batch included) on an
//! adapter, every [`Variant`] the device can run is timed on the launch's own buffers and the
//! fastest is kept, in memory for the backend's life and on disk for later runs, keyed by
//! adapter name, driver, graphics API, method and shape. `--autotune`:
//! - `auto` (the default): on for hardware adapters, off for software ones (a CPU emulating a
//!   GPU, where the register kernels win and timing every variant of a large model would take
//!   minutes);
//! - `on`: measure what the cache does not know; `refresh`: measure everything again;
//! - `off`: [`default_variant`], no measuring, no cache.
//!
//! The cache is one small JSON file, [`CACHE_FILE`] in [`cache_dir`]; a file that cannot be
//! read or parsed is ignored with a note (and rewritten by the next measurement), never an
//! error. Choosing by measurement makes the last bits of a run's results depend on the
//! adapter's timings once; `off` keeps them fixed.

use super::adapter::AdapterSummary;
use super::tiles::{default_variant, TuneKey, Variant};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

/// `--autotune`: how the GEMM launches choose their variant (see the module docs).
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    Hash,
    serde::Serialize,
    serde::Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Autotune {
    /// On for hardware adapters, off for software ones.
    #[default]
    Auto,
    /// Measure the shapes the cache does not know.
    On,
    /// Never measure: fixed choices ([`default_variant`]).
    Off,
    /// Measure every shape again, replacing the cache's entries.
    Refresh,
}

impl Autotune {
    /// The name as the flag takes it.
    pub fn name(self) -> &'static str {
        match self {
            Autotune::Auto => "auto",
            Autotune::On => "on",
            Autotune::Off => "off",
            Autotune::Refresh => "refresh",
        }
    }
}

/// The environment variable that moves the cache folder (tests point it at a temporary one).
pub const CACHE_DIR_ENV: &str = "FERGPU_CACHE_DIR";
/// The cache file's name inside [`cache_dir`].
pub const CACHE_FILE: &str = "autotune.json";
/// The cache file's format version; files of another version are ignored.
const VERSION: u32 = 1;

/// The folder of fergpu's caches: `$FERGPU_CACHE_DIR`, else the platform's user cache
/// folder plus `fergpu` (`$XDG_CACHE_HOME/fergpu` or `~/.cache/fergpu` on Linux and other
/// Unixes, `~/Library/Caches/fergpu` on macOS, `%LOCALAPPDATA%\fergpu` on Windows); `None`
/// when none of those is known.
pub fn cache_dir() -> Option<PathBuf> {
    let var = |name: &str| {
        std::env::var_os(name)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    if let Some(dir) = var(CACHE_DIR_ENV) {
        return Some(dir);
    }
    let base = if cfg!(windows) {
        var("LOCALAPPDATA")
    } else if cfg!(target_os = "macos") {
        var("HOME").map(|h| h.join("Library").join("Caches"))
    } else {
        var("XDG_CACHE_HOME").or_else(|| var("HOME").map(|h| h.join(".cache")))
    };
    base.map(|b| b.join("fergpu"))
}

/// One cached decision.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CacheEntry {
    /// The chosen variant ([`Variant`]'s display form).
    pub choice: String,
    /// Its time per launch in µs.
    pub micros: f64,
    /// Every variant measured, with its µs per launch.
    pub measured: BTreeMap<String, f64>,
}

/// The cache file.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct CacheFile {
    version: u32,
    /// By `adapter|driver|api|method shape`.
    entries: BTreeMap<String, CacheEntry>,
}

/// Reads the cache at `path`: its entries, or none and a note saying why the file is
/// ignored (a missing file needs no note).
fn read_cache(path: &Path) -> (BTreeMap<String, CacheEntry>, Option<String>) {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return (BTreeMap::new(), None),
        Err(e) => return (BTreeMap::new(), Some(format!("cannot read it: {e}"))),
    };
    match serde_json::from_str::<CacheFile>(&text) {
        Ok(f) if f.version == VERSION => (f.entries, None),
        Ok(f) => (
            BTreeMap::new(),
            Some(format!("version {} is not {VERSION}", f.version)),
        ),
        Err(e) => (BTreeMap::new(), Some(format!("not an autotune cache: {e}"))),
    }
}

/// Where a launch's variant came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// Measured in this process.
    Measured,
    /// Read from the cache file.
    Cached,
    /// [`default_variant`] (autotuning off).
    Default,
    /// Forced by the caller (`GpuBackend::set_variant`).
    Forced,
}

/// A launch's variant and where it came from.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Choice {
    /// The variant.
    pub variant: Variant,
    /// Where it came from.
    pub source: Source,
    /// Its measured µs per launch (measured or cached choices).
    pub micros: Option<f64>,
}

/// One device's tuning state: the mode, the choices made so far, and the cache file.
pub(crate) struct Tuner {
    /// Whether launches are measured (the mode resolved for this adapter).
    pub(crate) measuring: bool,
    /// Whether cached entries are ignored (and replaced).
    refresh: bool,
    /// The choices made, by key.
    table: HashMap<TuneKey, Choice>,
    /// The cache file, when measuring and a cache folder is known.
    path: Option<PathBuf>,
    /// Its entries as read, and as measured since.
    entries: BTreeMap<String, CacheEntry>,
    /// The adapter part of every key.
    adapter: String,
    /// Whether this adapter is a software one.
    software: bool,
    /// Notes for the user (also printed on stderr when made).
    pub(crate) notes: Vec<String>,
    /// Whether the "tuning…" note was printed.
    announced: bool,
}

impl Tuner {
    /// The tuning state for `adapter` in `mode`, reading the cache in `dir` (or
    /// [`cache_dir`]) when measuring.
    pub(crate) fn new(adapter: &AdapterSummary, mode: Autotune, dir: Option<&Path>) -> Tuner {
        let software = adapter.kind() == "software";
        let measuring = match mode {
            Autotune::Auto => !software,
            Autotune::On | Autotune::Refresh => true,
            Autotune::Off => false,
        };
        let mut t = Tuner {
            measuring,
            refresh: mode == Autotune::Refresh,
            table: HashMap::new(),
            path: None,
            entries: BTreeMap::new(),
            adapter: format!("{}|{}|{:?}", adapter.name, adapter.driver, adapter.backend),
            software,
            notes: Vec::new(),
            announced: false,
        };
        if measuring {
            t.path = dir
                .map(Path::to_path_buf)
                .or_else(cache_dir)
                .map(|d| d.join(CACHE_FILE));
            match &t.path {
                Some(path) => {
                    let (entries, why) = read_cache(path);
                    t.entries = entries;
                    if let Some(why) = why {
                        t.note(format!(
                            "ignoring the autotune cache {} ({why}); it will be rewritten",
                            path.display()
                        ));
                    }
                }
                None => t.note(
                    "no cache folder known (set FERGPU_CACHE_DIR or HOME): autotuning \
                     results are kept for this run only"
                        .into(),
                ),
            }
        }
        t
    }

    fn note(&mut self, text: String) {
        eprintln!("fergpu: {text}");
        self.notes.push(text);
    }

    /// The choice made for `key`, if any.
    pub(crate) fn get(&self, key: &TuneKey) -> Option<Choice> {
        self.table.get(key).copied()
    }

    /// Every choice made so far.
    pub(crate) fn choices(&self) -> Vec<(TuneKey, Choice)> {
        self.table.iter().map(|(k, c)| (*k, *c)).collect()
    }

    /// The choice for `key` that needs no measuring: the default when not measuring, the
    /// cache's entry (if it names a variant the device runs) when measuring without refresh.
    /// Records it.
    pub(crate) fn known(&mut self, key: &TuneKey, limits: &wgpu::Limits) -> Option<Choice> {
        let choice = if !self.measuring {
            Choice {
                variant: default_variant(key, self.software, limits),
                source: Source::Default,
                micros: None,
            }
        } else if self.refresh {
            return None;
        } else {
            let entry = self.entries.get(&self.cache_key(key))?;
            let variant = Variant::parse(&entry.choice).filter(|v| v.fits(limits))?;
            Choice {
                variant,
                source: Source::Cached,
                micros: Some(entry.micros),
            }
        };
        self.table.insert(*key, choice);
        Some(choice)
    }

    /// Records the default choice for `key` where it cannot be measured now (a profile is
    /// timing its own dispatches); it is not cached.
    pub(crate) fn fallback(&mut self, key: &TuneKey, limits: &wgpu::Limits) -> Choice {
        let choice = Choice {
            variant: default_variant(key, self.software, limits),
            source: Source::Default,
            micros: None,
        };
        self.table.insert(*key, choice);
        choice
    }

    /// Records a forced choice.
    pub(crate) fn force(&mut self, key: &TuneKey, variant: Variant) -> Choice {
        let choice = Choice {
            variant,
            source: Source::Forced,
            micros: None,
        };
        self.table.insert(*key, choice);
        choice
    }

    /// Says once that measuring starts (it can take a while).
    pub(crate) fn announce(&mut self) {
        if !self.announced {
            self.announced = true;
            let whither = match &self.path {
                Some(p) => format!("; the choices are kept in {}", p.display()),
                None => String::new(),
            };
            // Said, not kept: the notes are for what went wrong.
            eprintln!(
                "fergpu: autotuning the convolution and dense kernels for this adapter, once \
                 per layer shape{whither} (--autotune off skips it)"
            );
        }
    }

    /// Records the measurement of `key`: µs per launch of each variant tried. Keeps the
    /// fastest, writes it to the cache file, and returns it.
    pub(crate) fn measured(&mut self, key: &TuneKey, times: &[(Variant, f64)]) -> Choice {
        let (variant, micros) = times
            .iter()
            .copied()
            .filter(|(_, t)| t.is_finite())
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .unwrap_or((Variant::Register, f64::NAN));
        let choice = Choice {
            variant,
            source: Source::Measured,
            micros: Some(micros),
        };
        self.table.insert(*key, choice);
        let entry = CacheEntry {
            choice: variant.to_string(),
            micros,
            measured: times.iter().map(|(v, t)| (v.to_string(), *t)).collect(),
        };
        let cache_key = self.cache_key(key);
        self.entries.insert(cache_key.clone(), entry.clone());
        if let Some(path) = self.path.clone() {
            if let Err(e) = save(&path, &cache_key, entry) {
                self.note(format!(
                    "cannot write the autotune cache {}: {e}",
                    path.display()
                ));
            }
        }
        choice
    }

    fn cache_key(&self, key: &TuneKey) -> String {
        format!("{}|{key}", self.adapter)
    }
}

/// Adds `entry` under `key` to the cache file at `path`, keeping what other processes wrote
/// meanwhile: read, merge, write a temporary file, rename it over the cache.
fn save(path: &Path, key: &str, entry: CacheEntry) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let (mut entries, _) = read_cache(path);
    entries.insert(key.to_string(), entry);
    let file = CacheFile {
        version: VERSION,
        entries,
    };
    let text = serde_json::to_string_pretty(&file).expect("the cache serializes");
    let tmp = path.with_extension(format!("json.{}.tmp", std::process::id()));
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_corrupt_or_foreign_cache_is_ignored_with_a_reason() {
        let dir = std::env::temp_dir().join(format!("fergpu-autotune-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(CACHE_FILE);
        std::fs::write(&path, "{ not json").unwrap();
        let (entries, why) = read_cache(&path);
        assert!(entries.is_empty() && why.unwrap().contains("not an autotune cache"));
        std::fs::write(&path, r#"{"version": 99, "entries": {}}"#).unwrap();
        assert!(read_cache(&path).1.unwrap().contains("version 99"));
        // Saving over a corrupt file replaces it with a valid one.
        let entry = CacheEntry {
            choice: "register".into(),
            micros: 1.5,
            measured: BTreeMap::from([("register".to_string(), 1.5)]),
        };
        save(&path, "k", entry.clone()).unwrap();
        let (entries, why) = read_cache(&path);
        assert_eq!((entries.get("k"), why), (Some(&entry), None));
        assert_eq!(read_cache(&dir.join("absent.json")).1, None);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
