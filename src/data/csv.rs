//! FER2013 CSV reading and writing.
//!
//! Reads both layouts found in the wild, `icml_face_data.csv` (`emotion, Usage, pixels`, a
//! space after each comma) and `fer2013.csv` (`emotion,pixels,Usage`): header names are
//! trimmed and matched case-insensitively, in any column order. A file starting with the gzip
//! magic bytes is inflated transparently, whatever its name. Every row is validated; a bad
//! row is an [`Error::BadRow`] naming its 1-based line (the header is line 1) and the problem.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use ::csv::{ByteRecord, ReaderBuilder};
use flate2::write::GzEncoder;

use super::{gz, Dataset, Usage};
use crate::shape::{IMAGE_PIXELS, NUM_CLASSES};
use crate::{Error, Result};

/// How [`load`] treats malformed rows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LoadOptions {
    /// Skip malformed rows (and list them in [`LoadReport::skipped`]) instead of failing on
    /// the first one.
    pub skip_bad_rows: bool,
}

/// What [`load`] did.
#[derive(Debug)]
pub struct LoadReport {
    /// Rows loaded.
    pub rows: usize,
    /// The [`Error::BadRow`] of every skipped row, in file order (empty unless
    /// [`LoadOptions::skip_bad_rows`]).
    pub skipped: Vec<Error>,
    /// Wall-clock seconds the load took.
    pub seconds: f64,
}

/// The three columns fergpu needs, as indices into a row.
#[derive(Clone, Copy, Debug)]
struct Columns {
    emotion: usize,
    usage: usize,
    pixels: usize,
    /// Fields per row, as in the header.
    count: usize,
}

/// Loads a FER2013 CSV (plain or gzip) and validates every row.
///
/// Errors: [`Error::Io`] when the file cannot be read, [`Error::BadData`] when it is empty,
/// has no data rows, lacks a column or is not CSV at all, [`Error::BadRow`] for the first
/// malformed row unless `opts.skip_bad_rows`.
pub fn load(path: &Path, opts: &LoadOptions) -> Result<(Dataset, LoadReport)> {
    let start = Instant::now();
    let (parsed, was_gz) = gz::with_reader(path, |r| parse(path, r, opts))?;
    let (ds, skipped) = parsed.map_err(|e| match e {
        ParseError::Io(e) if LineTooLong::is(&e) => bad_data(path, e.to_string()),
        ParseError::Io(e) if was_gz => bad_data(path, format!("cannot decompress: {e}")),
        ParseError::Io(e) => Error::io(path, e),
        ParseError::Data(e) => e,
    })?;
    if ds.is_empty() {
        let problem = match skipped.first() {
            None => "no data rows after the header".to_string(),
            Some(first) => format!(
                "all {} data rows are malformed; the first: {first}",
                skipped.len()
            ),
        };
        return Err(bad_data(path, problem));
    }
    let report = LoadReport {
        rows: ds.len(),
        skipped,
        seconds: start.elapsed().as_secs_f64(),
    };
    Ok((ds, report))
}

/// Why parsing stopped: the stream failed, or the data is bad.
enum ParseError {
    Io(io::Error),
    Data(Error),
}

impl From<Error> for ParseError {
    fn from(e: Error) -> Self {
        ParseError::Data(e)
    }
}

