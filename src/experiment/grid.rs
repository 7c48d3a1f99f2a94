//! Sweep files: a TOML grid of settings expanded into the list of runs to train.
//!
//! ```toml
//! # values per setting; the cartesian product is run
//! [grid]
//! activation = ["relu", "elu", "selu"]
//! batch_size = [32, 512]
//! # settings shared by every run (grid and explicit)
//! [fixed]
//! model = "cnn"
//! class_weight = "frequency"
//! # explicit runs, after the grid's
//! [[run]]
//! name = "elu-b32"
//! activation = "elu"
//! batch_size = 32
//! ```
//!
//! Order: the grid's runs come first, in the cartesian product of the `[grid]` settings
//! taken in file order with the **last setting varying fastest** (above: relu-32, relu-512,
//! elu-32, …), then the `[[run]]` entries in file order. A `[grid]` value that is not a list
//! is a one-value list. `[fixed]` settings apply to every run; a `[[run]]` entry overrides
//! them; a setting may not be both in `[grid]` and `[fixed]`.
//!
//! Names: a `[[run]]`'s `name`, which must be a safe folder name and unique; otherwise one
//! derived from the settings that vary across the grid (or, for an unnamed `[[run]]`, the
//! settings it lists), as `activation-elu_batch_size-32`, with `-2`, `-3`, … appended
//! when it would repeat a name.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::ops::Range;
use std::path::Path;

use toml::de::{DeTable, DeValue};
use toml::Spanned;

use crate::settings::Settings;
use crate::{Error, Result};

/// One setting's value. Serializes as the bare value (`"elu"`, `32`, `0.001`, `true`).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(untagged)]
pub enum SettingValue {
    /// A true/false switch.
    Bool(bool),
    /// A whole number.
    Int(i64),
    /// A real number.
    Float(f64),
    /// Text.
    Str(String),
}

impl SettingValue {
    /// The text, if this is text.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            SettingValue::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The number, if this is a whole or real number.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            SettingValue::Int(i) => Some(i as f64),
            SettingValue::Float(x) => Some(x),
            _ => None,
        }
    }

    /// The whole number, if this is a non-negative one.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            SettingValue::Int(i) => u64::try_from(i).ok(),
            _ => None,
        }
    }

    /// The whole number, if this is a non-negative one that fits a `usize`.
    pub fn as_usize(&self) -> Option<usize> {
        self.as_u64().and_then(|u| usize::try_from(u).ok())
    }

    /// The switch, if this is one.
    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            SettingValue::Bool(b) => Some(b),
            _ => None,
        }
    }

    /// True for whole and real numbers.
    pub fn is_number(&self) -> bool {
        self.as_f64().is_some()
    }

    /// The value as JSON, as [`Settings::set`] takes it.
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            SettingValue::Bool(b) => (*b).into(),
            SettingValue::Int(i) => (*i).into(),
            SettingValue::Float(x) => (*x).into(),
            SettingValue::Str(s) => s.as_str().into(),
        }
    }
}

/// The bare value: text as is, numbers in Rust's shortest round-trip form.
impl fmt::Display for SettingValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SettingValue::Bool(b) => write!(f, "{b}"),
            SettingValue::Int(i) => write!(f, "{i}"),
            SettingValue::Float(x) => write!(f, "{x}"),
            SettingValue::Str(s) => write!(f, "{s}"),
        }
    }
}

/// One run of a sweep: its folder-safe unique name and its settings (fixed ones included;
/// `name` is not among them).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RunSpec {
    /// Unique, made of letters, digits, `.`, `-` and `_`.
    pub name: String,
    /// Setting name → value: keys of [`Settings`] (`lr`, `optimizer.lr`), `name` excluded.
    pub settings: BTreeMap<String, SettingValue>,
}

impl RunSpec {
    /// The value of one setting, if the run sets it.
    pub fn get(&self, key: &str) -> Option<&SettingValue> {
        self.settings.get(key)
    }
}

