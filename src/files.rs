//! Writing files safely, for every module that writes one (run folders, checkpoints,
//! reports, exports, predictions): low in the tree, it knows only [`crate::error`].

use crate::error::{Error, Result};
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

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

/// Checks, before any work, a file that a command will write because `flag` names it: its
/// folder exists, it is not a folder, and it is none of the command's `inputs` (`(flag,
/// path)`; the same file by any path, a link or a second name included), so that no command
/// writes over what it reads (each input is described for the message: `the --checkpoint
/// file`). A special file (`/dev/stdout`, a FIFO, a terminal) passes:
/// [`write_output`] writes it directly.
pub fn check_output(path: &Path, flag: &str, inputs: &[(&str, &Path)]) -> Result<()> {
    let shown = path.display();
    let bad = |problem: String| Err(Error::Config(format!("{flag} {shown}: {problem}")));
    match fs::metadata(path) {
        Ok(m) if m.is_dir() => return bad("a folder; name a file to write".into()),
        Ok(m) if !m.is_file() => return Ok(()),
        _ => {}
    }
    let folder = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if !folder.is_dir() {
        return bad(format!(
            "the folder {} does not exist; create it first",
            folder.display()
        ));
    }
    if let Some((what, _)) = inputs.iter().find(|(_, input)| same_file(path, input)) {
        return bad(format!(
            "that is {what}, which this command reads; writing it would destroy it. Name \
             another file"
        ));
    }
    Ok(())
}

/// Whether `a` and `b` are one existing file (by device and inode where there are such).
fn same_file(a: &Path, b: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        match (fs::metadata(a), fs::metadata(b)) {
            (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
            _ => false,
        }
    }
    #[cfg(not(unix))]
    {
        matches!((a.canonicalize(), b.canonicalize()), (Ok(x), Ok(y)) if x == y)
    }
}

/// Whether `path` exists and is neither a regular file nor a folder: a device such as
/// `/dev/stdout`, a FIFO, a socket. Such a file is written in place, never replaced.
pub fn is_special(path: &Path) -> bool {
    fs::metadata(path).is_ok_and(|m| !m.is_file() && !m.is_dir())
}

/// Writes a file a user named (`--predictions`, `--csv`, `--onnx`): atomically through
/// [`write_atomic`], or straight into a special file ([`is_special`]: `/dev/stdout`, a
/// FIFO), which a rename would replace instead of writing to. Check it first with
/// [`check_output`].
pub fn write_output(path: &Path, bytes: &[u8]) -> Result<()> {
    if !is_special(path) {
        return write_atomic(path, bytes);
    }
    let mut f = fs::OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| Error::io(path, e))?;
    f.write_all(bytes)
        .and_then(|()| f.flush())
        .map_err(|e| Error::io(path, e))
}

/// The most bytes a settings file (recipe, sweep grid, model file) may hold: far more than
/// any real one, and small enough that reading it never costs memory that matters.
pub const MAX_TEXT_FILE: u64 = 1 << 20;

/// Reads a settings file of at most [`MAX_TEXT_FILE`] bytes as UTF-8 text. A larger one (a
/// wrong file, or an endless stream), read no further than the limit, or one that is not
/// text is [`Error::BadData`] saying so; one that cannot be read is [`Error::Io`].
pub fn read_text(path: &Path) -> Result<String> {
    use std::io::Read;
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let mut bytes = Vec::new();
    file.take(MAX_TEXT_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| Error::io(path, e))?;
    let bad = |problem: String| Error::BadData {
        path: path.into(),
        problem,
    };
    if bytes.len() as u64 > MAX_TEXT_FILE {
        return Err(bad(format!(
            "over {} KiB, more than a settings file holds; is it the right file?",
            MAX_TEXT_FILE >> 10
        )));
    }
    String::from_utf8(bytes).map_err(|e| {
        bad(format!(
            "not UTF-8 text (byte {} is not); is it the right file?",
            e.utf8_error().valid_up_to()
        ))
    })
}

/// `path` with `.<pid>.tmp` appended to its file name (`metrics.csv` →
/// `metrics.csv.4242.tmp`).
fn temp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".{}.tmp", std::process::id()));
    path.with_file_name(name)
}

