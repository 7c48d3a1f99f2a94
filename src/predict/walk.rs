//! The image files named on the command line: files as given, folders walked.

use crate::error::{Error, Result};
use std::path::{Path, PathBuf};

/// File extensions (any case) taken from folders; files named on the command line are read
/// whatever their name.
pub const IMAGE_EXTENSIONS: [&str; 4] = ["png", "jpg", "jpeg", "bmp"];

/// One image to predict.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Input {
    /// Where to read it.
    pub path: PathBuf,
    /// Its name relative to the folder it was found in (the file name for a file named on
    /// the command line); annotated copies are written under this name.
    pub name: PathBuf,
}

/// Every input, in order: a file as it is; a folder's image files (by
/// [`IMAGE_EXTENSIONS`]), recursively, sorted by path, skipping names that start with a dot
/// and symbolic links to folders. Arguments that do not exist, folders that cannot be
/// listed and anything that is not a regular file (a FIFO or device, which would wait for
/// a writer forever) come back as errors naming them; the walk goes on past them.
pub fn expand(args: &[PathBuf]) -> (Vec<Input>, Vec<Error>) {
    let mut inputs = Vec::new();
    let mut errors = Vec::new();
    for arg in args {
        match std::fs::metadata(arg) {
            Ok(m) if m.is_dir() => walk(arg, arg, &mut inputs, &mut errors),
            Ok(m) if !m.is_file() => errors.push(not_a_file(arg)),
            Ok(_) => inputs.push(Input {
                path: arg.clone(),
                name: arg.file_name().map(PathBuf::from).unwrap_or_default(),
            }),
            Err(e) => errors.push(Error::io(arg, e)),
        }
    }
    (inputs, errors)
}

/// Whether a file name has one of [`IMAGE_EXTENSIONS`].
pub fn has_image_extension(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

fn walk(root: &Path, dir: &Path, inputs: &mut Vec<Input>, errors: &mut Vec<Error>) {
    let mut entries: Vec<PathBuf> = match list(dir) {
        Ok(e) => e,
        Err(e) => {
            errors.push(e);
            return;
        }
    };
    entries.sort();
    for path in entries {
        let hidden = path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with('.'));
        if hidden {
            continue;
        }
        let Ok(link_meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        let is_dir = if link_meta.file_type().is_symlink() {
            // Linked files are read; linked folders are not followed (no cycles).
            false
        } else {
            link_meta.is_dir()
        };
        if is_dir {
            walk(root, &path, inputs, errors);
        } else if has_image_extension(&path) {
            match std::fs::metadata(&path) {
                Ok(m) if m.is_file() => {
                    let name = path.strip_prefix(root).unwrap_or(&path).to_path_buf();
                    inputs.push(Input { path, name });
                }
                Ok(m) if !m.is_dir() => errors.push(not_a_file(&path)),
                // A linked folder (not followed), or a link to nothing.
                _ => {}
            }
        }
    }
}

/// The error for an input that is not a regular file.
fn not_a_file(path: &Path) -> Error {
    Error::BadData {
        path: path.into(),
        problem: "not a regular file (a FIFO, device or socket); skipped".into(),
    }
}

fn list(dir: &Path) -> Result<Vec<PathBuf>> {
    std::fs::read_dir(dir)
        .and_then(|rd| rd.map(|e| e.map(|e| e.path())).collect())
        .map_err(|e| Error::io(dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folders_are_walked_sorted_and_filtered_by_extension() {
        let dir = std::env::temp_dir().join(format!("fergpu-walk-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        for f in [
            "b.JPG",
            "a.png",
            "notes.txt",
            ".hidden.png",
            "sub/c.bmp",
            "sub/d.jpeg",
        ] {
            std::fs::write(dir.join(f), b"x").unwrap();
        }
        let single = dir.join("notes.txt");
        let missing = dir.join("missing.png");
        let (inputs, errors) = expand(&[dir.clone(), single.clone(), missing.clone()]);
        let names: Vec<_> = inputs.iter().map(|i| i.name.clone()).collect();
        let want: Vec<PathBuf> = ["a.png", "b.JPG", "sub/c.bmp", "sub/d.jpeg", "notes.txt"]
            .iter()
            .map(PathBuf::from)
            .collect();
        assert_eq!(names, want);
        assert_eq!(inputs[4].path, single);
        assert_eq!(errors.len(), 1);
        assert!(
            errors[0].to_string().contains("missing.png"),
            "{}",
            errors[0]
        );
    }
}
