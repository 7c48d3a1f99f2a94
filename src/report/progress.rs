//! Terminal progress: a bar per epoch (images/s, running loss and accuracy) and one plain
//! summary line per epoch.
//!
//! Output problems (a closed pipe, a full disk) are ignored: progress must never stop a run.

use super::EpochRecord;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::{IsTerminal, Write};
use std::time::Instant;

/// How much [`Progress`] shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Display {
    /// A live bar on stderr, plus notes and the summary lines.
    Bar,
    /// Notes and summary lines only, no escape codes (for logs and pipes).
    Plain,
    /// The summary lines only (`--quiet`).
    Quiet,
}

/// Reports training progress. Summary lines and notes go to the writer (stderr from
/// [`Progress::new`]); the bar, when shown, is drawn on stderr.
pub struct Progress {
    out: Box<dyn Write + Send>,
    display: Display,
    bar: Option<ProgressBar>,
    epochs: usize,
    started: Instant,
    /// The last running loss and accuracy seen this epoch (they arrive now and then).
    running: (Option<f64>, Option<f64>),
}

impl Progress {
    /// Progress on stderr: summary lines only when `quiet`, a live bar only when stderr is a
    /// terminal.
    pub fn new(quiet: bool) -> Progress {
        let display = if quiet {
            Display::Quiet
        } else if std::io::stderr().is_terminal() {
            Display::Bar
        } else {
            Display::Plain
        };
        Progress::with_writer(std::io::stderr(), display)
    }

    /// Progress whose lines go to `out` (tests pass a buffer).
    pub fn with_writer(out: impl Write + Send + 'static, display: Display) -> Progress {
        Progress {
            out: Box::new(out),
            display,
            bar: None,
            epochs: 0,
            started: Instant::now(),
            running: (None, None),
        }
    }

    /// Whether a live bar is drawn (a terminal, not `--quiet`).
    pub fn is_live(&self) -> bool {
        self.display == Display::Bar
    }

    /// Starts epoch `epoch` (1-based) of `epochs`, which has `batches` training batches.
    pub fn start_epoch(&mut self, epoch: usize, epochs: usize, batches: usize) {
        self.clear_bar();
        self.epochs = epochs;
        self.started = Instant::now();
        self.running = (None, None);
        if self.display != Display::Bar {
            return;
        }
        let style = ProgressStyle::with_template(
            "{prefix} [{bar:32.cyan/blue}] {pos}/{len} batches  {msg}",
        )
        .expect("the bar template is valid")
        .progress_chars("=> ");
        let bar = ProgressBar::with_draw_target(Some(batches as u64), ProgressDrawTarget::stderr())
            .with_style(style)
            .with_prefix(format!("epoch {epoch}/{epochs}"));
        self.bar = Some(bar);
    }

    /// One more batch done: `images_done` images so far this epoch, and the running loss and
    /// accuracy when known (the GPU backend only knows them at the end of the epoch).
    pub fn batch(
        &mut self,
        images_done: usize,
        running_loss: Option<f64>,
        running_acc: Option<f64>,
    ) {
        self.running = (
            running_loss.or(self.running.0),
            running_acc.or(self.running.1),
        );
        let (running_loss, running_acc) = self.running;
        let Some(bar) = &self.bar else { return };
        let seconds = self.started.elapsed().as_secs_f64();
        let mut msg = if seconds > 0.0 {
            format!("{:.0} img/s", images_done as f64 / seconds)
        } else {
            String::from("– img/s")
        };
        if let Some(loss) = running_loss {
            msg.push_str(&format!("  loss {loss:.3}"));
        }
        if let Some(acc) = running_acc {
            msg.push_str(&format!("  acc {:.1}%", 100.0 * acc));
        }
        bar.set_message(msg);
        bar.inc(1);
    }

    /// Ends the epoch: removes the bar and prints [`epoch_line`].
    pub fn finish_epoch(&mut self, record: &EpochRecord) {
        self.clear_bar();
        let line = epoch_line(record, self.epochs);
        let _ = writeln!(self.out, "{line}");
        let _ = self.out.flush();
    }

    /// Prints a line of its own (e.g. "checkpoint saved") without breaking the bar; nothing
    /// in [`Display::Quiet`].
    pub fn note(&mut self, line: &str) {
        if self.display == Display::Quiet {
            return;
        }
        let out = &mut self.out;
        let mut write = || {
            let _ = writeln!(out, "{line}");
            let _ = out.flush();
        };
        match &self.bar {
            Some(bar) => bar.suspend(write),
            None => write(),
        }
    }

    fn clear_bar(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.clear_bar();
    }
}

/// The one-line epoch summary, e.g.
/// `epoch 3/10  train loss 1.234 acc 45.6%  val loss 1.300 acc 44.0%  12.3 s  812 img/s`.
/// The validation part is left out when there was no validation, and `/epochs` when
/// `epochs` is 0.
pub fn epoch_line(r: &EpochRecord, epochs: usize) -> String {
    let mut s = if epochs > 0 {
        format!("epoch {}/{epochs}", r.epoch)
    } else {
        format!("epoch {}", r.epoch)
    };
    s.push_str(&format!(
        "  train loss {:.3} acc {:.1}%",
        r.train_loss,
        100.0 * r.train_acc
    ));
    if !(r.val_loss.is_nan() && r.val_acc.is_nan()) {
        s.push_str(&format!(
            "  val loss {:.3} acc {:.1}%",
            r.val_loss,
            100.0 * r.val_acc
        ));
    }
    s.push_str(&format!(
        "  {:.1} s  {:.0} img/s",
        r.seconds, r.images_per_s
    ));
    s
}
