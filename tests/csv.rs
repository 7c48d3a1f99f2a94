//! The FER2013 CSV loader on files the tests write themselves: both layouts, gzip, every kind
//! of bad row (with its 1-based line number), unusable files, and a write → load round trip.

use std::io::Write;
use std::path::{Path, PathBuf};

use fergpu::data::csv::{load, write, LoadOptions};
use fergpu::data::{Dataset, Usage};
use fergpu::rng::Rng;
use fergpu::shape::IMAGE_PIXELS;
use fergpu::Error;

/// A fresh, empty directory for one test under cargo's per-target temporary directory.
fn temp_dir(test: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("csv-{test}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn write_file(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

/// `n` seeded random images `(n, 48·48)`, labels and usages.
fn random_dataset(n: usize, seed: u64) -> Dataset {
    let mut r = Rng::new(seed);
    let mut ds = Dataset::default();
    for i in 0..n {
        let image: Vec<u8> = (0..IMAGE_PIXELS).map(|_| r.below(256) as u8).collect();
        ds.push(&image, r.below(7) as u8, Usage::ALL[i % 3]);
    }
    ds
}

/// The pixels of image `i` as the space-separated text of a CSV field.
fn pixel_text(ds: &Dataset, i: usize) -> String {
    let values: Vec<String> = ds.image(i).iter().map(|p| p.to_string()).collect();
    values.join(" ")
}

/// The icml layout, with a space after every comma in the header and in each row.
fn icml_text(ds: &Dataset) -> String {
    let mut s = String::from("emotion, Usage, pixels\n");
    for i in 0..ds.len() {
        s += &format!(
            "{}, {}, {}\n",
            ds.labels[i],
            ds.usage[i].name(),
            pixel_text(ds, i)
        );
    }
    s
}

/// The fer2013.csv layout, pixels quoted on even rows (both forms occur in copies found
/// online).
fn fer2013_text(ds: &Dataset) -> String {
    let mut s = String::from("emotion,pixels,Usage\n");
    for i in 0..ds.len() {
        let px = pixel_text(ds, i);
        let px = if i % 2 == 0 { format!("\"{px}\"") } else { px };
        s += &format!("{},{},{}\n", ds.labels[i], px, ds.usage[i].name());
    }
    s
}

fn load_ok(path: &Path) -> Dataset {
    let (ds, report) =
        load(path, &LoadOptions::default()).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(report.rows, ds.len());
    assert!(report.skipped.is_empty());
    assert!(report.seconds >= 0.0);
    ds
}

#[test]
fn both_layouts_load_the_same_data() {
    let dir = temp_dir("layouts");
    let ds = random_dataset(7, 1);
    let icml = write_file(&dir, "icml_face_data.csv", icml_text(&ds).as_bytes());
    let fer = write_file(&dir, "fer2013.csv", fer2013_text(&ds).as_bytes());
    assert_eq!(load_ok(&icml), ds);
    assert_eq!(load_ok(&fer), ds);
}

#[test]
fn header_names_are_trimmed_any_case_any_order_and_crlf_works() {
    let dir = temp_dir("header");
    let ds = random_dataset(4, 2);
    let mut s = String::from("\u{feff} Usage ,PIXELS,  Emotion\r\n");
    for i in 0..ds.len() {
        s += &format!(
            "{},{},{}\r\n",
            ds.usage[i].name(),
            pixel_text(&ds, i),
            ds.labels[i]
        );
    }
    let path = write_file(&dir, "reordered.csv", s.as_bytes());
    assert_eq!(load_ok(&path), ds);
}

#[test]
fn gzip_is_read_transparently_whatever_the_name() {
    let dir = temp_dir("gzip");
    let ds = random_dataset(9, 3);
    let text = icml_text(&ds);
    let gz = write_file(&dir, "icml_face_data.csv.gz", &gzip(text.as_bytes()));
    assert_eq!(load_ok(&gz), ds);
    // Detected by the magic bytes, not the extension.
    let disguised = write_file(
        &dir,
        "plain-looking.csv",
        &gzip(fer2013_text(&ds).as_bytes()),
    );
    assert_eq!(load_ok(&disguised), ds);
}

#[test]
fn write_then_load_round_trips_plain_and_gzip() {
    let dir = temp_dir("roundtrip");
    let mut ds = random_dataset(11, 4);
    // Extremes of every field.
    ds.pixels[..3].copy_from_slice(&[0, 255, 9]);
    ds.labels[0] = 6;
    for name in ["out.csv", "out.csv.gz"] {
        let path = dir.join(name);
        write(&path, &ds).unwrap();
        assert_eq!(load_ok(&path), ds, "{name}");
    }
    let gz = std::fs::read(dir.join("out.csv.gz")).unwrap();
    assert_eq!(gz[..2], [0x1f, 0x8b], "a .gz name is written compressed");
    // No temporary files are left behind.
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 2);
}

/// A pixels field of `n` values, all 128.
fn pixels_n(n: usize) -> String {
    vec!["128"; n].join(" ")
}

/// The pixels field of a good row with value number `pos` (1-based) replaced by `token`.
fn pixels_with(pos: usize, token: &str) -> String {
    let mut v = vec!["7"; IMAGE_PIXELS];
    v[pos - 1] = token;
    v.join(" ")
}

/// A file with a header, two good rows, then `bad` as line 4, then another good row.
fn file_with_bad_row(dir: &Path, name: &str, bad: &str) -> PathBuf {
    let good = format!("0,Training,{}\n", pixels_n(IMAGE_PIXELS));
    let text = format!("emotion,Usage,pixels\n{good}{good}{bad}\n{good}");
    write_file(dir, name, text.as_bytes())
}

/// Asserts `load` fails with a `BadRow` naming `path`, `line` and a problem containing
/// every one of `words`; returns the message.
fn assert_bad_row(path: &Path, line: u64, words: &[&str]) -> String {
    let err = load(path, &LoadOptions::default()).expect_err("a bad row must fail the load");
    let msg = err.to_string();
    match &err {
        Error::BadRow {
            path: p,
            line: l,
            problem,
        } => {
            assert_eq!(p, path, "{msg}");
            assert_eq!(*l, line, "{msg}");
            for w in words {
                assert!(problem.contains(w), "'{w}' missing from: {msg}");
            }
        }
        other => panic!("expected BadRow, got {other:?}"),
    }
    assert!(
        msg.starts_with(&format!("{}:{line}: ", path.display())),
        "{msg}"
    );
    msg
}

#[test]
fn each_bad_row_is_reported_with_file_line_and_problem() {
    let dir = temp_dir("bad-rows");
    let cases: Vec<(&str, String, Vec<&str>)> = vec![
        (
            "short",
            format!("1,Training,{}", pixels_n(IMAGE_PIXELS - 1)),
            vec!["expected 2304 values, found 2303"],
        ),
        (
            "long",
            format!("1,Training,{}", pixels_n(IMAGE_PIXELS + 1)),
            vec!["expected 2304 values, found 2305"],
        ),
        (
            "high",
            format!("1,Training,{}", pixels_with(17, "256")),
            vec!["256", "position 17", "0..=255"],
        ),
        (
            "negative",
            format!("1,Training,{}", pixels_with(2304, "-1")),
            vec!["value -1 at position 2304 is outside 0..=255"],
        ),
        (
            "fraction",
            format!("1,Training,{}", pixels_with(5, "12.5")),
            vec!["'12.5'", "position 5", "not an integer"],
        ),
        (
            "word",
            format!("1,Training,{}", pixels_with(1, "abc")),
            vec!["'abc'", "position 1", "not an integer"],
        ),
        (
            "emotion7",
            format!("7,Training,{}", pixels_n(IMAGE_PIXELS)),
            vec!["emotion", "'7'", "0..=6"],
        ),
        (
            "emotion-word",
            format!("happy,Training,{}", pixels_n(IMAGE_PIXELS)),
            vec!["emotion", "'happy'"],
        ),
        (
            "usage",
            format!("3,Validation,{}", pixels_n(IMAGE_PIXELS)),
            vec!["Usage", "'Validation'"],
        ),
        (
            "missing-field",
            format!("3,{}", pixels_n(IMAGE_PIXELS)),
            vec!["expected 3 columns, found 2"],
        ),
        (
            "empty-pixels",
            "3,Training,".to_string(),
            vec!["expected 2304 values, found 0"],
        ),
    ];
    for (name, row, words) in &cases {
        let path = file_with_bad_row(&dir, &format!("{name}.csv"), row);
        assert_bad_row(&path, 4, words);
    }
}

#[test]
fn line_numbers_count_blank_lines_quoted_newlines_and_gzip() {
    let dir = temp_dir("lines");
    let good = format!("0,Training,{}\n", pixels_n(IMAGE_PIXELS));
    let bad = format!("9,Training,{}\n", pixels_n(IMAGE_PIXELS));
    // Line 2 good, line 3 blank, line 4 bad.
    let text = format!("emotion,Usage,pixels\n{good}\n{bad}");
    let path = write_file(&dir, "blank.csv", text.as_bytes());
    assert_bad_row(&path, 4, &["emotion"]);
    // A quoted pixels field spanning lines 2–3; the bad row is line 4.
    let split = pixels_n(IMAGE_PIXELS).replacen(' ', "\n", 1);
    let text = format!("emotion,Usage,pixels\n0,Training,\"{split}\"\n{bad}");
    let path = write_file(&dir, "multiline.csv", text.as_bytes());
    assert_bad_row(&path, 4, &["emotion"]);
    // CRLF line ends with blank CRLF lines: line 2 good, 3 and 4 blank, 5 bad.
    let crlf = |row: &str| row.replace('\n', "\r\n");
    let text = format!(
        "emotion,Usage,pixels\r\n{}\r\n\r\n{}",
        crlf(&good),
        crlf(&bad)
    );
    let path = write_file(&dir, "crlf.csv", text.as_bytes());
    assert_bad_row(&path, 5, &["emotion"]);
    // The same in gzip: lines of the decompressed text.
    let text = format!("emotion,Usage,pixels\n{good}{good}{good}{good}{bad}");
    let path = write_file(&dir, "deep.csv.gz", &gzip(text.as_bytes()));
    assert_bad_row(&path, 6, &["emotion"]);
}

#[test]
fn skip_bad_rows_loads_the_rest_and_reports_each_skipped_row() {
    let dir = temp_dir("skip");
    let ds = random_dataset(5, 5);
    let mut text = icml_text(&ds);
    text += &format!("8,Training,{}\n", pixels_n(IMAGE_PIXELS)); // line 7
    text += &format!("1,Training,{}\n", pixels_n(3)); // line 8
    let more = random_dataset(1, 6);
    text += icml_text(&more).lines().nth(1).unwrap(); // line 9, good
    text.push('\n');
    let path = write_file(&dir, "some-bad.csv", text.as_bytes());

    let opts = LoadOptions {
        skip_bad_rows: true,
    };
    let (got, report) = load(&path, &opts).unwrap();
    let mut want = ds.clone();
    want.push(more.image(0), more.labels[0], more.usage[0]);
    assert_eq!(got, want);
    assert_eq!(report.rows, 6);
    assert_eq!(report.skipped.len(), 2);
    let lines: Vec<u64> = report
        .skipped
        .iter()
        .map(|e| match e {
            Error::BadRow { line, .. } => *line,
            other => panic!("expected BadRow, got {other:?}"),
        })
        .collect();
    assert_eq!(lines, [7, 8]);

    // Without the option the first one stops the load.
    assert_bad_row(&path, 7, &["emotion"]);

    // Every row bad: an error even when skipping, naming the count and the first problem.
    let text = format!(
        "emotion,Usage,pixels\n9,Training,{0}\n9,Training,{0}\n",
        pixels_n(IMAGE_PIXELS)
    );
    let path = write_file(&dir, "all-bad.csv", text.as_bytes());
    let msg = bad_data_message(&path, &opts);
    assert!(msg.contains("all 2 data rows are malformed"), "{msg}");
    assert!(msg.contains(":2: emotion"), "{msg}");
}

/// Asserts `load` fails with `BadData` naming `path`; returns the message.
fn bad_data_message(path: &Path, opts: &LoadOptions) -> String {
    match load(path, opts) {
        Err(e @ Error::BadData { .. }) => {
            let msg = e.to_string();
            assert!(msg.starts_with(&path.display().to_string()), "{msg}");
            msg
        }
        Err(other) => panic!("{}: expected BadData, got {other:?}", path.display()),
        Ok((ds, _)) => panic!("{}: loaded {} rows", path.display(), ds.len()),
    }
}

#[test]
fn unusable_files_are_clear_errors_not_panics() {
    let dir = temp_dir("unusable");
    let opts = LoadOptions::default();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("empty.csv", vec![], "empty file"),
        (
            "header-only.csv",
            b"emotion, Usage, pixels\n".to_vec(),
            "no data rows",
        ),
        (
            "no-usage.csv",
            format!("emotion,pixels\n0,{}\n", pixels_n(IMAGE_PIXELS)).into_bytes(),
            "missing column 'usage'",
        ),
        (
            "twice.csv",
            b"emotion,Usage,pixels,emotion\n".to_vec(),
            "'emotion' twice",
        ),
        ("empty.csv.gz", gzip(b""), "empty file"),
    ];
    for (name, bytes, words) in &cases {
        let path = write_file(&dir, name, bytes);
        let msg = bad_data_message(&path, &opts);
        assert!(msg.contains(words), "{name}: {msg}");
    }

    // Binary data: a PNG signature, then seeded random bytes (NULs included).
    let mut r = Rng::new(7);
    let mut bytes = b"\x89PNG\r\n\x1a\n".to_vec();
    bytes.extend((0..5000).map(|_| r.below(256) as u8));
    let path = write_file(&dir, "picture.csv", &bytes);
    let msg = bad_data_message(&path, &opts);
    assert!(msg.contains("not a CSV file"), "{msg}");

    // Printable bytes with no line break, larger than any row: rejected without reading the
    // whole file into one record, plain or compressed.
    let endless: Vec<u8> = (0..3usize << 20).map(|i| b'a' + (i % 26) as u8).collect();
    for (name, bytes) in [
        ("endless.bin", endless.clone()),
        ("endless.gz", gzip(&endless)),
    ] {
        let path = write_file(&dir, name, &bytes);
        let msg = bad_data_message(&path, &opts);
        assert!(msg.contains("line 1 is longer than 1024 KiB"), "{msg}");
    }

    // A truncated gzip stream: the rows read before the cut are not silently accepted.
    let ds = random_dataset(20, 8);
    let gz = gzip(icml_text(&ds).as_bytes());
    let path = write_file(&dir, "cut.csv.gz", &gz[..gz.len() / 2]);
    let msg = bad_data_message(&path, &opts);
    assert!(msg.contains("cannot decompress"), "{msg}");

    // A file that does not exist is an I/O error naming it.
    let missing = dir.join("nope.csv");
    match load(&missing, &opts) {
        Err(e @ Error::Io { .. }) => assert!(e.to_string().contains("nope.csv")),
        other => panic!("expected Io, got {other:?}"),
    }
}

