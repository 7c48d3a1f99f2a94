//! The `fergpu` command line: parse, call the library ([`fergpu::cli`]), report errors.

use clap::{CommandFactory, FromArgMatches};
use fergpu::cli::{Cli, Outcome};

/// Exit status of a run stopped by Ctrl-C or SIGTERM after saving (128 + SIGINT, as shells
/// report it), so scripts can tell it from a finished run.
const INTERRUPTED_STATUS: i32 = 130;

fn main() {
    restore_default_sigpipe();
    // First, while this is the only thread.
    fergpu::device::quiet_display_probes();
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    match fergpu::cli::run(cli, &matches) {
        Ok(Outcome::Done) => {}
        Ok(Outcome::Interrupted) => std::process::exit(INTERRUPTED_STATUS),
        Err(e) => {
            // Messages quote file names and file contents; their control characters
            // (escape sequences) are written out, not sent to the terminal.
            let message = format!("{:#}", anyhow::Error::from(e));
            eprintln!("error: {}", fergpu::report::printable(&message));
            std::process::exit(1);
        }
    }
}

/// Rust ignores SIGPIPE, so `println!` into a closed pipe (`fergpu eval … | head`) panics.
/// A command-line tool should end quietly instead, as `cat` does: restore the default action.
fn restore_default_sigpipe() {
    #[cfg(unix)]
    // SAFETY: called first thing in main, before any thread starts; SIG_DFL is a valid action.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}