/// The most runs one sweep file may ask for (grid and explicit runs together).
pub const MAX_RUNS: usize = 10_000;

/// Reads and expands a sweep file (see the module docs for the format and order).
pub fn load_grid(path: &Path) -> Result<Vec<RunSpec>> {
    let text = crate::files::read_text(path)?;
    parse_grid(&text, &path.display().to_string())
}

/// Expands sweep-file `text`; `source` names it in error messages (usually the path).
/// Unknown sections or settings, empty or repeated value lists, wrong types and bad names
/// are [`Error::Config`] errors naming the source, line and setting.
pub fn parse_grid(text: &str, source: &str) -> Result<Vec<RunSpec>> {
    let doc = DeTable::parse(text).map_err(|mut e| {
        e.set_input(Some(text));
        Error::Config(format!("{source}: {e}"))
    })?;
    let ctx = Ctx { text, source };
    let mut grid = Vec::new();
    let mut fixed = Vec::new();
    let mut explicit = Vec::new();
    for (key, value) in in_file_order(doc.get_ref()) {
        let section = key.get_ref().as_ref();
        match (section, value.get_ref()) {
            ("grid", DeValue::Table(t)) => grid = ctx.grid(t)?,
            ("fixed", DeValue::Table(t)) => fixed = ctx.settings(t, "[fixed]", false)?,
            ("run", DeValue::Array(runs)) => {
                for (i, run) in runs.iter().enumerate() {
                    let what = format!("[[run]] #{}", i + 1);
                    let DeValue::Table(t) = run.get_ref() else {
                        return Err(ctx.err(run.span(), &what, "expected a table of settings"));
                    };
                    explicit.push(ctx.settings(t, &what, true)?);
                }
            }
            ("grid" | "fixed" | "run", _) => {
                return Err(ctx.err(
                    key.span(),
                    section,
                    "expected [grid] and [fixed] tables and [[run]] entries",
                ))
            }
            _ => {
                return Err(ctx.err(
                    key.span(),
                    section,
                    "unknown section; a sweep file has [grid], [fixed] and [[run]]",
                ))
            }
        }
    }
    for (key, _) in &grid {
        if let Some((k, _, span)) = fixed.iter().find(|(k, _, _)| same_setting(k, key)) {
            let problem = if k == key {
                "set in both [grid] and [fixed]".to_string()
            } else {
                format!("set in [fixed], and in [grid] as '{key}' (one setting, two spellings)")
            };
            return Err(ctx.err(span.clone(), k, &problem));
        }
    }
    let runs = grid
        .iter()
        .try_fold(1usize, |n, (_, values)| n.checked_mul(values.len()))
        .filter(|&n| n <= MAX_RUNS);
    if runs.is_none() && !grid.is_empty() {
        let sizes: Vec<String> = grid.iter().map(|(_, v)| v.len().to_string()).collect();
        return Err(Error::Config(format!(
            "{source}: [grid] asks for {} runs, over the {MAX_RUNS} a sweep may have; list \
             fewer values",
            sizes.join(" × ")
        )));
    }
    let mut drafts = expand(&grid);
    if drafts.len() + explicit.len() > MAX_RUNS {
        return Err(Error::Config(format!(
            "{source}: {} runs, over the {MAX_RUNS} a sweep may have",
            drafts.len() + explicit.len()
        )));
    }
    for settings in explicit {
        drafts.push(ctx.explicit_run(settings)?);
    }
    if drafts.is_empty() {
        return Err(Error::Config(format!(
            "{source}: no runs; give a [grid] of settings or [[run]] entries"
        )));
    }
    let names = ctx.unique_names(&drafts)?;
    Ok(drafts
        .into_iter()
        .zip(names)
        .map(|(draft, name)| {
            // A run's own setting overrides [fixed]'s, whichever spelling each uses.
            let mut settings: BTreeMap<String, SettingValue> = fixed
                .iter()
                .filter(|(k, _, _)| !draft.settings.iter().any(|(d, _)| same_setting(d, k)))
                .map(|(k, v, _)| (k.clone(), v.clone()))
                .collect();
            settings.extend(draft.settings);
            RunSpec { name, settings }
        })
        .collect())
}