/// Parses the CSV text from `r`; returns the rows and the skipped rows' errors.
fn parse(
    path: &Path,
    r: &mut dyn Read,
    opts: &LoadOptions,
) -> Result<(Dataset, Vec<Error>), ParseError> {
    // Rows have 3 fields of ~9 KB; a large buffer keeps csv-core in its fast loop.
    let mut reader = ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .buffer_capacity(1 << 20)
        .from_reader(LineTracker::new(r));
    let mut record = ByteRecord::new();
    let got_header = reader
        .read_byte_record(&mut record)
        .map_err(|e| csv_error(path, e))?;
    if !got_header {
        return Err(bad_data(
            path,
            "empty file (expected a header line such as 'emotion, Usage, pixels')",
        )
        .into());
    }
    let cols = find_columns(path, &record)?;

    let mut ds = Dataset::default();
    let mut skipped = Vec::new();
    let mut image = vec![0u8; IMAGE_PIXELS];
    while reader
        .read_byte_record(&mut record)
        .map_err(|e| csv_error(path, e))?
    {
        // Not `Position::line`: the csv crate gives a record after blank lines the line of
        // the first blank one (rust-csv issue #208); its byte offset is right, though.
        let start = record.position().map_or(0, |p| p.byte());
        let line = reader.get_mut().line_of(start);
        match parse_row(&record, cols, &mut image) {
            Ok((label, usage)) => ds.push(&image, label, usage),
            Err(problem) => {
                let err = Error::BadRow {
                    path: path.to_path_buf(),
                    line,
                    problem,
                };
                if !opts.skip_bad_rows {
                    return Err(err.into());
                }
                skipped.push(err);
            }
        }
    }
    Ok((ds, skipped))
}

/// A [`Read`] pass-through that remembers where line breaks are, so a record's byte offset
/// can be turned into its 1-based line number.
///
/// It keeps the maximal runs of `\r`/`\n` bytes not yet behind the parser: a record starts at
/// the first byte after the run its offset falls in (blank lines, or the `\n` of a CRLF that
/// the csv crate counts as the next record's), or at its offset when that is no break.
struct LineTracker<R> {
    inner: R,
    /// Bytes handed out so far.
    offset: u64,
    /// `\n` bytes handed out so far.
    newlines: u64,
    /// Runs of break bytes after the last queried offset, in file order.
    runs: VecDeque<BreakRun>,
    /// `\n` bytes before the end of the last run dropped from `runs`.
    newlines_dropped: u64,
    /// Offset just past the last break byte: where the current line began.
    line_start: u64,
}

/// The longest line accepted. A FER2013 row is ~9 KB; anything near this is not a FER CSV
/// (a binary file with no line break would otherwise be read whole into one record).
const MAX_LINE: u64 = 1 << 20;

/// Why [`LineTracker`] stopped the stream: a line longer than [`MAX_LINE`].
#[derive(Debug)]
struct LineTooLong {
    line: u64,
}

impl std::fmt::Display for LineTooLong {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "not a FER2013 CSV file: line {} is longer than {} KiB (rows are about 9 KB)",
            self.line,
            MAX_LINE >> 10
        )
    }
}

impl std::error::Error for LineTooLong {}

impl LineTooLong {
    /// True when `e` carries a [`LineTooLong`].
    fn is(e: &io::Error) -> bool {
        e.get_ref().is_some_and(|inner| inner.is::<LineTooLong>())
    }
}

/// Bytes `start..end` are all `\r` or `\n`; `newlines_at_end` counts `\n` in the file up to
/// `end`.
#[derive(Clone, Copy, Debug)]
struct BreakRun {
    start: u64,
    end: u64,
    newlines_at_end: u64,
}

impl<R: Read> LineTracker<R> {
    fn new(inner: R) -> Self {
        LineTracker {
            inner,
            offset: 0,
            newlines: 0,
            runs: VecDeque::new(),
            newlines_dropped: 0,
            line_start: 0,
        }
    }

    /// The 1-based line of the record whose parse started at byte `start`. Offsets must be
    /// queried in increasing order (runs before `start` are forgotten).
    fn line_of(&mut self, start: u64) -> u64 {
        while let Some(run) = self.runs.front().copied() {
            if run.end > start {
                if run.start <= start {
                    // Inside a run of breaks: the record begins right after it.
                    return run.newlines_at_end + 1;
                }
                break;
            }
            self.newlines_dropped = run.newlines_at_end;
            self.runs.pop_front();
        }
        self.newlines_dropped + 1
    }

