//! A FER2013 CSV parsed as its bytes arrive, for callers that are handed a file in chunks
//! and must not block while waiting for the next one (a web page reading a dropped file).
//!
//! The rows are read by the same code as [`super::csv::load`], with the same checks and the
//! same messages (bad rows named by their line); a stream starting with the gzip magic bytes
//! is inflated on the way in. Only a bounded amount of text is held at once: records are
//! parsed as soon as enough bytes are queued that no record can run past them.

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use flate2::write::MultiGzDecoder;
use web_time::Instant;

use super::csv::{self, header_columns, LoadOptions, LoadReport, Record, Records, Rows};
use super::Dataset;
use crate::{Error, Result};

/// Queued bytes needed before a record is parsed (unless the stream has ended): a record
/// spans at most two lines' worth of [`csv::MAX_LINE`], and the reader may ask for two more
/// chunks of [`csv::READ_CHUNK`] than it needs, so a parse never runs out mid-record.
const MARGIN: usize = 4 * csv::MAX_LINE as usize + 4 * csv::READ_CHUNK;

/// The gzip magic bytes (RFC 1952).
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// Bytes handed in but not yet read by the parser, and whether more will come.
#[derive(Default)]
struct Pending {
    bytes: Vec<u8>,
    /// `bytes[start..]` are unread.
    start: usize,
    ended: bool,
}

impl Pending {
    fn len(&self) -> usize {
        self.bytes.len() - self.start
    }

    fn push(&mut self, more: &[u8]) {
        if self.start > self.bytes.len() / 2 {
            self.bytes.drain(..self.start);
            self.start = 0;
        }
        self.bytes.extend_from_slice(more);
    }
}

impl Read for Pending {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = buf.len().min(self.len());
        if n == 0 && !self.ended {
            // `CsvStream` keeps `MARGIN` bytes queued while parsing, so this is a bug.
            return Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                "the CSV stream ran out of queued bytes before its end",
            ));
        }
        buf[..n].copy_from_slice(&self.bytes[self.start..self.start + n]);
        self.start += n;
        Ok(n)
    }
}

/// How the stream's bytes come in: not known yet (fewer than two bytes seen), plain text,
/// or gzip inflated into the text queue.
enum Encoding {
    Unknown(Vec<u8>),
    Plain,
    Gzip(Box<MultiGzDecoder<Vec<u8>>>),
}

/// A FER2013 CSV parsed chunk by chunk: [`CsvStream::push`] each chunk as it arrives, then
/// [`CsvStream::finish`]. Errors are [`super::csv::load`]'s, naming `name`.
pub struct CsvStream {
    name: PathBuf,
    opts: LoadOptions,
    encoding: Encoding,
    records: Records<Pending>,
    record: Record,
    /// The rows so far, once the header was read.
    rows: Option<Rows>,
    /// Bytes handed in (before inflating).
    bytes_in: u64,
    started: Instant,
}

impl CsvStream {
    /// A stream for the file called `name` (used in messages only).
    pub fn new(name: &Path, opts: &LoadOptions) -> CsvStream {
        CsvStream {
            name: name.to_path_buf(),
            opts: *opts,
            encoding: Encoding::Unknown(Vec::new()),
            records: Records::new(Pending::default()),
            record: Record::default(),
            rows: None,
            bytes_in: 0,
            started: Instant::now(),
        }
    }

    /// Rows parsed so far.
    pub fn rows(&self) -> usize {
        self.rows.as_ref().map_or(0, |r| r.ds.len())
    }

    /// Bad rows skipped so far (only with [`LoadOptions::skip_bad_rows`]).
    pub fn skipped(&self) -> usize {
        self.rows.as_ref().map_or(0, |r| r.skipped.count)
    }

    /// Bytes handed in so far (compressed ones for a gzip stream).
    pub fn bytes_in(&self) -> u64 {
        self.bytes_in
    }

    /// Hands in the next chunk of the file and parses every record that is certainly
    /// complete. Errors as [`super::csv::load`]'s: the first bad row unless bad rows are
    /// skipped, a file that is not a FER2013 CSV, a damaged gzip stream.
    pub fn push(&mut self, chunk: &[u8]) -> Result<()> {
        self.bytes_in += chunk.len() as u64;
        self.take_bytes(chunk)?;
        self.parse(false)
    }

    /// Ends the stream: parses what is left and returns the data set and the report.
    pub fn finish(mut self) -> Result<(Dataset, LoadReport)> {
        match std::mem::replace(&mut self.encoding, Encoding::Plain) {
            Encoding::Unknown(first) => self.records.source().push(&first),
            Encoding::Gzip(mut dec) => {
                dec.try_finish().map_err(|e| self.damaged(e))?;
                self.records.source().push(dec.get_ref());
            }
            Encoding::Plain => {}
        }
        self.records.source().ended = true;
        self.parse(true)?;
        let rows = self
            .rows
            .take()
            .expect("parsing to the end reads the header");
        if rows.ds.is_empty() {
            let problem = match rows.skipped.first.first() {
                None => "no data rows after the header".to_string(),
                Some(first) => format!(
                    "all {} data rows are malformed; the first: {first}",
                    rows.skipped.count
                ),
            };
            return Err(csv::bad_data(&self.name, problem));
        }
        let report = LoadReport {
            rows: rows.ds.len(),
            bad_rows: rows.skipped.count,
            skipped: rows.skipped.first,
            seconds: self.started.elapsed().as_secs_f64(),
        };
        Ok((rows.ds, report))
    }

    /// Queues `chunk`'s text: as it is, or inflated when the stream is gzip.
    fn take_bytes(&mut self, chunk: &[u8]) -> Result<()> {
        if let Encoding::Unknown(first) = &mut self.encoding {
            first.extend_from_slice(chunk);
            if first.len() < GZIP_MAGIC.len() {
                return Ok(());
            }
            let first = std::mem::take(first);
            self.encoding = if first[..2] == GZIP_MAGIC {
                Encoding::Gzip(Box::new(MultiGzDecoder::new(Vec::new())))
            } else {
                Encoding::Plain
            };
            return self.take_bytes(&first);
        }
        match &mut self.encoding {
            Encoding::Gzip(dec) => {
                let result = dec.write_all(chunk).and_then(|()| dec.flush());
                result.map_err(|e| self.damaged(e))?;
                if let Encoding::Gzip(dec) = &mut self.encoding {
                    let text = std::mem::take(dec.get_mut());
                    self.records.source().push(&text);
                }
            }
            _ => self.records.source().push(chunk),
        }
        Ok(())
    }

    /// Parses records while enough bytes are queued (all of them at the end).
    fn parse(&mut self, at_end: bool) -> Result<()> {
        while at_end || self.records.source().len() >= MARGIN {
            let got = self.next_record()?;
            let Some(rows) = &mut self.rows else {
                let cols = header_columns(&self.name, got, &self.record)?;
                self.rows = Some(Rows::new(&self.name, cols, &self.opts));
                continue;
            };
            let Some(shape) = got else { return Ok(()) };
            rows.take(&mut self.records, &self.record, shape)?;
        }
        Ok(())
    }

    /// The next record, with a stream error turned into a message naming the file.
    fn next_record(&mut self) -> Result<Option<std::result::Result<(), String>>> {
        self.records
            .next(&mut self.record)
            .map_err(|e| csv::bad_data(&self.name, e.to_string()))
    }

    fn damaged(&self, e: io::Error) -> Error {
        csv::bad_data(&self.name, format!("cannot decompress: {e}"))
    }
}
