//! The streaming CSV reader a web page uses (`fergpu::data::stream::CsvStream`) gives what
//! the file loader gives on the same bytes, whatever the chunk sizes: the same rows, the same
//! bad rows with the same line numbers and messages, gzip included, and the same errors for
//! files that are not FER2013 CSVs.

use std::io::Write;
use std::path::Path;

use fergpu::data::csv::{load, LoadOptions};
use fergpu::data::stream::CsvStream;
use fergpu::data::{Dataset, Usage};
use fergpu::rng::Rng;
use fergpu::shape::IMAGE_PIXELS;

/// `n` seeded random images, as `icml_face_data.csv` text with bad rows at `bad`.
fn csv_text(n: usize, bad: &[usize], seed: u64) -> String {
    let mut r = Rng::new(seed);
    let mut s = String::from("emotion, Usage, pixels\r\n");
    for i in 0..n {
        let pixels: Vec<String> = (0..IMAGE_PIXELS)
            .map(|_| r.below(256).to_string())
            .collect();
        let label = if bad.contains(&i) {
            "9".to_string()
        } else {
            r.below(7).to_string()
        };
        s += &format!(
            "{label}, {}, {}\r\n",
            Usage::ALL[i % 3].name(),
            pixels.join(" ")
        );
    }
    s
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

/// The file loader's result on `bytes`.
fn loaded(bytes: &[u8], name: &str, opts: &LoadOptions) -> Result<(Dataset, Vec<String>), String> {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("csv-stream");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    load(&path, opts)
        .map(|(ds, rep)| (ds, rep.skipped.iter().map(|e| e.to_string()).collect()))
        .map_err(|e| e.to_string())
}

/// The stream's result on `bytes` pushed in chunks of `chunk` bytes.
fn streamed(
    bytes: &[u8],
    name: &str,
    opts: &LoadOptions,
    chunk: usize,
) -> Result<(Dataset, Vec<String>), String> {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("csv-stream");
    let mut s = CsvStream::new(&dir.join(name), opts);
    for c in bytes.chunks(chunk) {
        s.push(c).map_err(|e| e.to_string())?;
    }
    s.finish()
        .map(|(ds, rep)| (ds, rep.skipped.iter().map(|e| e.to_string()).collect()))
        .map_err(|e| e.to_string())
}

fn same(a: &Dataset, b: &Dataset) {
    assert_eq!(a.len(), b.len(), "row counts");
    assert_eq!(a.labels, b.labels);
    assert_eq!(a.usage, b.usage);
    assert!(a.pixels == b.pixels, "pixels differ");
}

#[test]
fn chunks_of_any_size_give_the_loaders_rows_and_bad_rows() {
    // ~9 KB a row: 1,200 rows are ~11 MB, past the stream's look-ahead several times over.
    let text = csv_text(1200, &[5, 700, 1199], 3);
    let skip = LoadOptions {
        skip_bad_rows: true,
    };
    let (want, want_bad) = loaded(text.as_bytes(), "a.csv", &skip).unwrap();
    assert_eq!(want.len(), 1197);
    assert_eq!(want_bad.len(), 3);
    assert!(want_bad[1].contains(":702:"), "{}", want_bad[1]);
    for chunk in [1, 4093, 1 << 20, text.len()] {
        if chunk == 1 {
            // One byte at a time over a short prefix of the file (the whole one takes long).
            let short = csv_text(30, &[4], 5);
            let (a, bad_a) = loaded(short.as_bytes(), "short.csv", &skip).unwrap();
            let (b, bad_b) = streamed(short.as_bytes(), "short.csv", &skip, 1).unwrap();
            same(&a, &b);
            assert_eq!(bad_a, bad_b);
            continue;
        }
        let (got, got_bad) = streamed(text.as_bytes(), "a.csv", &skip, chunk).unwrap();
        same(&got, &want);
        assert_eq!(got_bad, want_bad, "chunk {chunk}");
    }
}

#[test]
fn gzip_streams_are_inflated_as_they_arrive() {
    let text = csv_text(400, &[], 4);
    let gz = gzip(text.as_bytes());
    let opts = LoadOptions::default();
    let (want, _) = loaded(text.as_bytes(), "b.csv", &opts).unwrap();
    for chunk in [1, 777, 65536] {
        let (got, bad) = streamed(&gz, "b.csv.gz", &opts, chunk).unwrap();
        same(&got, &want);
        assert!(bad.is_empty());
    }
}

#[test]
fn the_first_bad_row_and_unusable_files_are_the_loaders_errors() {
    let opts = LoadOptions::default();
    let text = csv_text(50, &[20], 6);
    let want = loaded(text.as_bytes(), "c.csv", &opts).unwrap_err();
    assert!(want.contains(":22:"), "{want}");
    assert_eq!(
        streamed(text.as_bytes(), "c.csv", &opts, 8192).unwrap_err(),
        want
    );
    for (name, bytes) in [
        ("empty.csv", &b""[..]),
        ("header.csv", &b"emotion, Usage, pixels\n"[..]),
        ("nocol.csv", &b"emotion,pixels\n0,1 2 3\n"[..]),
        ("binary.csv", &[0u8, 159, 146, 150, 7, 8][..]),
    ] {
        let want = loaded(bytes, name, &opts).unwrap_err();
        let got = streamed(bytes, name, &opts, 3).unwrap_err();
        assert_eq!(got, want, "{name}");
    }
    let broken = &gzip(text.as_bytes())[..300];
    let got = streamed(broken, "d.csv.gz", &opts, 100).unwrap_err();
    assert!(got.contains("d.csv.gz"), "{got}");
}
