//! Ctrl-C with a real SIGINT: the first finishes the current batch, saves the checkpoint and
//! metrics and exits with a message saying how to resume (and `--resume` then finishes the
//! run); a second one exits at once. A real SIGTERM (what `kill`, systemd and job schedulers
//! send) does the same as the first Ctrl-C.
#![cfg(unix)]

mod support;

use fergpu::checkpoint::Checkpoint;
use fergpu::report::read_metrics_csv;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, ExitStatus, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::{fergpu, fresh_dir, run_ok};

/// Status of a run stopped by Ctrl-C (128 + SIGINT).
const INTERRUPTED: i32 = 130;

/// The seed CNN on the CPU: a batch of 40 takes a good fraction of a second here, so a
/// signal sent while training lands inside a batch, and a second one sent right after the
/// first is handled before that batch ends.
const TRAIN: [&str; 13] = [
    "train",
    "--synthetic",
    "150",
    "--model",
    "cnn",
    "--epochs",
    "2",
    "--batch-size",
    "40",
    "--adapter",
    "cpu",
    "--threads",
    "1",
];

/// A training process whose stderr is read line by line as it comes.
struct Training {
    child: Child,
    lines: Receiver<String>,
    all: Arc<Mutex<String>>,
}

impl Training {
    fn start(out: &Path) -> Training {
        let mut child = fergpu(TRAIN)
            .arg("--out")
            .arg(out)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the fergpu binary starts");
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = channel();
        let all = Arc::new(Mutex::new(String::new()));
        let sink = Arc::clone(&all);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push_str(&format!("{line}\n"));
                let _ = tx.send(line);
            }
        });
        Training { child, lines, all }
    }

    /// Waits (up to two minutes) for a stderr line containing `text`.
    fn wait_for(&mut self, text: &str) {
        let deadline = Instant::now() + Duration::from_secs(120);
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(text) => return,
                Ok(_) => {}
                Err(_) => break,
            }
        }
        let _ = self.child.kill();
        panic!("no line with '{text}'; stderr so far:\n{}", self.stderr());
    }

    fn sigint(&self) {
        self.signal("INT");
    }

    /// Sends the signal `name` (`INT`, `TERM`) with `kill`.
    fn signal(&self, name: &str) {
        let ok = std::process::Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .expect("kill runs")
            .success();
        assert!(ok, "kill -{name} failed");
    }

    /// Waits (up to two minutes) for the process to end.
    fn wait(&mut self) -> ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(120);
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                // Let the reader thread drain the pipe.
                std::thread::sleep(Duration::from_millis(100));
                return status;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        panic!("still running after two minutes:\n{}", self.stderr());
    }

    fn stderr(&self) -> String {
        self.all.lock().unwrap().clone()
    }
}

#[test]
fn ctrl_c_saves_a_resumable_run_and_resume_finishes_it() {
    let out = fresh_dir("sigint").join("run");
    let mut t = Training::start(&out);
    t.wait_for("training cnn");
    std::thread::sleep(Duration::from_millis(200));
    t.sigint();
    let status = t.wait();
    let stderr = t.stderr();
    assert_eq!(status.code(), Some(INTERRUPTED), "{stderr}");
    assert!(
        stderr.contains("Ctrl-C / SIGTERM: finishing the current batch"),
        "{stderr}"
    );
    let resume = format!("esume with: fergpu train --resume {}", out.display());
    assert!(stderr.contains(&resume), "no resume hint in:\n{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");

    // What it left is readable and resumable.
    let last = Checkpoint::load(&out.join("checkpoint-last.safetensors")).unwrap();
    assert!(last.optimizer.as_ref().unwrap().t >= 1);
    assert!(last.train_state.is_some());
    let before = read_metrics_csv(&out.join("metrics.csv")).unwrap();
    assert!(before.len() < 2, "stopped before the end: {before:?}");
    assert!(!out.join("summary.json").exists());

    let (_, stderr) = run_ok(fergpu(["train", "--resume"]).arg(&out));
    assert!(stderr.contains("resuming"), "{stderr}");
    let records = read_metrics_csv(&out.join("metrics.csv")).unwrap();
    assert_eq!(records.len(), 2);
    let losses = |r: &[fergpu::report::EpochRecord]| -> Vec<(u64, u64)> {
        r.iter()
            .map(|e| (e.train_loss.to_bits(), e.val_loss.to_bits()))
            .collect()
    };
    assert_eq!(losses(&records[..before.len()]), losses(&before));
    let summary = support::read_json(&out.join("summary.json"));
    assert_eq!(summary["epochs_run"], 2);
    let resumed = Checkpoint::load(&out.join("checkpoint-last.safetensors")).unwrap();
    assert!(resumed.optimizer.unwrap().t > last.optimizer.unwrap().t);
}

#[test]
fn a_second_ctrl_c_exits_at_once() {
    // The second signal races the end of the batch the first one lets finish; a batch here
    // is long enough that the second almost always wins, and a lost race is retried.
    for attempt in 1..=3 {
        let out = fresh_dir(&format!("sigint2-{attempt}")).join("run");
        let mut t = Training::start(&out);
        t.wait_for("training cnn");
        std::thread::sleep(Duration::from_millis(200));
        t.sigint();
        t.wait_for("Ctrl-C / SIGTERM: finishing the current batch");
        let sent = Instant::now();
        t.sigint();
        let status = t.wait();
        let stderr = t.stderr();
        assert_eq!(status.code(), Some(INTERRUPTED), "{stderr}");
        if stderr.contains("second Ctrl-C / SIGTERM: exiting now") {
            assert!(!stderr.contains("esume with"), "saved anyway:\n{stderr}");
            assert!(
                sent.elapsed() < Duration::from_secs(10),
                "took {:?} to exit",
                sent.elapsed()
            );
            return;
        }
        // The first Ctrl-C's save won the race: that run must have saved properly.
        assert!(stderr.contains("esume with"), "{stderr}");
    }
    panic!("the second Ctrl-C never arrived before the first one's save finished");
}

#[test]
fn sigterm_in_the_first_epoch_saves_a_resumable_checkpoint_like_ctrl_c() {
    let out = fresh_dir("sigterm").join("run");
    let mut t = Training::start(&out);
    t.wait_for("training cnn");
    std::thread::sleep(Duration::from_millis(200));
    t.signal("TERM");
    let status = t.wait();
    let stderr = t.stderr();
    assert_eq!(status.code(), Some(INTERRUPTED), "{stderr}");
    assert!(
        stderr.contains("interrupted in epoch 1") && stderr.contains("SIGTERM"),
        "{stderr}"
    );
    let resume = format!("esume with: fergpu train --resume {}", out.display());
    assert!(stderr.contains(&resume), "no resume hint in:\n{stderr}");
    let last = Checkpoint::load(&out.join("checkpoint-last.safetensors")).unwrap();
    assert!(last.optimizer.as_ref().unwrap().t >= 1);
    assert!(last.train_state.is_some());
    assert!(!out.join("summary.json").exists());
    assert!(!out.join("run.lock").exists(), "the lock goes with the run");
}
