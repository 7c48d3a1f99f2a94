//! Records the git commit fergpu is built from (`FERGPU_GIT_COMMIT`, written into every run's
//! `config.json`), when the source is a git checkout and `git` is installed.

use std::process::Command;

fn main() {
    let head = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok());
    if let Some(commit) = head {
        let dirty = Command::new("git")
            .args(["status", "--porcelain", "--untracked-files=no"])
            .output()
            .map(|o| !o.stdout.is_empty())
            .unwrap_or(false);
        let suffix = if dirty { "-dirty" } else { "" };
        println!(
            "cargo:rustc-env=FERGPU_GIT_COMMIT={}{suffix}",
            commit.trim()
        );
    }
    // Rerun when HEAD moves (a commit, a checkout) or the sources change (the dirty flag);
    // cargo compares the newest mtime under each directory.
    for path in [".git/HEAD", ".git/index", "src", "shaders", "Cargo.toml"] {
        if std::path::Path::new(path).exists() {
            println!("cargo:rerun-if-changed={path}");
        }
    }
    println!("cargo:rerun-if-changed=build.rs");
}
