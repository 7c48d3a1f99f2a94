//! Opening a data file that may be gzip-compressed, decompressing on a second thread.
//!
//! The full FER2013 CSV is ~330 MB of text in ~95 MB of gzip. Inflating it takes about as long
//! as parsing it, so [`with_reader`] inflates on a helper thread and hands the text to the
//! parser in 1 MiB chunks through a bounded channel: the two halves overlap instead of adding up.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::Path;
use std::sync::mpsc::{sync_channel, Receiver};

use flate2::bufread::MultiGzDecoder;

use crate::{Error, Result};

/// The two bytes every gzip member starts with (RFC 1952).
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
/// Size of one decompressed chunk handed to the parser.
const CHUNK: usize = 1 << 20;
/// Chunks in flight between the inflating thread and the parser.
const CHUNKS_IN_FLIGHT: usize = 8;

/// The path that names standard input (`--data -`).
pub const STDIN: &str = "-";

/// Opens `path` for reading: standard input for [`STDIN`], else the file.
fn open(path: &Path) -> Result<Box<dyn Read + Send>> {
    if path == Path::new(STDIN) {
        return Ok(Box::new(io::stdin()));
    }
    let f = File::open(path).map_err(|e| Error::io(path, e))?;
    Ok(Box::new(f))
}

/// Reads up to the first two bytes of `src` (fewer only at its end).
fn head(path: &Path, src: &mut dyn Read) -> Result<Vec<u8>> {
    let mut magic = [0u8; 2];
    let mut got = 0;
    while got < 2 {
        match src.read(&mut magic[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::io(path, e)),
        }
    }
    Ok(magic[..got].to_vec())
}

/// Calls `f` with a reader of the file's text: the file itself when plain, its inflated
/// content when it starts with the gzip magic bytes. The file is opened and read once, so
/// a pipe works as well as a file (`--data -` for standard input, `/dev/stdin`, a FIFO).
/// Returns `f`'s result and whether the file was gzip.
pub fn with_reader<T>(path: &Path, f: impl FnOnce(&mut dyn Read) -> T) -> Result<(T, bool)> {
    let mut src = open(path)?;
    let first = head(path, &mut src)?;
    let gz = first == GZIP_MAGIC;
    // The bytes read to tell are handed on in front of the rest.
    let file = BufReader::with_capacity(CHUNK, io::Cursor::new(first).chain(src));
    if !gz {
        let mut r = file;
        return Ok((f(&mut r), false));
    }
    let out = std::thread::scope(|s| {
        let (tx, rx) = sync_channel::<io::Result<Vec<u8>>>(CHUNKS_IN_FLIGHT);
        s.spawn(move || inflate_into(file, |chunk| tx.send(chunk).is_ok()));
        let mut reader = ChunkReader {
            rx,
            cur: Vec::new(),
            pos: 0,
            done: false,
        };
        // `reader` (the receiver) is dropped when `f` returns, which stops the inflating
        // thread at its next send even when `f` gave up early.
        f(&mut reader)
    });
    Ok((out, true))
}

/// Inflates `src` chunk by chunk, handing each to `send` until it returns false (the
/// consumer went away), the stream ends, or an error (handed on as the last chunk).
fn inflate_into(src: impl BufRead, mut send: impl FnMut(io::Result<Vec<u8>>) -> bool) {
    let mut dec = MultiGzDecoder::new(src);
    loop {
        let mut buf = vec![0u8; CHUNK];
        let mut filled = 0;
        while filled < CHUNK {
            match dec.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    if filled > 0 {
                        buf.truncate(filled);
                        if !send(Ok(buf)) {
                            return;
                        }
                    }
                    send(Err(e));
                    return;
                }
            }
        }
        buf.truncate(filled);
        if filled == 0 || !send(Ok(buf)) {
            return;
        }
    }
}

/// A [`Read`] over the chunks sent by the inflating thread.
struct ChunkReader {
    rx: Receiver<io::Result<Vec<u8>>>,
    cur: Vec<u8>,
    pos: usize,
    done: bool,
}

impl Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if self.pos < self.cur.len() {
                let n = buf.len().min(self.cur.len() - self.pos);
                buf[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
                self.pos += n;
                return Ok(n);
            }
            if self.done {
                return Ok(0);
            }
            match self.rx.recv() {
                Ok(Ok(chunk)) => {
                    self.cur = chunk;
                    self.pos = 0;
                }
                Ok(Err(e)) => {
                    self.done = true;
                    return Err(e);
                }
                // The sender hung up: end of stream.
                Err(_) => self.done = true,
            }
        }
    }
}