    /// Records the break runs in `bytes`, the next bytes handed out.
    ///
    /// Breaks are one byte in ~9,000 here, so each 64-byte block is first tested with a
    /// branch-free OR over a fixed-size array, which the compiler turns into SIMD compares;
    /// only blocks holding a break are walked byte by byte.
    fn scan(&mut self, bytes: &[u8]) {
        const BLOCK: usize = 64;
        let is_break = |b: u8| b == b'\n' || b == b'\r';
        let blocks = bytes.chunks_exact(BLOCK);
        let tail = blocks.remainder();
        for (k, block) in blocks.enumerate() {
            let block: &[u8; BLOCK] = block.try_into().expect("chunks_exact yields full blocks");
            let hits = block
                .iter()
                .fold(0u8, |acc, &b| acc | (b == b'\n') as u8 | (b == b'\r') as u8);
            if hits != 0 {
                self.walk(k * BLOCK, block);
            }
        }
        if tail.iter().copied().any(is_break) {
            self.walk(bytes.len() - tail.len(), tail);
        }
        self.offset += bytes.len() as u64;
    }

    /// Records every break byte of `block`, which starts `at` bytes into the current read.
    fn walk(&mut self, at: usize, block: &[u8]) {
        for (i, &b) in block.iter().enumerate() {
            if b == b'\n' || b == b'\r' {
                self.record_break(self.offset + (at + i) as u64, b);
            }
        }
    }

    /// Adds the break byte `b` at file offset `at` to the runs.
    fn record_break(&mut self, at: u64, b: u8) {
        self.newlines += (b == b'\n') as u64;
        self.line_start = at + 1;
        match self.runs.back_mut() {
            Some(run) if run.end == at => {
                run.end = at + 1;
                run.newlines_at_end = self.newlines;
            }
            _ => self.runs.push_back(BreakRun {
                start: at,
                end: at + 1,
                newlines_at_end: self.newlines,
            }),
        }
    }
}

impl<R: Read> Read for LineTracker<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.scan(&buf[..n]);
        if self.offset - self.line_start > MAX_LINE {
            let err = LineTooLong {
                line: self.newlines + 1,
            };
            return Err(io::Error::new(io::ErrorKind::InvalidData, err));
        }
        Ok(n)
    }
}

/// Maps a csv-crate error: I/O errors pass through, anything else means the file is not CSV.
fn csv_error(path: &Path, e: ::csv::Error) -> ParseError {
    match e.into_kind() {
        ::csv::ErrorKind::Io(e) => ParseError::Io(e),
        other => ParseError::Data(bad_data(
            path,
            format!("not a readable CSV file: {other:?}"),
        )),
    }
}

fn bad_data(path: &Path, problem: impl Into<String>) -> Error {
    Error::BadData {
        path: PathBuf::from(path),
        problem: problem.into(),
    }
}

/// Finds `emotion`, `Usage` and `pixels` in the header (trimmed, any case, any order).
fn find_columns(path: &Path, header: &ByteRecord) -> Result<Columns> {
    let mut names = Vec::with_capacity(header.len());
    for (i, field) in header.iter().enumerate() {
        // A UTF-8 byte-order mark, as some spreadsheet programs write, is not part of the name.
        let field = if i == 0 {
            field.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(field)
        } else {
            field
        };
        let binary = field.iter().any(|&b| b < 0x20 && b != b'\t' || b == 0x7f);
        let name = match std::str::from_utf8(field) {
            Ok(s) if !binary => s.trim().to_ascii_lowercase(),
            _ => {
                return Err(bad_data(
                    path,
                    "not a CSV file: the first line holds binary data, not a header such as 'emotion, Usage, pixels'",
                ))
            }
        };
        names.push(name);
    }
    let find = |want: &str| -> Result<usize> {
        let mut hits = names.iter().enumerate().filter(|(_, n)| *n == want);
        match (hits.next(), hits.next()) {
            (Some((i, _)), None) => Ok(i),
            (Some(_), Some(_)) => Err(bad_data(
                path,
                format!("the header names column '{want}' twice"),
            )),
            (None, _) => Err(bad_data(
                path,
                format!(
                    "missing column '{want}': the header has [{}]; expected emotion, Usage and pixels",
                    names.join(", ")
                ),
            )),
        }
    };
    Ok(Columns {
        emotion: find("emotion")?,
        usage: find("usage")?,
        pixels: find("pixels")?,
        count: header.len(),
    })
}

