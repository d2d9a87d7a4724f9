//! Progress of a long import or export: a bar with rows/s and ETA when stderr is a
//! terminal, a plain line every few seconds otherwise (logs, CI), nothing when quiet.
//!
//! Readers report in blocks (every few megabytes), never per row, so progress costs
//! nothing measurable.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How often the plain (non-terminal) reporter prints a line.
const PLAIN_INTERVAL: Duration = Duration::from_secs(5);

enum Mode {
    Quiet,
    Bar(ProgressBar),
    Plain { last: Instant },
}

/// Tracks work done against a total (bytes of input, or rows of output).
pub struct Progress {
    mode: Mode,
    verb: &'static str,
    total: u64,
    done: u64,
    rows: u64,
    started: Instant,
}

impl Progress {
    /// `total` is in bytes of input for an import and in rows for an export.
    pub fn new(verb: &'static str, total: u64, quiet: bool) -> Progress {
        let mode = if quiet {
            Mode::Quiet
        } else if std::io::stderr().is_terminal() {
            let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
            let style =
                ProgressStyle::with_template("{prefix} [{bar:30}] {percent:>3}% {msg} eta {eta}")
                    .map(|s| s.progress_chars("=> "))
                    .unwrap_or_else(|_| ProgressStyle::default_bar());
            bar.set_style(style);
            bar.set_prefix(verb);
            Mode::Bar(bar)
        } else {
            Mode::Plain {
                last: Instant::now(),
            }
        };
        Progress {
            mode,
            verb,
            total,
            done: 0,
            rows: 0,
            started: Instant::now(),
        }
    }

    /// Adds `units` of work (bytes or rows) and `rows` rows.
    pub fn add(&mut self, units: u64, rows: u64) {
        self.done += units;
        self.rows += rows;
        let rate = self.rows_per_s();
        match &mut self.mode {
            Mode::Quiet => {}
            Mode::Bar(bar) => {
                bar.set_position(self.done.min(self.total));
                bar.set_message(format!(
                    "{} rows, {} rows/s",
                    human(self.rows),
                    human(rate as u64)
                ));
            }
            Mode::Plain { last } => {
                if last.elapsed() >= PLAIN_INTERVAL {
                    *last = Instant::now();
                    // An export through Flight does not know its total up front.
                    let pct = match self.total {
                        0 => String::new(),
                        t => format!(", {}% done", (self.done * 100 / t).min(100)),
                    };
                    eprintln!(
                        "fastk {}: {} rows{pct}, {} rows/s",
                        self.verb,
                        human(self.rows),
                        human(rate as u64)
                    );
                }
            }
        }
    }

    /// A phase message on the bar (e.g. "writing"), or a line in plain mode.
    pub fn phase(&mut self, what: &str) {
        match &self.mode {
            Mode::Quiet => {}
            Mode::Bar(bar) => bar.set_message(what.to_string()),
            Mode::Plain { .. } => eprintln!("fastk {}: {what}", self.verb),
        }
    }

    pub fn rows_per_s(&self) -> f64 {
        self.rows as f64 / self.started.elapsed().as_secs_f64().max(1e-9)
    }

    /// Removes the bar so the summary prints on a clean line.
    pub fn finish(&mut self) {
        if let Mode::Bar(bar) = &self.mode {
            bar.finish_and_clear();
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.finish();
    }
}

/// `1234567` → `1.23M`.
pub fn human(n: u64) -> String {
    match n {
        0..10_000 => n.to_string(),
        10_000..1_000_000 => format!("{:.1}k", n as f64 / 1e3),
        1_000_000..1_000_000_000 => format!("{:.2}M", n as f64 / 1e6),
        _ => format!("{:.2}G", n as f64 / 1e9),
    }
}
