//! A sweep's results: one [`RunResult`] per run, written as CSV and as a sortable HTML
//! table.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::grid::SettingValue;
use crate::data::EMOTIONS;
use crate::metrics::Confusion;
use crate::settings::Settings;
use crate::shape::NUM_CLASSES;

/// The outcome of one run of a sweep.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RunResult {
    /// The run's name (its folder).
    pub name: String,
    /// The run's settings, as in its [`super::grid::RunSpec`].
    pub settings: BTreeMap<String, SettingValue>,
    /// Accuracy on the test split, in [0, 1].
    pub test_acc: f64,
    /// Unweighted mean of the per-class F1 scores on the test split.
    pub macro_f1: f64,
    /// The epoch whose weights were kept (the caller's numbering).
    pub best_epoch: usize,
    /// Wall-clock training time in seconds.
    pub seconds: f64,
    /// Test-split confusion matrix.
    pub confusion: Confusion,
}

/// The union of the runs' setting names, in [`Settings::keys`] order, unknown names last
/// alphabetically.
fn setting_columns(results: &[RunResult]) -> Vec<String> {
    let mut keys: Vec<String> = results
        .iter()
        .flat_map(|r| r.settings.keys().cloned())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let keys_in_order = Settings::keys();
    let rank = |k: &str| {
        Settings::key(k)
            .ok()
            .and_then(|key| keys_in_order.iter().position(|&s| s == key))
            .unwrap_or(keys_in_order.len())
    };
    // stable: unknown names keep their alphabetical order
    keys.sort_by_key(|k| rank(k));
    keys
}

/// The CSV text: header `name, <settings…>, test_acc, macro_f1, best_epoch, seconds,
/// confusion`, one row per run in the given order. A setting a run lacks is an empty cell;
/// numbers are written in full precision; `confusion` holds the 49 counts
/// `counts[true][predicted]` row-major, separated by spaces.
pub fn results_csv(results: &[RunResult]) -> String {
    let columns = setting_columns(results);
    let mut w = csv::Writer::from_writer(Vec::new());
    let mut header = vec!["name".to_string()];
    header.extend(columns.iter().cloned());
    header.extend(["test_acc", "macro_f1", "best_epoch", "seconds", "confusion"].map(String::from));
    // Writing to a Vec cannot fail.
    w.write_record(&header).expect("csv to memory");
    for r in results {
        let mut row = vec![r.name.clone()];
        row.extend(
            columns
                .iter()
                .map(|k| r.settings.get(k).map(|v| v.to_string()).unwrap_or_default()),
        );
        row.push(r.test_acc.to_string());
        row.push(r.macro_f1.to_string());
        row.push(r.best_epoch.to_string());
        row.push(r.seconds.to_string());
        let counts: Vec<String> = r
            .confusion
            .counts
            .iter()
            .flatten()
            .map(|c| c.to_string())
            .collect();
        row.push(counts.join(" "));
        w.write_record(&row).expect("csv to memory");
    }
    String::from_utf8(w.into_inner().expect("csv to memory")).expect("csv of UTF-8 strings")
}

/// A self-contained HTML page: one row per run with its settings, test accuracy, macro-F1,
/// best epoch, time and confusion matrix; sorted by accuracy, best first; clicking a column
/// header sorts by it (again to reverse).
pub fn results_html(title: &str, results: &[RunResult]) -> String {
    let columns = setting_columns(results);
    let mut order: Vec<&RunResult> = results.iter().collect();
    order.sort_by(|a, b| b.test_acc.total_cmp(&a.test_acc));

    let mut h = String::new();
    let title = escape(title);
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <title>{title}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n<h1>{title}</h1>\n\
         <p>{} runs. Click a column header to sort by it.</p>\n<table id=\"runs\">\n<thead><tr>",
        results.len()
    );
    header_cell(&mut h, "name", false, false);
    for k in &columns {
        let numeric = results
            .iter()
            .filter_map(|r| r.settings.get(k))
            .all(SettingValue::is_number);
        header_cell(&mut h, k, numeric, false);
    }
    for k in ["test accuracy", "macro-F1", "best epoch", "time"] {
        header_cell(&mut h, k, true, k == "test accuracy");
    }
    h.push_str("<th>confusion (rows true, columns predicted)</th></tr></thead>\n<tbody>\n");
    for r in order {
        h.push_str("<tr>");
        text_cell(&mut h, &r.name);
        for k in &columns {
            match r.settings.get(k) {
                Some(v) => match v.as_f64() {
                    Some(x) => number_cell(&mut h, x, &escape(&v.to_string())),
                    None => text_cell(&mut h, &v.to_string()),
                },
                None => h.push_str("<td data-v=\"\"></td>"),
            }
        }
        number_cell(&mut h, r.test_acc, &format!("{:.2}%", 100.0 * r.test_acc));
        number_cell(&mut h, r.macro_f1, &format!("{:.4}", r.macro_f1));
        number_cell(&mut h, r.best_epoch as f64, &r.best_epoch.to_string());
        number_cell(&mut h, r.seconds, &format!("{:.1} s", r.seconds));
        h.push_str("<td>");
        confusion_table(&mut h, &r.confusion);
        h.push_str("</td></tr>\n");
    }
    let _ = write!(
        h,
        "</tbody>\n</table>\n<script>{SCRIPT}</script>\n</body>\n</html>\n"
    );
    h
}