/// A run before fixed settings and unique names: its own settings in file order, and its
/// name (explicit, with the span to blame for a duplicate) or the base of a derived one.
struct Draft {
    settings: Vec<(String, SettingValue)>,
    name: DraftName,
}

enum DraftName {
    Explicit(String, Range<usize>),
    Derived(String),
}

/// A setting read from the file: name, value, where it was.
type Setting = (String, SettingValue, Range<usize>);

/// What every error message needs: the file's name and text (for line numbers).
struct Ctx<'a> {
    text: &'a str,
    source: &'a str,
}

impl Ctx<'_> {
    fn err(&self, span: Range<usize>, what: &str, problem: &str) -> Error {
        let line = self.line(span.start);
        Error::Config(format!("{}:{line}: {what}: {problem}", self.source))
    }

    /// An error when `name` (at `span`) is a setting already among `seen` under another
    /// spelling (`lr` and `optimizer.lr`); otherwise adds it.
    fn once(
        &self,
        seen: &mut Vec<(String, Range<usize>)>,
        name: &str,
        span: Range<usize>,
        what: &str,
    ) -> Result<()> {
        if let Some((first, at)) = seen.iter().find(|(k, _)| same_setting(k, name)) {
            let line = self.line(at.start);
            return Err(self.err(
                span,
                what,
                &format!(
                    "the same setting as '{first}' (line {line}); write it once, in one spelling"
                ),
            ));
        }
        seen.push((name.to_string(), span));
        Ok(())
    }

    /// The 1-based line of byte `at`.
    fn line(&self, at: usize) -> usize {
        self.text[..at.min(self.text.len())].matches('\n').count() + 1
    }

    /// `[grid]`: each setting with its list of values, in file order.
    fn grid(&self, table: &DeTable<'_>) -> Result<Vec<(String, Vec<SettingValue>)>> {
        let mut out = Vec::new();
        let mut seen = Vec::new();
        for (key, value) in in_file_order(table) {
            let name = key.get_ref().as_ref();
            let what = format!("[grid] {name}");
            let kind = self.kind(name, key.span(), &what, false)?;
            self.once(&mut seen, name, key.span(), &what)?;
            let items: Vec<&Spanned<DeValue<'_>>> = match value.get_ref() {
                DeValue::Array(a) => a.iter().collect(),
                _ => vec![value],
            };
            if items.is_empty() {
                return Err(self.err(value.span(), &what, "empty list of values"));
            }
            let mut values = Vec::new();
            for item in items {
                let v = self.value(name, kind, item, &what)?;
                if values.contains(&v) {
                    return Err(self.err(item.span(), &what, &format!("{v} is listed twice")));
                }
                values.push(v);
            }
            out.push((name.to_string(), values));
        }
        Ok(out)
    }

    /// A table of single settings (`[fixed]` or one `[[run]]`), in file order.
    fn settings(&self, table: &DeTable<'_>, what: &str, allow_name: bool) -> Result<Vec<Setting>> {
        let mut out = Vec::new();
        let mut seen = Vec::new();
        for (key, value) in in_file_order(table) {
            let name = key.get_ref().as_ref();
            let what = format!("{what} {name}");
            let kind = self.kind(name, key.span(), &what, allow_name)?;
            if let Kind::Setting = kind {
                self.once(&mut seen, name, key.span(), &what)?;
            }
            if let DeValue::Array(_) = value.get_ref() {
                return Err(self.err(
                    value.span(),
                    &what,
                    "expected one value; lists of values belong in [grid]",
                ));
            }
            let v = self.value(name, kind, value, &what)?;
            out.push((name.to_string(), v, key.span()));
        }
        Ok(out)
    }

    /// Checks that `name` is a setting (or, in a `[[run]]`, the run's name).
    fn kind(&self, name: &str, span: Range<usize>, what: &str, allow_name: bool) -> Result<Kind> {
        if name == "name" {
            return if allow_name {
                Ok(Kind::Name)
            } else {
                Err(self.err(
                    span,
                    what,
                    "a name belongs in a [[run]] entry; grid runs are named after their settings",
                ))
            };
        }
        Settings::key(name).map_err(|e| self.err(span, what, &e.to_string()))?;
        Ok(Kind::Setting)
    }

    /// Reads one TOML value and checks it as the settings type does: its type when set, its
    /// range by [`Settings::validate`].
    fn value(
        &self,
        name: &str,
        kind: Kind,
        v: &Spanned<DeValue<'_>>,
        what: &str,
    ) -> Result<SettingValue> {
        let bad = |problem: String| self.err(v.span(), what, &problem);
        let value = match v.get_ref() {
            DeValue::String(s) if !s.trim().is_empty() => SettingValue::Str(s.trim().to_string()),
            DeValue::Integer(i) => match i64::from_str_radix(i.as_str(), i.radix()) {
                Ok(n) => SettingValue::Int(n),
                Err(_) => return Err(bad(format!("{i} is not a whole number that fits"))),
            },
            DeValue::Float(x) => match x.as_str().parse::<f64>() {
                Ok(r) if r.is_finite() => SettingValue::Float(r),
                _ => return Err(bad(format!("{x} is not a finite number"))),
            },
            DeValue::Boolean(b) => SettingValue::Bool(*b),
            other => {
                return Err(bad(format!(
                    "expected non-empty text, a number or true/false, found {}",
                    other.type_str()
                )))
            }
        };
        if let Kind::Setting = kind {
            let mut probe = Settings::default();
            probe
                .set(name, value.to_json())
                .and_then(|()| probe.validate())
                .map_err(|e| bad(e.to_string()))?;
        } else if !matches!(value, SettingValue::Str(_)) {
            return Err(bad("expected non-empty text".into()));
        }
        Ok(value)
    }

    /// An explicit run: its name pulled out of its settings, or derived from them.
    fn explicit_run(&self, mut settings: Vec<Setting>) -> Result<Draft> {
        let name = match settings.iter().position(|(k, _, _)| k == "name") {
            Some(i) => {
                let (_, value, key_span) = settings.remove(i);
                let name = value.to_string();
                if !is_safe_name(&name) {
                    return Err(self.err(
                        key_span,
                        "[[run]] name",
                        &format!(
                            "'{}' is not a safe folder name; use at most {MAX_NAME} letters, \
                             digits, '.', '-' and '_' (not first '.')",
                            crate::report::printable(&name)
                        ),
                    ));
                }
                DraftName::Explicit(name, key_span)
            }
            None => DraftName::Derived(derived_name(
                settings.iter().map(|(k, v, _)| (k.as_str(), v)),
            )),
        };
        Ok(Draft {
            settings: settings.into_iter().map(|(k, v, _)| (k, v)).collect(),
            name,
        })
    }

    /// Final names: explicit ones must not repeat; derived ones get `-2`, `-3`, … as needed.
    fn unique_names(&self, drafts: &[Draft]) -> Result<Vec<String>> {
        let mut taken = BTreeSet::new();
        for draft in drafts {
            if let DraftName::Explicit(name, span) = &draft.name {
                if !taken.insert(name.clone()) {
                    return Err(self.err(
                        span.clone(),
                        "[[run]] name",
                        &format!("'{name}' names two runs"),
                    ));
                }
            }
        }
        let mut names = Vec::with_capacity(drafts.len());
        for draft in drafts {
            match &draft.name {
                DraftName::Explicit(name, _) => names.push(name.clone()),
                DraftName::Derived(base) => {
                    let mut name = base.clone();
                    let mut n = 2;
                    while taken.contains(&name) {
                        name = format!("{base}-{n}");
                        n += 1;
                    }
                    taken.insert(name.clone());
                    names.push(name);
                }
            }
        }
        Ok(names)
    }
}

