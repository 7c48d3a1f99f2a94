//! What a training run leaves behind: the per-epoch metrics CSV, the learning curves, the
//! confusion matrix as PNG and HTML, `summary.json`, exported images, the data overview and
//! the terminal progress reporter.
//!
//! Every file is written through [`crate::files::write_atomic`], so a run killed mid-write
//! never leaves a half-written report or checkpoint behind.

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
use std::path::Path;

/// `text` safe to print on a terminal: control characters (escape sequences, bells,
/// carriage returns, as file names, checkpoint metadata or a data file may carry) are
/// written as `\u{1b}`-style escapes; line breaks and tabs stay.
pub fn printable(text: &str) -> std::borrow::Cow<'_, str> {
    let unsafe_char = |c: char| c.is_control() && c != '\n' && c != '\t';
    if !text.chars().any(unsafe_char) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if unsafe_char(c) {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

/// Registers the bundled font, DejaVu Sans, as plotters' `"sans-serif"` family (once per
/// process), so plots render the same everywhere without system font lookup. With the
/// `ab_glyph` feature plotters has no font until one is registered.
pub(crate) fn register_fonts() {
    // Plots and annotated copies are files, written natively only; in a browser plotters
    // lays text out with the page's own fonts and has none to register.
    #[cfg(not(target_arch = "wasm32"))]
    {
        static DEJAVU_SANS: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");
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
    #[test]
    fn printable_escapes_control_characters_and_keeps_lines() {
        assert_eq!(super::printable("a\tb\nc"), "a\tb\nc");
        assert_eq!(
            super::printable("x\u{1b}[2Jy\r\u{7}\u{9b}"),
            "x\\u{1b}[2Jy\\u{d}\\u{7}\\u{9b}"
        );
    }
}