/// Removes the temporary files of [`write_atomic`] (`<name>.<pid>.tmp`, also with a
/// leading `.`) in `dir` whose writer is no longer alive: a process killed between writing
/// and renaming (SIGKILL, power loss) leaves one behind. Files of live processes, of this
/// one, and anything not named so are left alone; a file that cannot be removed stays.
pub fn remove_stale_temps(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(temp_writer) else {
            continue;
        };
        let is_file = entry.file_type().is_ok_and(|t| t.is_file());
        if is_file && pid != std::process::id() && !process_alive(pid) {
            let _ = fs::remove_file(entry.path());
        }
    }
}

/// The process id in a temporary file's name `<name>.<pid>.tmp`.
fn temp_writer(name: &str) -> Option<u32> {
    let stem = name.strip_suffix(".tmp")?;
    let (base, pid) = stem.rsplit_once('.')?;
    if base.is_empty() || pid.is_empty() || !pid.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    pid.parse().ok()
}

/// Whether a process with this id exists (assumed where it cannot be asked).
fn process_alive(pid: u32) -> bool {
    #[cfg(unix)]
    {
        let Ok(pid) = libc::pid_t::try_from(pid) else {
            return false;
        };
        // SAFETY: signal 0 only asks whether the process exists; nothing is sent.
        let r = unsafe { libc::kill(pid, 0) };
        r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
    }
    #[cfg(not(unix))]
    {
        let _ = pid;
        true
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(unix)]
    fn stale_temporary_files_of_dead_writers_are_removed_and_nothing_else() {
        let dir = std::env::temp_dir().join(format!("fergpu-files-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        // No process has id u32::MAX - 1 (pids are far smaller); the parent is alive.
        let dead = u32::MAX - 1;
        let alive = std::os::unix::process::parent_id();
        let me = std::process::id();
        let names = [
            format!("metrics.csv.{dead}.tmp"),
            format!(".faces.csv.{dead}.tmp"),
            format!("metrics.csv.{alive}.tmp"),
            format!("metrics.csv.{me}.tmp"),
            "notes.tmp".to_string(),
            "metrics.csv".to_string(),
        ];
        for n in &names {
            fs::write(dir.join(n), b"x").unwrap();
        }
        remove_stale_temps(&dir);
        let left: Vec<bool> = names.iter().map(|n| dir.join(n).exists()).collect();
        assert_eq!(left, [false, false, true, true, true, true]);
    }

    #[test]
    fn outputs_over_inputs_folders_and_missing_folders_are_refused() {
        let dir = std::env::temp_dir().join(format!("fergpu-out-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let input = dir.join("in.csv");
        fs::write(&input, b"data").unwrap();
        let inputs = [("the --data file", input.as_path())];
        check_output(&dir.join("new.csv"), "--out", &inputs).unwrap();
        let twice = dir.join(".").join("in.csv");
        let e = check_output(&twice, "--out", &inputs)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("that is the --data file, which this command reads"),
            "{e}"
        );
        #[cfg(unix)]
        {
            let link = dir.join("link.csv");
            std::os::unix::fs::symlink(&input, &link).unwrap();
            assert!(check_output(&link, "--out", &inputs).is_err());
        }
        let e = check_output(&dir, "--out", &inputs)
            .unwrap_err()
            .to_string();
        assert!(e.contains("a folder"), "{e}");
        let e = check_output(&dir.join("no/x.csv"), "--out", &inputs)
            .unwrap_err()
            .to_string();
        assert!(e.contains("does not exist"), "{e}");
        assert_eq!(fs::read(&input).unwrap(), b"data");
    }

    #[test]
    #[cfg(unix)]
    fn special_files_are_written_in_place() {
        let null = Path::new("/dev/null");
        assert!(is_special(null));
        check_output(null, "--out", &[("--data", null)]).unwrap();
        write_output(null, b"gone").unwrap();
        assert!(is_special(null), "/dev/null is still a device");
    }

    #[test]
    fn temp_path_appends_to_the_file_name() {
        assert_eq!(
            temp_path(Path::new("runs/a/metrics.csv")),
            PathBuf::from(format!("runs/a/metrics.csv.{}.tmp", std::process::id()))
        );
    }
}
