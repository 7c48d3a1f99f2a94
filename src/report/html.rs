//! The confusion matrix as an HTML table, laid out as in the notebook: emotion names on both
//! axes, counts with row percentages, shaded cells, and per-class scores.
//!
//! All styling is inline so the table stays self-contained when pasted into other reports.
//! Every count cell carries `data-true`, `data-pred` and `data-count` attributes, so scripts
//! (and the tests) can read the matrix back.

use super::confusion_png::{row_share, shade, text_is_light};
use crate::data::EMOTIONS;
use crate::metrics::Confusion;
use crate::shape::NUM_CLASSES;
use std::fmt::Write;

const TABLE_STYLE: &str = "border-collapse:collapse;font-family:'DejaVu Sans',Verdana,sans-serif;font-size:14px;margin:1em 0";
const HEAD_STYLE: &str =
    "padding:6px 10px;border:1px solid #ccc;background:#f0f0f0;font-weight:bold;text-align:center";
const ROW_HEAD_STYLE: &str =
    "padding:6px 10px;border:1px solid #ccc;background:#f0f0f0;font-weight:bold;text-align:left";
const NUM_STYLE: &str = "padding:6px 10px;border:1px solid #ccc;text-align:right";

/// Escapes `&`, `<`, `>`, `"` and `'` so `text` can go in HTML content or attributes.
pub fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for ch in text.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A complete HTML page for `c` under `title`: accuracy and macro-F1 up top, then
/// [`confusion_table_fragment`].
pub fn confusion_html(c: &Confusion, title: &str) -> String {
    let title = escape_html(title);
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>{title}</title>\n\
         <style>body{{font-family:'DejaVu Sans',Verdana,sans-serif;margin:2em;color:#222}}\
         h1{{font-size:1.4em}} p{{max-width:60em}}</style>\n</head>\n<body>\n<h1>{title}</h1>\n\
         <p>{total} images. Accuracy <b>{acc:.1}%</b>, macro-F1 <b>{f1:.3}</b>.</p>\n\
         <p>Rows are the true class, columns the predicted class. Each cell shows the count and \
         its share of the row, and is shaded by that share.</p>\n{table}</body>\n</html>\n",
        total = c.total(),
        acc = 100.0 * c.accuracy(),
        f1 = c.macro_f1(),
        table = confusion_table_fragment(c),
    )
}

/// Just the `<table>` for `c` (for sweep and cross-validation reports): a row per true class
/// with its counts and row shares, then its support, precision, recall and F1; a footer with
/// the predicted totals, the accuracy and the macro-F1.
pub fn confusion_table_fragment(c: &Confusion) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "<table class=\"confusion\" style=\"{TABLE_STYLE}\">");
    header(&mut s);
    s.push_str("<tbody>\n");
    let scores = c.class_scores();
    for (t, score) in scores.iter().enumerate() {
        let _ = write!(
            s,
            "<tr><th scope=\"row\" style=\"{ROW_HEAD_STYLE}\">{}</th>",
            escape_html(EMOTIONS[t])
        );
        for p in 0..NUM_CLASSES {
            count_cell(&mut s, c, t, p);
        }
        let _ = writeln!(
            s,
            "<td style=\"{NUM_STYLE}\">{}</td><td style=\"{NUM_STYLE}\">{:.3}</td>\
             <td style=\"{NUM_STYLE}\">{:.3}</td><td style=\"{NUM_STYLE}\">{:.3}</td></tr>",
            score.support, score.precision, score.recall, score.f1
        );
    }
    s.push_str("</tbody>\n");
    footer(&mut s, c);
    s.push_str("</table>\n");
    s
}

fn header(s: &mut String) {
    let _ = write!(
        s,
        "<thead><tr><th style=\"{HEAD_STYLE}\">True \\ Predicted</th>"
    );
    for name in EMOTIONS {
        let _ = write!(
            s,
            "<th scope=\"col\" style=\"{HEAD_STYLE}\">{}</th>",
            escape_html(name)
        );
    }
    for name in ["Support", "Precision", "Recall", "F1"] {
        let _ = write!(s, "<th scope=\"col\" style=\"{HEAD_STYLE}\">{name}</th>");
    }
    s.push_str("</tr></thead>\n");
}

fn count_cell(s: &mut String, c: &Confusion, t: usize, p: usize) {
    let share = row_share(c, t, p);
    let (r, g, b) = shade(share);
    let ink = if text_is_light(share) { "#fff" } else { "#222" };
    let border = if t == p {
        "2px solid #333"
    } else {
        "1px solid #ccc"
    };
    let _ = write!(
        s,
        "<td data-true=\"{}\" data-pred=\"{}\" data-count=\"{}\" \
         style=\"padding:6px 10px;border:{border};text-align:center;background:#{r:02x}{g:02x}{b:02x};color:{ink}\">\
         {}<br><small>{:.1}%</small></td>",
        escape_html(EMOTIONS[t]),
        escape_html(EMOTIONS[p]),
        c.counts[t][p],
        c.counts[t][p],
        100.0 * share
    );
}

fn footer(s: &mut String, c: &Confusion) {
    let _ = write!(
        s,
        "<tfoot><tr><th scope=\"row\" style=\"{ROW_HEAD_STYLE}\">Predicted total</th>"
    );
    for p in 0..NUM_CLASSES {
        let column: u64 = (0..NUM_CLASSES).map(|t| c.counts[t][p]).sum();
        let _ = write!(s, "<td style=\"{NUM_STYLE}\">{column}</td>");
    }
    let _ = writeln!(
        s,
        "<td style=\"{NUM_STYLE}\">{}</td><td colspan=\"3\" style=\"{NUM_STYLE}\"></td></tr>",
        c.total()
    );
    let _ = writeln!(
        s,
        "<tr><th scope=\"row\" style=\"{ROW_HEAD_STYLE}\">Accuracy</th>\
         <td colspan=\"{}\" style=\"{NUM_STYLE};text-align:left\">{:.1}% &middot; macro-F1 {:.3}</td></tr></tfoot>",
        NUM_CLASSES + 4,
        100.0 * c.accuracy(),
        c.macro_f1()
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup() {
        assert_eq!(
            escape_html("<a href=\"x\">R&D's</a>"),
            "&lt;a href=&quot;x&quot;&gt;R&amp;D&#39;s&lt;/a&gt;"
        );
    }
}