/// Validates one data row; fills `image` `(48·48)` and returns the label and split.
fn parse_row(row: &ByteRecord, cols: Columns, image: &mut [u8]) -> Result<(u8, Usage), String> {
    if row.len() != cols.count {
        return Err(format!(
            "expected {} columns, found {}",
            cols.count,
            row.len()
        ));
    }
    let label = parse_emotion(&row[cols.emotion])?;
    let usage = parse_usage(&row[cols.usage])?;
    parse_pixels(&row[cols.pixels], image)?;
    Ok((label, usage))
}

/// A field for an error message: lossy UTF-8, trimmed, cut to 20 characters.
fn shown(field: &[u8]) -> String {
    let s = String::from_utf8_lossy(field);
    let s = s.trim();
    if s.chars().count() > 20 {
        format!("{}…", s.chars().take(20).collect::<String>())
    } else {
        s.to_string()
    }
}

fn parse_emotion(field: &[u8]) -> Result<u8, String> {
    std::str::from_utf8(field)
        .ok()
        .and_then(|s| s.trim().parse::<u8>().ok())
        .filter(|&v| (v as usize) < NUM_CLASSES)
        .ok_or_else(|| {
            format!(
                "emotion: '{}' is not in 0..={}",
                shown(field),
                NUM_CLASSES - 1
            )
        })
}

fn parse_usage(field: &[u8]) -> Result<Usage, String> {
    std::str::from_utf8(field)
        .ok()
        .and_then(Usage::from_name)
        .ok_or_else(|| {
            format!(
                "Usage: '{}' is not Training, PublicTest or PrivateTest",
                shown(field)
            )
        })
}

/// Parses `IMAGE_PIXELS` whitespace-separated integers 0..=255 into `out` `(48·48)`.
///
/// One pass over the bytes with no allocation: this loop runs over ~330 MB for the full set.
/// Any irregularity falls back to [`describe_pixels`] for the message.
fn parse_pixels(field: &[u8], out: &mut [u8]) -> Result<(), String> {
    let mut n = 0usize;
    let mut value = 0u32;
    let mut in_number = false;
    for &b in field {
        let digit = b.wrapping_sub(b'0');
        if digit < 10 {
            // Capped so a long digit run cannot overflow; anything above 255 is an error anyway.
            value = (value * 10 + digit as u32).min(1000);
            in_number = true;
        } else if b == b' ' || b == b'\t' || b == b'\r' || b == b'\n' {
            if in_number {
                if value > 255 {
                    return Err(describe_pixels(field));
                }
                if n < out.len() {
                    out[n] = value as u8;
                }
                n += 1;
                value = 0;
                in_number = false;
            }
        } else {
            return Err(describe_pixels(field));
        }
    }
    if in_number {
        if value > 255 {
            return Err(describe_pixels(field));
        }
        if n < out.len() {
            out[n] = value as u8;
        }
        n += 1;
    }
    if n != IMAGE_PIXELS {
        return Err(format!("pixels: expected {IMAGE_PIXELS} values, found {n}"));
    }
    Ok(())
}

/// The first problem in a pixels field, for the message (slow path, bad rows only).
/// Positions are 1-based, like line numbers.
fn describe_pixels(field: &[u8]) -> String {
    let mut count = 0;
    for (i, token) in field
        .split(|b| b.is_ascii_whitespace())
        .filter(|t| !t.is_empty())
        .enumerate()
    {
        let pos = i + 1;
        let unsigned = token.strip_prefix(b"-").unwrap_or(token);
        if token[0] == b'-' && !unsigned.is_empty() && unsigned.iter().all(u8::is_ascii_digit) {
            return format!(
                "pixels: value {} at position {pos} is outside 0..=255",
                shown(token)
            );
        }
        if !token.iter().all(u8::is_ascii_digit) {
            return format!(
                "pixels: '{}' at position {pos} is not an integer in 0..=255",
                shown(token)
            );
        }
        let digits = std::str::from_utf8(token).unwrap_or("");
        if digits.parse::<u32>().map_or(true, |v| v > 255) {
            return format!("pixels: value {digits} at position {pos} is outside 0..=255");
        }
        count += 1;
    }
    format!("pixels: expected {IMAGE_PIXELS} values, found {count}")
}

