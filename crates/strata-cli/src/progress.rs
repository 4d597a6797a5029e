//! Progress on stderr: bars when it is a terminal, plain lines otherwise,
//! nothing with `-q`. The libraries know nothing of this; the pipeline
//! reports to it.

use std::io::{self, IsTerminal, Read, Write};
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How progress is shown.
#[derive(Clone)]
pub struct Progress {
    bars: Option<MultiProgress>,
    lines: bool,
}

impl Progress {
    /// Bars on a terminal, lines elsewhere, nothing when quiet.
    #[must_use]
    pub fn new(quiet: bool, verbose: bool) -> Self {
        let tty = io::stderr().is_terminal();
        Self {
            bars: (tty && !quiet && !verbose)
                .then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr())),
            lines: !quiet && (!tty || verbose),
        }
    }

    /// A bar for one layer's download and extraction.
    #[must_use]
    pub fn layer(&self, label: &str, size: u64) -> LayerProgress {
        let bar = self.bars.as_ref().map(|m| {
            let bar = m.add(ProgressBar::new(size));
            bar.set_style(
                ProgressStyle::with_template("{prefix:>12} [{bar:30}] {bytes:>10}/{total_bytes:<10} {bytes_per_sec:>12} {eta}")
                    .expect("a valid template")
                    .progress_chars("=> "),
            );
            bar.set_prefix(label.to_owned());
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        });
        LayerProgress { bar }
    }

    /// A message line (stderr), shown unless quiet.
    pub fn line(&self, text: &str) {
        if let Some(m) = &self.bars {
            let _ = m.println(text);
        } else if self.lines {
            let _ = writeln!(io::stderr(), "{text}");
        }
    }

    /// A final summary line, shown unless quiet.
    pub fn summary(&self, text: &str) {
        if self.bars.is_some() || self.lines {
            let _ = writeln!(io::stderr(), "{text}");
        }
    }
}

/// One layer's bar.
pub struct LayerProgress {
    bar: Option<ProgressBar>,
}

impl LayerProgress {
    /// Wraps a reader so that bytes read advance the bar.
    pub fn wrap<R: Read>(&self, inner: R) -> Counting<R> {
        Counting {
            inner,
            bar: self.bar.clone(),
        }
    }

    /// Ends the bar.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// A reader that advances a bar.
pub struct Counting<R> {
    inner: R,
    bar: Option<ProgressBar>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(bar) = &self.bar {
            bar.inc(n as u64);
        }
        Ok(n)
    }
}