/// The rows of `text` after the header, split on `\n` (test files have no other breaks).
fn lines_of(text: &str) -> Vec<String> {
    text.lines().skip(1).map(str::to_string).collect()
}

/// `ds` without row `skip`.
fn without(ds: &Dataset, skip: usize) -> Dataset {
    let rows: Vec<usize> = (0..ds.len()).filter(|&r| r != skip).collect();
    ds.subset(&rows)
}

#[test]
fn a_stray_quote_costs_its_own_row_and_nothing_after_it() {
    let dir = temp_dir("stray-quote");
    let ds = random_dataset(50, 9);
    let skip = LoadOptions {
        skip_bad_rows: true,
    };
    // Row 10 (line 11) gets a `"` at the start of each of its fields in turn, in both
    // layouts (fer2013.csv quotes the pixels of every other row).
    for (layout, text) in [("icml", icml_text(&ds)), ("fer2013", fer2013_text(&ds))] {
        let rows = lines_of(&text);
        let header = text.lines().next().unwrap();
        let fields = rows[9].split(',').count();
        for field in 0..fields {
            let mut cells: Vec<String> = rows[9].split(',').map(str::to_string).collect();
            cells[field] = format!("\"{}", cells[field].trim_start_matches('"'));
            let mut broken = rows.clone();
            broken[9] = cells.join(",");
            let body = format!("{header}\n{}\n", broken.join("\n"));
            let name = format!("{layout}-field{field}.csv");
            let path = write_file(&dir, &name, body.as_bytes());
            let (got, report) = load(&path, &skip).unwrap();
            assert_eq!(report.skipped.len(), 1, "{name}: {:?}", report.skipped);
            assert_eq!(got, without(&ds, 9), "{name}: the other 49 rows, exactly");
            let msg = report.skipped[0].to_string();
            assert!(msg.contains(":11: "), "{name}: {msg}");
            // Without skipping, the load stops at that row.
            let msg = assert_bad_row(&path, 11, &[]);
            assert!(!msg.is_empty());
        }
    }
}

