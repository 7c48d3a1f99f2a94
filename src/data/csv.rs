//! FER2013 CSV reading and writing.
//!
//! Reads both layouts found in the wild, `icml_face_data.csv` (`emotion, Usage, pixels`, a
//! space after each comma) and `fer2013.csv` (`emotion,pixels,Usage`): header names are
//! trimmed and matched case-insensitively, in any column order. A file starting with the gzip
//! magic bytes is inflated transparently, whatever its name. Every row is validated; a bad
//! row is an [`Error::BadRow`] naming its 1-based line (the header is line 1) and the problem.
//!
//! Lines end at `\n`, `\r\n` or a lone `\r`. Quotes are read as RFC 4180 allows and no
//! further: a field is quoted only when it starts with `"`, and the quote closes at a comma
//! or the line's end. A quoted field may span lines only while it holds pixel values, so one
//! stray quote costs its own row (reported), never the rows after it.

use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use web_time::Instant;

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

/// The most skipped rows whose errors [`load`] keeps (it counts them all): memory stays
/// bounded by the good rows, whatever a file holds.
pub const MAX_BAD_ROWS_KEPT: usize = 100;

/// What [`load`] did.
#[derive(Debug)]
pub struct LoadReport {
    /// Rows loaded.
    pub rows: usize,
    /// Rows skipped as malformed (0 unless [`LoadOptions::skip_bad_rows`]).
    pub bad_rows: usize,
    /// The [`Error::BadRow`] of the first [`MAX_BAD_ROWS_KEPT`] skipped rows, in file order.
    pub skipped: Vec<Error>,
    /// Wall-clock seconds the load took.
    pub seconds: f64,
}

