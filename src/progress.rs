//! Everything the user sees while a command runs: progress bars on a TTY, plain status lines
//! otherwise.

use indicatif::{HumanBytes, MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

/// Whether `--debug` asked for a trace (process-wide: the trace is one stream).
static DEBUG: AtomicBool = AtomicBool::new(false);

/// Turns the `--debug` trace on or off.
pub fn set_debug(on: bool) {
    DEBUG.store(on, Ordering::Relaxed);
}

/// Whether the `--debug` trace is on.
pub fn debugging() -> bool {
    DEBUG.load(Ordering::Relaxed)
}

/// Prints one line of the `--debug` trace to stderr; callers pass text without secrets. Formatted
/// only when tracing: thousands of requests a second must not each format a line nobody reads.
pub fn debug_line(line: std::fmt::Arguments<'_>) {
    if DEBUG.load(Ordering::Relaxed) {
        eprintln!("[debug] {line}");
    }
}

/// Where status and progress go (a clone shows on the same bars).
#[derive(Clone)]
pub struct Progress {
    multi: Option<MultiProgress>,
    overall: Option<ProgressBar>,
    quiet_status: bool,
    plain_blobs: bool,
    status_to_stderr: bool,
}

/// Progress of one blob transfer.
pub struct BlobProgress {
    bar: Option<ProgressBar>,
    label: String,
    size: u64,
    plain: bool,
}

impl Progress {
    /// Bars when `tty`; status lines on stdout unless `json` (then stdout holds only the JSON
    /// document).
    pub fn new(tty: bool, json: bool) -> Self {
        if tty {
            let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(8));
            Progress {
                multi: Some(multi),
                overall: None,
                quiet_status: json,
                plain_blobs: false,
                status_to_stderr: false,
            }
        } else {
            Progress {
                multi: None,
                overall: None,
                quiet_status: json,
                plain_blobs: !json,
                status_to_stderr: false,
            }
        }
    }

    /// Sends status lines to stderr (when stdout carries data, such as a tar stream).
    pub fn status_to_stderr(&mut self) {
        self.status_to_stderr = true;
    }

    /// Prints a status line (stdout), keeping bars intact.
    pub fn status(&self, line: &str) {
        self.status_lines(&[line])
    }

    /// Prints status lines in one write: a summary of thousands of tags is not thousands of writes.
    pub fn status_lines<S: AsRef<str>>(&self, lines: &[S]) {
        if self.quiet_status || lines.is_empty() {
            return;
        }
        let mut text = String::new();
        for l in lines {
            // Lines name tags and repositories a registry or a backup supplied.
            text.push_str(&crate::scrub::escape_controls(l.as_ref()));
            text.push('\n');
        }
        let print = || {
            let _ = if self.status_to_stderr {
                std::io::stderr().lock().write_all(text.as_bytes())
            } else {
                std::io::stdout().lock().write_all(text.as_bytes())
            };
        };
        match &self.multi {
            Some(m) => m.suspend(print),
            None => print(),
        }
    }

    /// Starts the overall byte bar.
    pub fn start_overall(&mut self, total: u64, what: &str) {
        if let Some(m) = &self.multi {
            let bar = m.add(ProgressBar::new(total));
            bar.set_style(
                ProgressStyle::with_template(
                    "{msg:>10} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            bar.set_message(what.to_string());
            self.overall = Some(bar);
        }
    }

    /// Starts a per-blob bar (TTY) or nothing (plain; a line is printed when it finishes).
    pub fn blob(&self, digest: &str, size: u64) -> BlobProgress {
        let short: String = digest.trim_start_matches("sha256:").chars().take(12).collect();
        // Small blobs finish before a bar could be drawn; bars are for the transfers worth
        // watching.
        let bar = self.multi.as_ref().filter(|_| size >= 1024 * 1024).map(|m| {
            let b = m.insert_from_back(1, ProgressBar::new(size));
            b.set_style(
                ProgressStyle::with_template(
                    "  {msg} [{bar:20}] {bytes}/{total_bytes} {binary_bytes_per_sec}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            b.set_message(short.clone());
            b
        });
        BlobProgress { bar, label: short, size, plain: self.plain_blobs }
    }

    /// Adds transferred bytes to the overall bar.
    pub fn add(&self, n: u64) {
        if let Some(o) = &self.overall {
            o.inc(n);
        }
    }

    /// Removes all bars.
    pub fn finish(&self) {
        if let Some(o) = &self.overall {
            o.finish_and_clear();
        }
        if let Some(m) = &self.multi {
            let _ = m.clear();
        }
    }
}

/// A cloneable byte counter feeding a blob bar and the overall bar from inside a stream.
#[derive(Clone, Default)]
pub struct Counter {
    bars: Vec<ProgressBar>,
}

impl Counter {
    /// Counts `n` more bytes.
    pub fn inc(&self, n: u64) {
        for b in &self.bars {
            b.inc(n);
        }
    }
}

impl BlobProgress {
    /// A counter for this blob that also feeds the overall bar of `p`.
    pub fn counter(&self, p: &Progress) -> Counter {
        Counter { bars: self.bar.iter().chain(p.overall.iter()).cloned().collect() }
    }

    /// Marks the blob done, with what happened to it (`copied`, `skipped`, `mounted`).
    pub fn done(self, how: &str) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
        if self.plain {
            eprintln!("{how} blob {} ({})", self.label, HumanBytes(self.size));
        }
    }
}

impl Drop for BlobProgress {
    fn drop(&mut self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}