/// `sorted_desc` marks the column the rows start sorted by, so the next click reverses it.
fn header_cell(h: &mut String, label: &str, numeric: bool, sorted_desc: bool) {
    let dir = if sorted_desc {
        " data-dir=\"desc\""
    } else {
        ""
    };
    let _ = write!(
        h,
        "<th class=\"sort\" data-num=\"{}\"{dir} onclick=\"sortBy(this)\">{}</th>",
        u8::from(numeric),
        escape(label)
    );
}

fn text_cell(h: &mut String, text: &str) {
    let text = escape(text);
    let _ = write!(h, "<td data-v=\"{text}\">{text}</td>");
}

fn number_cell(h: &mut String, value: f64, shown: &str) {
    let _ = write!(h, "<td class=\"num\" data-v=\"{value}\">{shown}</td>");
}

/// The 7×7 counts as a small table, columns abbreviated to three letters (full names on
/// hover), the diagonal highlighted.
fn confusion_table(h: &mut String, c: &Confusion) {
    h.push_str("<table class=\"cm\"><tr><th></th>");
    for name in EMOTIONS {
        let _ = write!(h, "<th title=\"{name}\">{}</th>", &name[..3]);
    }
    h.push_str("</tr>");
    for (t, name) in EMOTIONS.iter().enumerate() {
        let _ = write!(h, "<tr><th>{name}</th>");
        for p in 0..NUM_CLASSES {
            let class = if t == p { " class=\"diag\"" } else { "" };
            let _ = write!(h, "<td{class}>{}</td>", c.counts[t][p]);
        }
        h.push_str("</tr>");
    }
    h.push_str("</table>");
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

const STYLE: &str = "body{font-family:sans-serif;margin:1.5em}\
table#runs{border-collapse:collapse}\
#runs>thead>tr>th,#runs>tbody>tr>td{border:1px solid #ccc;padding:4px 8px;vertical-align:top}\
th.sort{cursor:pointer;background:#f0f0f0}th.sort:hover{background:#e0e0ff}\
th[data-dir=asc]::after{content:' \\25B2'}th[data-dir=desc]::after{content:' \\25BC'}\
td.num{text-align:right}\
table.cm{border-collapse:collapse;font-size:11px}\
table.cm td,table.cm th{padding:1px 4px;text-align:right}td.diag{background:#cfe8cf}";

// Sorts the top-level rows only (each confusion matrix is a table of its own); a missing
// number sorts below every present one.
const SCRIPT: &str = r#"
function sortBy(th) {
  const table = th.closest('table'), body = table.tBodies[0], i = th.cellIndex;
  const num = th.dataset.num === '1';
  const asc = th.dataset.dir !== 'asc';
  for (const o of th.parentNode.cells) delete o.dataset.dir;
  th.dataset.dir = asc ? 'asc' : 'desc';
  const key = r => {
    const v = r.cells[i].dataset.v;
    if (!num) return v;
    const x = parseFloat(v);
    return isNaN(x) ? -Infinity : x;
  };
  const rows = Array.from(body.rows);
  rows.sort((a, b) => {
    const x = key(a), y = key(b);
    const c = num ? (x < y ? -1 : x > y ? 1 : 0) : x.localeCompare(y);
    return asc ? c : -c;
  });
  for (const r of rows) body.appendChild(r);
}
"#;