/// Writes `ds` in the icml layout (`emotion, Usage, pixels` header), gzip-compressed when the
/// path ends in `.gz`. The file appears atomically: it is written to a temporary file in the
/// same directory, then renamed over `path`.
pub fn write(path: &Path, ds: &Dataset) -> Result<()> {
    let name = path
        .file_name()
        .ok_or_else(|| bad_data(path, "not a file name"))?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        name.to_string_lossy(),
        std::process::id()
    ));
    let gzip = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("gz"));
    let written = write_file(&tmp, ds, gzip).and_then(|()| std::fs::rename(&tmp, path));
    written.map_err(|e| {
        // Best effort: the temporary file is useless once writing failed.
        let _ = std::fs::remove_file(&tmp);
        Error::io(path, e)
    })
}

fn write_file(tmp: &Path, ds: &Dataset, gzip: bool) -> io::Result<()> {
    let file = BufWriter::with_capacity(1 << 20, File::create(tmp)?);
    let file = if gzip {
        let mut enc = GzEncoder::new(file, flate2::Compression::default());
        write_rows(&mut enc, ds)?;
        enc.finish()?
    } else {
        let mut file = file;
        write_rows(&mut file, ds)?;
        file
    };
    let file = file.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()
}

/// The CSV text: header, then `emotion,Usage,p0 p1 … p2303` per row. No field ever needs
/// quoting, so the text is built directly.
fn write_rows(w: &mut impl Write, ds: &Dataset) -> io::Result<()> {
    w.write_all(b"emotion, Usage, pixels\n")?;
    let mut line = Vec::with_capacity(IMAGE_PIXELS * 4 + 32);
    for i in 0..ds.len() {
        line.clear();
        write!(line, "{},{},", ds.labels[i], ds.usage[i].name())?;
        for (j, &p) in ds.image(i).iter().enumerate() {
            if j > 0 {
                line.push(b' ');
            }
            push_decimal(&mut line, p);
        }
        line.push(b'\n');
        w.write_all(&line)?;
    }
    w.flush()
}

fn push_decimal(out: &mut Vec<u8>, v: u8) {
    if v >= 100 {
        out.push(b'0' + v / 100);
    }
    if v >= 10 {
        out.push(b'0' + v / 10 % 10);
    }
    out.push(b'0' + v % 10);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pixels_text(values: &[u32]) -> Vec<u8> {
        let s: Vec<String> = values.iter().map(|v| v.to_string()).collect();
        s.join(" ").into_bytes()
    }

    #[test]
    fn pixel_parser_accepts_full_row_and_names_problems() {
        let mut out = vec![0u8; IMAGE_PIXELS];
        let good: Vec<u32> = (0..IMAGE_PIXELS as u32).map(|i| i % 256).collect();
        parse_pixels(&pixels_text(&good), &mut out).unwrap();
        assert!(out.iter().zip(&good).all(|(&a, &b)| a as u32 == b));

        let mut long = good.clone();
        long.push(1);
        assert_eq!(
            parse_pixels(&pixels_text(&long), &mut out).unwrap_err(),
            "pixels: expected 2304 values, found 2305"
        );
        let mut high = good.clone();
        high[16] = 256;
        assert_eq!(
            parse_pixels(&pixels_text(&high), &mut out).unwrap_err(),
            "pixels: value 256 at position 17 is outside 0..=255"
        );
        let mut text = pixels_text(&good);
        text[0] = b'x';
        assert!(parse_pixels(&text, &mut out)
            .unwrap_err()
            .contains("at position 1 is not an integer"));
        // A digit run long enough to overflow u32 must still be an error, not a wrap-around.
        let mut huge = pixels_text(&good[1..]);
        huge.splice(0..0, b"99999999999999999999 ".iter().copied());
        assert!(parse_pixels(&huge, &mut out)
            .unwrap_err()
            .contains("is outside 0..=255"));
    }

    #[test]
    fn decimal_writer_matches_display() {
        for v in 0..=255u8 {
            let mut out = Vec::new();
            push_decimal(&mut out, v);
            assert_eq!(out, v.to_string().into_bytes());
        }
    }
}
