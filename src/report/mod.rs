//! What a training run leaves behind: the per-epoch metrics CSV, the learning curves, the
//! confusion matrix as PNG and HTML, `summary.json`, exported images, the data overview and
//! the terminal progress reporter.
//!
//! Every file is written through [`write_atomic`], so a run killed mid-write never leaves a
//! half-written report or checkpoint behind.

pub mod confusion_png;
pub mod html;
pub mod images;
pub mod metrics_csv;
pub mod plot;
pub mod progress;
pub mod summary;

pub use confusion_png::write_confusion_png;
pub use html::{confusion_html, confusion_table_fragment, escape_html};
pub use images::{export_images, image_name, info_text};
pub use metrics_csv::{read_metrics_csv, write_metrics_csv, EpochRecord, METRICS_HEADER};
pub use plot::write_curves;
pub use progress::{epoch_line, Display, Progress};
pub use summary::{read_summary_json, write_summary_json, ClassSummary, Summary};

use crate::error::{Error, Result};
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

/// DejaVu Sans, bundled so plots render the same everywhere without system font lookup.
static DEJAVU_SANS: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");

/// Writes `bytes` to `path` atomically: they go to `path.<pid>.tmp` in the same folder
/// (unique to this process, so two writers never share one), which is flushed to disk and
/// then renamed over `path`. Readers see the old file or the new one, never a mix. The
/// folder must exist.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = temp_path(path);
    let written = (|| {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()
    })();
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(Error::io(&tmp, e));
    }
    if let Err(e) = fs::rename(&tmp, path) {
        let _ = fs::remove_file(&tmp);
        return Err(Error::io(path, e));
    }
    sync_parent(path);
    Ok(())
}

/// `path` with `.<pid>.tmp` appended to its file name (`metrics.csv` →
/// `metrics.csv.4242.tmp`).
fn temp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".{}.tmp", std::process::id()));
    path.with_file_name(name)
}

/// Makes the rename itself durable. Best effort: not every platform can open a folder.
fn sync_parent(path: &Path) {
    #[cfg(unix)]
    {
        let parent = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        if let Ok(dir) = File::open(parent) {
            let _ = dir.sync_all();
        }
    }
    #[cfg(not(unix))]
    let _ = path;
}

/// Registers the bundled font as plotters' `"sans-serif"` family (once per process). With
/// the `ab_glyph` feature plotters has no font until one is registered.
pub(crate) fn register_fonts() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let ok = plotters::style::register_font(
            "sans-serif",
            plotters::style::FontStyle::Normal,
            DEJAVU_SANS,
        )
        .is_ok();
        assert!(ok, "the bundled DejaVu Sans font failed to parse");
    });
}

/// A plotting or encoding failure on `path`, reported as an I/O error on that file.
pub(crate) fn draw_error(path: &Path, what: impl std::fmt::Display) -> Error {
    Error::io(path, std::io::Error::other(what.to_string()))
}

/// Encodes `(height, width, channels)` pixels as PNG; `color` says whether they are
/// grayscale (1 channel) or RGB (3 channels).
pub(crate) fn encode_png(
    path: &Path,
    pixels: &[u8],
    width: u32,
    height: u32,
    color: image::ExtendedColorType,
) -> Result<Vec<u8>> {
    use image::ImageEncoder;
    let mut out = Vec::new();
    image::codecs::png::PngEncoder::new(&mut out)
        .write_image(pixels, width, height, color)
        .map_err(|e| draw_error(path, format!("PNG encoding failed: {e}")))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temp_path_appends_to_the_file_name() {
        assert_eq!(
            temp_path(Path::new("runs/a/metrics.csv")),
            PathBuf::from(format!("runs/a/metrics.csv.{}.tmp", std::process::id()))
        );
    }
}