/// What a sweep-file key is.
#[derive(Clone, Copy)]
enum Kind {
    /// A `[[run]]`'s name.
    Name,
    /// A key of [`Settings`].
    Setting,
}

/// A table's entries in the order they appear in the file (the map itself may sort them).
fn in_file_order<'t, 'i>(
    table: &'t DeTable<'i>,
) -> Vec<(
    &'t Spanned<std::borrow::Cow<'i, str>>,
    &'t Spanned<DeValue<'i>>,
)> {
    let mut entries: Vec<_> = table.iter().collect();
    entries.sort_by_key(|(k, _)| k.span().start);
    entries
}

/// The grid's cartesian product, last setting varying fastest, named after the settings
/// that vary (all of them when none does).
fn expand(grid: &[(String, Vec<SettingValue>)]) -> Vec<Draft> {
    if grid.is_empty() {
        return Vec::new();
    }
    let total: usize = grid.iter().map(|(_, values)| values.len()).product();
    let varying: Vec<bool> = if grid.iter().any(|(_, v)| v.len() > 1) {
        grid.iter().map(|(_, v)| v.len() > 1).collect()
    } else {
        vec![true; grid.len()]
    };
    (0..total)
        .map(|i| {
            // mixed-radix digits of i, least significant = last setting
            let mut picks = vec![0; grid.len()];
            let mut rest = i;
            for (pick, (_, values)) in picks.iter_mut().zip(grid).rev() {
                *pick = rest % values.len();
                rest /= values.len();
            }
            let settings: Vec<(String, SettingValue)> = grid
                .iter()
                .zip(&picks)
                .map(|((k, values), &p)| (k.clone(), values[p].clone()))
                .collect();
            let name = derived_name(
                settings
                    .iter()
                    .zip(&varying)
                    .filter(|(_, &vary)| vary)
                    .map(|((k, v), _)| (k.as_str(), v)),
            );
            Draft {
                settings,
                name: DraftName::Derived(name),
            }
        })
        .collect()
}