/// The three columns fergpu needs, as indices into a row.
#[derive(Clone, Copy, Debug)]
pub(super) struct Columns {
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
    let (ds, Skipped { count, first }) = parsed.map_err(|e| match e {
        ParseError::Io(e) if LineTooLong::is(&e) => bad_data(path, e.to_string()),
        ParseError::Io(e) if was_gz => bad_data(path, format!("cannot decompress: {e}")),
        ParseError::Io(e) => Error::io(path, e),
        ParseError::Data(e) => e,
    })?;
    if ds.is_empty() {
        let problem = match first.first() {
            None => "no data rows after the header".to_string(),
            Some(e) => format!("all {count} data rows are malformed; the first: {e}"),
        };
        return Err(bad_data(path, problem));
    }
    let report = LoadReport {
        rows: ds.len(),
        bad_rows: count,
        skipped: first,
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

/// Rows skipped while parsing: how many, and the first [`MAX_BAD_ROWS_KEPT`] errors.
#[derive(Default)]
pub(super) struct Skipped {
    pub(super) count: usize,
    pub(super) first: Vec<Error>,
}

/// Parses the CSV text from `r`; returns the rows and the skipped rows.
fn parse(
    path: &Path,
    r: &mut dyn Read,
    opts: &LoadOptions,
) -> Result<(Dataset, Skipped), ParseError> {
    let mut records = Records::new(r);
    let mut record = Record::default();
    let header = records.next(&mut record).map_err(ParseError::Io)?;
    let mut rows = Rows::new(path, header_columns(path, header, &record)?, opts);
    while let Some(shape) = records.next(&mut record).map_err(ParseError::Io)? {
        rows.take(&mut records, &record, shape)?;
    }
    Ok((rows.ds, rows.skipped))
}

/// The columns named by the header record `got` (what [`Records::next`] returned for the
/// first record, read into `record`).
pub(super) fn header_columns(
    path: &Path,
    got: Option<Result<(), String>>,
    record: &Record,
) -> Result<Columns> {
    match got {
        None => Err(bad_data(
            path,
            "empty file (expected a header line such as 'emotion, Usage, pixels')",
        )),
        Some(Err(problem)) => Err(bad_data(
            path,
            format!("the header line is not valid CSV: {problem}"),
        )),
        Some(Ok(())) => find_columns(path, record),
    }
}

/// The data rows read so far and the bad rows skipped, as [`parse`] and
/// [`super::stream::CsvStream`] collect them.
pub(super) struct Rows {
    path: PathBuf,
    cols: Columns,
    skip_bad_rows: bool,
    /// One row's pixels `(48·48)`, reused.
    image: Vec<u8>,
    pub(super) ds: Dataset,
    pub(super) skipped: Skipped,
}

impl Rows {
    pub(super) fn new(path: &Path, cols: Columns, opts: &LoadOptions) -> Rows {
        Rows {
            path: path.to_path_buf(),
            cols,
            skip_bad_rows: opts.skip_bad_rows,
            image: vec![0u8; IMAGE_PIXELS],
            ds: Dataset::default(),
            skipped: Skipped::default(),
        }
    }

    /// Validates the data record `record` (`shape`: whether it is CSV as the format allows)
    /// and keeps it, or records it as bad: skipped, or the error when bad rows are not
    /// skipped.
    pub(super) fn take<R: Read>(
        &mut self,
        records: &mut Records<R>,
        record: &Record,
        shape: Result<(), String>,
    ) -> Result<()> {
        let row = shape.and_then(|()| parse_row(record, self.cols, &mut self.image));
        match row {
            Ok((label, usage)) => self.ds.push(&self.image, label, usage),
            Err(problem) => {
                // A record over several lines that fails may have swallowed good rows (a
                // stray quote): read its later lines again as records of their own.
                records.reread_after_first(record);
                let err = Error::BadRow {
                    path: self.path.clone(),
                    line: record.line,
                    problem,
                };
                if !self.skip_bad_rows {
                    return Err(err);
                }
                self.skipped.count += 1;
                if self.skipped.first.len() < MAX_BAD_ROWS_KEPT {
                    self.skipped.first.push(err);
                }
            }
        }
        Ok(())
    }
}

/// The longest line accepted. A FER2013 row is ~9 KB; anything near this is not a FER CSV
/// (a binary file with no line break would otherwise be read whole into one line). A quoted
/// field spanning lines is held to the same length.
pub(super) const MAX_LINE: u64 = 1 << 20;

/// Bytes asked of the stream at a time.
pub(super) const READ_CHUNK: usize = 1 << 20;

/// Why [`Lines`] stopped the stream: a line longer than [`MAX_LINE`].
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

/// The physical lines of a byte stream, numbered from 1. A line ends at `\n`, `\r\n` or a
/// lone `\r` (classic Mac files), so each convention numbers lines as an editor does.
struct Lines<R> {
    inner: R,
    /// Bytes read: `buf[start..end]` are not yet handed out.
    buf: Vec<u8>,
    start: usize,
    end: usize,
    eof: bool,
    /// The number of the next line.
    number: u64,
}

/// How a line ended: the bytes of its break (empty for a last line without one).
type Ending = &'static [u8];

impl<R: Read> Lines<R> {
    fn new(inner: R) -> Self {
        Lines {
            inner,
            buf: vec![0; READ_CHUNK],
            start: 0,
            end: 0,
            eof: false,
            number: 1,
        }
    }

    /// The next line: its number, its bytes without the break, and the break.
    fn next(&mut self) -> io::Result<Option<(u64, &[u8], Ending)>> {
        // Bytes after `start` already searched for a break.
        let mut searched = 0;
        loop {
            let from = self.start + searched;
            if let Some(i) = memchr::memchr2(b'\n', b'\r', &self.buf[from..self.end]) {
                let at = from + i;
                let ending: Ending = if self.buf[at] == b'\n' {
                    b"\n"
                } else if at + 1 < self.end {
                    if self.buf[at + 1] == b'\n' {
                        b"\r\n"
                    } else {
                        b"\r"
                    }
                } else if self.eof {
                    b"\r"
                } else {
                    // A `\r` at the end of what was read: a `\n` may follow.
                    searched = at - self.start;
                    self.fill()?;
                    continue;
                };
                let line = self.start..at;
                self.start = at + ending.len();
                self.number += 1;
                return Ok(Some((self.number - 1, &self.buf[line], ending)));
            }
            searched = self.end - self.start;
            if searched as u64 > MAX_LINE {
                let err = LineTooLong { line: self.number };
                return Err(io::Error::new(io::ErrorKind::InvalidData, err));
            }
            if self.eof {
                if searched == 0 {
                    return Ok(None);
                }
                let line = self.start..self.end;
                self.start = self.end;
                self.number += 1;
                return Ok(Some((self.number - 1, &self.buf[line], b"")));
            }
            self.fill()?;
        }
    }

    /// Moves the unread bytes to the front and reads more after them.
    fn fill(&mut self) -> io::Result<()> {
        self.buf.copy_within(self.start..self.end, 0);
        self.end -= self.start;
        self.start = 0;
        if self.buf.len() - self.end < READ_CHUNK {
            self.buf.resize(self.end + READ_CHUNK, 0);
        }
        loop {
            match self.inner.read(&mut self.buf[self.end..]) {
                Ok(0) => {
                    self.eof = true;
                    return Ok(());
                }
                Ok(n) => {
                    self.end += n;
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
}

/// One CSV record: its fields (quotes removed, `""` read as `"`) and the line it starts on.
#[derive(Debug, Default)]
pub(super) struct Record {
    /// Every field's bytes, one after the other.
    bytes: Vec<u8>,
    /// Where each field ends in `bytes`.
    ends: Vec<usize>,
    /// The 1-based line the record starts on.
    pub(super) line: u64,
    /// The lines after the first, when the record spans several (a quoted field with line
    /// breaks): `(number, bytes, break)`.
    more_lines: Vec<(u64, Vec<u8>, Ending)>,
}

impl Record {
    /// Number of fields.
    fn len(&self) -> usize {
        self.ends.len()
    }

    /// Field `i`'s bytes.
    fn field(&self, i: usize) -> &[u8] {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.bytes[start..self.ends[i]]
    }

    fn clear(&mut self, line: u64) {
        self.bytes.clear();
        self.ends.clear();
        self.more_lines.clear();
        self.line = line;
    }
}

/// Where a line left its record.
enum LineEnd {
    /// The record is complete.
    Done,
    /// A quoted field (its bytes start at this offset of [`Record::bytes`]) goes on.
    InQuote(usize),
}

/// The records of a CSV text, as RFC 4180 has them: fields separated by commas, a field
/// quoted only when its first byte is `"`, a quoted field ended by a `"` that is followed by
/// a comma or the line's end, `""` inside it for one `"`. Blank lines are skipped.
///
/// FER2013 fields hold digits, spaces and split names only, so a quoted field may go on past
/// a line break only while it holds nothing but digits and white space (a pixels field
/// wrapped over lines); anything else there is a stray quote, and the record ends at its
/// line instead of swallowing the rows after it.
pub(super) struct Records<R> {
    lines: Lines<R>,
    /// Lines to read again before the stream's next ones, last first.
    again: Vec<(u64, Vec<u8>, Ending)>,
}

impl<R: Read> Records<R> {
    pub(super) fn new(inner: R) -> Self {
        Records {
            lines: Lines::new(inner),
            again: Vec::new(),
        }
    }

    /// Reads the next record into `rec`: `None` at the end, else `Ok` or the reason the
    /// record is not CSV as the format allows (with `rec.line` set either way).
    pub(super) fn next(&mut self, rec: &mut Record) -> io::Result<Option<Result<(), String>>> {
        // The start (in `rec.bytes`) of a quoted field going on from the line before.
        let mut state = None::<usize>;
        loop {
            let again = self.again.pop();
            let (number, line, ending) = match &again {
                Some((n, bytes, e)) => (*n, bytes.as_slice(), *e),
                None => match self.lines.next()? {
                    Some(l) => l,
                    None => {
                        let field = rec.len() + 1;
                        return Ok(state.map(|_| {
                            Err(format!(
                                "the quote that opens field {field} is never closed"
                            ))
                        }));
                    }
                },
            };
            let open = match state {
                None if line.is_empty() => continue,
                None => {
                    rec.clear(number);
                    None
                }
                Some(field) => {
                    rec.more_lines.push((number, line.to_vec(), ending));
                    Some(field)
                }
            };
            match parse_line(rec, line, open) {
                Err(problem) => return Ok(Some(Err(problem))),
                Ok(LineEnd::Done) => return Ok(Some(Ok(()))),
                Ok(LineEnd::InQuote(field)) => {
                    let field_no = rec.len() + 1;
                    if !wrapped_pixels(&rec.bytes[field..]) {
                        return Ok(Some(Err(format!(
                            "field {field_no} opens a quote that this line does not close (a \
                             quoted field may go on over lines only as wrapped pixel values)"
                        ))));
                    }
                    if rec.bytes.len() as u64 > MAX_LINE {
                        return Ok(Some(Err(format!(
                            "the quote that opens field {field_no} is not closed within {} KiB",
                            MAX_LINE >> 10
                        ))));
                    }
                    rec.bytes.extend_from_slice(ending);
                    state = Some(field);
                }
            }
        }
    }

    /// The stream the records are read from.
    pub(super) fn source(&mut self) -> &mut R {
        &mut self.lines.inner
    }

    /// Queues the lines of `rec` after its first to be read again as records.
    fn reread_after_first(&mut self, rec: &Record) {
        self.again.extend(rec.more_lines.iter().rev().cloned());
    }
}

/// True when a field's bytes are what a pixels field wrapped over lines holds.
fn wrapped_pixels(bytes: &[u8]) -> bool {
    bytes
        .iter()
        .all(|b| b.is_ascii_digit() || b.is_ascii_whitespace())
}

/// Adds the fields of one line to `rec`. `open` is the start (in `rec.bytes`) of a quoted
/// field continued from the line before.
fn parse_line(rec: &mut Record, line: &[u8], open: Option<usize>) -> Result<LineEnd, String> {
    let mut i = 0;
    let mut quoted = open;
    // Whether the quoted field being read began on an earlier line.
    let mut continued = open.is_some();
    loop {
        if let Some(field) = quoted {
            let Some(q) = memchr::memchr(b'"', &line[i..]).map(|q| i + q) else {
                rec.bytes.extend_from_slice(&line[i..]);
                return Ok(LineEnd::InQuote(field));
            };
            rec.bytes.extend_from_slice(&line[i..q]);
            match line.get(q + 1) {
                Some(b'"') => {
                    rec.bytes.push(b'"');
                    i = q + 2;
                    continue;
                }
                Some(b',') | None => {
                    if continued && !wrapped_pixels(&rec.bytes[field..]) {
                        return Err(format!(
                            "field {} goes on over lines but holds more than pixel values",
                            rec.len() + 1
                        ));
                    }
                    rec.ends.push(rec.bytes.len());
                    if q + 1 == line.len() {
                        return Ok(LineEnd::Done);
                    }
                    i = q + 2;
                    quoted = None;
                    continued = false;
                }
                Some(_) => {
                    return Err(format!(
                        "field {} has text after its closing quote (a quoted field ends at a \
                         comma or the line's end)",
                        rec.len() + 1
                    ))
                }
            }
        } else if line.get(i) == Some(&b'"') {
            quoted = Some(rec.bytes.len());
            i += 1;
        } else {
            match memchr::memchr2(b',', b'"', &line[i..]).map(|j| i + j) {
                None => {
                    rec.bytes.extend_from_slice(&line[i..]);
                    rec.ends.push(rec.bytes.len());
                    return Ok(LineEnd::Done);
                }
                Some(j) if line[j] == b',' => {
                    rec.bytes.extend_from_slice(&line[i..j]);
                    rec.ends.push(rec.bytes.len());
                    i = j + 1;
                }
                Some(_) => {
                    return Err(format!(
                        "field {} holds a quote but does not start with one (only a quoted \
                         field may hold quotes)",
                        rec.len() + 1
                    ))
                }
            }
        }
    }
}

pub(super) fn bad_data(path: &Path, problem: impl Into<String>) -> Error {
    Error::BadData {
        path: PathBuf::from(path),
        problem: problem.into(),
    }
}

/// Finds `emotion`, `Usage` and `pixels` in the header (trimmed, any case, any order).
fn find_columns(path: &Path, header: &Record) -> Result<Columns> {
    let mut names = Vec::with_capacity(header.len());
    for (i, field) in (0..header.len()).map(|i| (i, header.field(i))) {
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
fn parse_row(row: &Record, cols: Columns, image: &mut [u8]) -> Result<(u8, Usage), String> {
    if row.len() != cols.count {
        return Err(format!(
            "expected {} columns, found {}",
            cols.count,
            row.len()
        ));
    }
    let label = parse_emotion(row.field(cols.emotion))?;
    let usage = parse_usage(row.field(cols.usage))?;
    parse_pixels(row.field(cols.pixels), image)?;
    Ok((label, usage))
}

/// A field for an error message: lossy UTF-8, trimmed, cut to 20 characters, with control
/// and other unprintable characters escaped (`\u{1b}`) so that a message cannot drive the
/// terminal.
fn shown(field: &[u8]) -> String {
    let s = String::from_utf8_lossy(field);
    let s = s.trim();
    let mut out = String::new();
    for c in s.chars().take(20) {
        match c {
            '\'' | '"' | '\\' => out.push(c),
            c => out.extend(c.escape_debug()),
        }
    }
    if s.chars().count() > 20 {
        out.push('…');
    }
    out
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
/// same directory, then renamed over `path`; a special file (`/dev/stdout`, a FIFO) is
/// written in place instead.
pub fn write(path: &Path, ds: &Dataset) -> Result<()> {
    let gzip = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("gz"));
    if crate::files::is_special(path) {
        // `/dev/stdout`, a FIFO: written in place, never replaced by a rename.
        return write_file(path, ds, gzip).map_err(|e| Error::io(path, e));
    }
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
    // A pipe or a terminal cannot be synced; nothing of the data is lost by skipping it.
    match file.sync_all() {
        Err(e) if e.kind() == io::ErrorKind::InvalidInput => Ok(()),
        other => other,
    }
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
