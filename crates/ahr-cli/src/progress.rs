//! Progress of long stages: a bar on a terminal, plain lines at most every ten seconds (and at the
//! end) when stderr is a file or a pipe, so a newcomer never waits without a line.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

/// A stage's progress display.
pub struct Progress {
    bar: Option<ProgressBar>,
    label: &'static str,
    last_line: Option<Instant>,
}

const PLAIN_EVERY: Duration = Duration::from_secs(10);

impl Progress {
    /// A display for `total` units of work labelled `label` (`step`, `iteration`).
    pub fn new(label: &'static str, total: u64) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let pb = ProgressBar::new(total);
            pb.set_style(
                ProgressStyle::with_template("{bar:30} {pos}/{len} [{elapsed_precise}<{eta_precise}] {msg}")
                    .expect("template should parse"),
            );
            pb
        });
        Self { bar, label, last_line: None }
    }

    /// Report `pos` of `total` done, with a one-line summary.
    pub fn update(&mut self, pos: u64, total: u64, msg: &str) {
        match &self.bar {
            Some(pb) => {
                pb.set_length(total);
                pb.set_position(pos);
                pb.set_message(msg.to_string());
            }
            None => {
                let due = self.last_line.is_none_or(|t| t.elapsed() >= PLAIN_EVERY);
                if due || pos == total {
                    eprintln!("{} {pos}/{total}: {msg}", self.label);
                    self.last_line = Some(Instant::now());
                }
            }
        }
    }

    /// A line that stays above the bar (or a plain line).
    pub fn println(&self, line: &str) {
        match &self.bar {
            Some(pb) => pb.println(line),
            None => eprintln!("{line}"),
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Some(pb) = &self.bar {
            pb.finish_and_clear();
        }
    }
}