/// `key-value` pairs joined by `_`, with anything but letters, digits, `.`, `+` and `-`
/// in a value replaced by `_`; `run` when there are no settings.
fn derived_name<'a>(settings: impl Iterator<Item = (&'a str, &'a SettingValue)>) -> String {
    let parts: Vec<String> = settings
        .map(|(k, v)| {
            let value: String = name_fragment(v)
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || "+-.".contains(c) {
                        c
                    } else {
                        '_'
                    }
                })
                .collect();
            format!("{k}-{value}")
        })
        .collect();
    let name = if parts.is_empty() {
        "run".to_string()
    } else {
        parts.join("_")
    };
    shortened(name)
}

/// The most characters of a run's name (its folder's name; file systems allow 255 bytes).
pub const MAX_NAME: usize = 100;

/// `name` as it is when it is at most [`MAX_NAME`] characters (all ASCII here); else its
/// first characters and a hash of the whole, so that long names stay apart.
fn shortened(name: String) -> String {
    if name.len() <= MAX_NAME {
        return name;
    }
    let hash = name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    format!("{}-{:016x}", &name[..MAX_NAME - 17], hash)
}

/// A value as short as it reads: `1e-3` rather than `0.001`.
fn name_fragment(v: &SettingValue) -> String {
    match v {
        SettingValue::Float(x) => {
            let plain = format!("{x}");
            let sci = format!("{x:e}");
            if sci.len() < plain.len() {
                sci
            } else {
                plain
            }
        }
        other => other.to_string(),
    }
}

/// Whether two keys name one setting (`lr` and `optimizer.lr`); unknown keys never do.
fn same_setting(a: &str, b: &str) -> bool {
    a == b || matches!((Settings::key(a), Settings::key(b)), (Ok(x), Ok(y)) if x == y)
}

fn is_safe_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
}