#[test]
fn quotes_are_read_only_as_the_format_allows() {
    let dir = temp_dir("quotes");
    let px = pixels_n(IMAGE_PIXELS);
    let cases = [
        (
            "inside",
            format!("0,Train\"ing,{px}"),
            "does not start with one",
        ),
        (
            "after-close",
            format!("0,\"Training\"x,{px}"),
            "text after its closing quote",
        ),
        ("never-closed", format!("0,Training,\"{px}"), "never closed"),
    ];
    for (name, bad, words) in &cases {
        // The bad row is the last line, so an unclosed quote meets the end of the file.
        let good = format!("0,Training,{px}\n");
        let text = format!("emotion,Usage,pixels\n{good}{good}{bad}\n");
        let path = write_file(&dir, &format!("{name}.csv"), text.as_bytes());
        assert_bad_row(&path, 4, &[words]);
    }
    // Quoted fields, doubled quotes and a pixels field wrapped over lines are CSV.
    let ds = random_dataset(2, 10);
    let wrapped = pixel_text(&ds, 1).replacen(' ', "\r\n", 3);
    let text = format!(
        "\"emotion\",\"Usage\",\"pixels\"\n\"{}\",\"{}\",\"{}\"\n{},{},\"{wrapped}\"\n",
        ds.labels[0],
        ds.usage[0].name(),
        pixel_text(&ds, 0),
        ds.labels[1],
        ds.usage[1].name(),
    );
    let path = write_file(&dir, "quoted.csv", text.as_bytes());
    assert_eq!(load_ok(&path), ds);
    let text = format!("emotion,Usage,pixels\n0,\"Train\"\"ing\",{px}\n");
    let path = write_file(&dir, "doubled.csv", text.as_bytes());
    assert_bad_row(&path, 2, &["Train\"ing"]);
}

