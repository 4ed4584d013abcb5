//! Progress display on stderr: an indicatif bar when stderr is a terminal, otherwise plain lines
//! (at most one every few seconds, and one at the end) that read well in a log file.

use std::io::IsTerminal as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum ProgressMode {
    /// A bar on a terminal, plain lines otherwise.
    #[default]
    Auto,
    /// Always a bar.
    Bar,
    /// Always plain lines.
    Plain,
    /// Nothing.
    Off,
}

/// How often plain mode prints a line.
const PLAIN_EVERY: Duration = Duration::from_secs(2);

/// A progress counter for one task (cheap to clone; all clones show the same counter).
#[derive(Debug, Clone)]
pub struct Progress {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    label: String,
    total: u64,
    bar: Option<ProgressBar>,
    plain: bool,
    done: AtomicU64,
    started: Instant,
    last_line: Mutex<Instant>,
    message: Mutex<String>,
}

impl Progress {
    /// Starts showing `label` with `total` steps.
    pub fn new(label: &str, total: u64, mode: ProgressMode) -> Self {
        let tty = std::io::stderr().is_terminal();
        let (bar, plain) = match mode {
            ProgressMode::Auto if tty => (true, false),
            ProgressMode::Auto => (false, true),
            ProgressMode::Bar => (true, false),
            ProgressMode::Plain => (false, true),
            ProgressMode::Off => (false, false),
        };
        let bar = bar.then(|| {
            let pb = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
            // Without a total (a wait), a spinner.
            let style = if total == 0 {
                ProgressStyle::with_template("{prefix:>10.bold} {spinner} {elapsed:>4} {msg}")
            } else {
                ProgressStyle::with_template(
                    "{prefix:>10.bold} [{bar:36.cyan/blue}] {pos:>6}/{len:<6} {elapsed:>4} {msg}",
                )
            };
            pb.set_style(style.expect("a valid template").progress_chars("=> "));
            pb.set_prefix(label.to_owned());
            pb.enable_steady_tick(Duration::from_millis(200));
            pb
        });
        let now = Instant::now();
        Self {
            inner: Arc::new(Inner {
                label: label.to_owned(),
                total,
                bar,
                plain,
                done: AtomicU64::new(0),
                started: now,
                last_line: Mutex::new(now),
                message: Mutex::new(String::new()),
            }),
        }
    }

    /// A progress that shows nothing.
    pub fn hidden() -> Self {
        Self::new("", 0, ProgressMode::Off)
    }

    /// Steps done so far.
    pub fn position(&self) -> u64 {
        self.inner.done.load(Ordering::Relaxed)
    }

    /// `n` more steps done.
    pub fn inc(&self, n: u64) {
        let done = self.inner.done.fetch_add(n, Ordering::Relaxed) + n;
        if let Some(bar) = &self.inner.bar {
            bar.set_position(done);
        } else if self.inner.plain {
            self.maybe_line(done, false);
        }
    }

    /// Sets the text shown after the counter.
    pub fn set_message(&self, msg: impl Into<String>) {
        let msg = msg.into();
        if let Some(bar) = &self.inner.bar {
            bar.set_message(msg.clone());
        }
        *self.inner.message.lock().expect("progress lock") = msg;
    }

    /// Prints a line above the bar (or as is in plain mode).
    pub fn println(&self, line: impl AsRef<str>) {
        match &self.inner.bar {
            Some(bar) => bar.println(line.as_ref()),
            None if self.inner.plain => eprintln!("{}", line.as_ref()),
            None => {}
        }
    }

    /// Ends the display with a last message.
    pub fn finish(&self, msg: impl Into<String>) {
        let msg = msg.into();
        if let Some(bar) = &self.inner.bar {
            bar.finish_with_message(msg);
        } else if self.inner.plain {
            *self.inner.message.lock().expect("progress lock") = msg;
            self.maybe_line(self.position(), true);
        }
    }

    fn maybe_line(&self, done: u64, force: bool) {
        let mut last = self.inner.last_line.lock().expect("progress lock");
        if !force && last.elapsed() < PLAIN_EVERY {
            return;
        }
        *last = Instant::now();
        let count = if self.inner.total == 0 {
            String::new()
        } else {
            let pct = done as f64 * 100.0 / self.inner.total as f64;
            format!(" {done}/{} ({pct:.0}%)", self.inner.total)
        };
        let msg = self.inner.message.lock().expect("progress lock").clone();
        eprintln!(
            "{}:{count} after {:.1} s{}{}",
            self.inner.label,
            self.inner.started.elapsed().as_secs_f64(),
            if msg.is_empty() { "" } else { " — " },
            msg
        );
    }
}