#[test]
fn cr_only_and_mixed_line_ends_number_lines_as_an_editor_does() {
    let dir = temp_dir("cr-only");
    let good = format!("0,Training,{}", pixels_n(IMAGE_PIXELS));
    let bad = format!("9,Training,{}", pixels_n(IMAGE_PIXELS));
    // Lines: 1 header, 2 good, 3 bad, 4 good, 5 blank, 6 bad.
    let lines = ["emotion,Usage,pixels", &good, &bad, &good, "", &bad];
    for (name, end) in [("cr", "\r"), ("lf", "\n"), ("crlf", "\r\n")] {
        let text = lines.join(end) + end;
        let path = write_file(&dir, &format!("{name}.csv"), text.as_bytes());
        assert_bad_row(&path, 3, &["emotion"]);
        let opts = LoadOptions {
            skip_bad_rows: true,
        };
        let (ds, report) = load(&path, &opts).unwrap();
        assert_eq!(ds.len(), 2, "{name}");
        let at: Vec<u64> = report
            .skipped
            .iter()
            .map(|e| match e {
                Error::BadRow { line, .. } => *line,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(at, [3, 6], "{name}");
    }
    // Every convention in one file: `\r\n`, `\r`, `\n`.
    let text = format!("emotion,Usage,pixels\r\n{good}\r{good}\n{bad}\n");
    let path = write_file(&dir, "mixed.csv", text.as_bytes());
    assert_bad_row(&path, 4, &["emotion"]);
}

#[test]
fn control_bytes_in_a_bad_field_are_shown_escaped() {
    let dir = temp_dir("control");
    let px = pixels_n(IMAGE_PIXELS);
    let text = format!("emotion,Usage,pixels\n0,\x1b[2JTrain\x07,{px}\n");
    let path = write_file(&dir, "esc.csv", text.as_bytes());
    let msg = assert_bad_row(&path, 2, &["Usage"]);
    assert!(!msg.chars().any(|c| c.is_control()), "{msg:?}");
    assert!(msg.contains("\\u{1b}[2JTrain\\u{7}"), "{msg}");
}
