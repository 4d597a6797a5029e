//! Where results and messages go: results to stdout, everything else to stderr.

use std::io::{self, Write};

use anyhow::Result;

/// The command's result channel (stdout).
pub struct Output {
    stdout: io::Stdout,
}

impl Output {
    /// Results on stdout.
    #[must_use]
    pub fn new() -> Self {
        Self {
            stdout: io::stdout(),
        }
    }

    /// Writes bytes unchanged, as a result.
    pub fn bytes(&mut self, bytes: &[u8]) -> Result<()> {
        let mut lock = self.stdout.lock();
        lock.write_all(bytes)?;
        lock.flush()?;
        Ok(())
    }
}

impl Output {
    /// Writes one line of text, as a result.
    pub fn line(&mut self, text: &str) -> Result<()> {
        let mut lock = self.stdout.lock();
        writeln!(lock, "{text}")?;
        lock.flush()?;
        Ok(())
    }

    /// Writes one JSON value (pretty, with a newline), as a result.
    pub fn json(&mut self, value: &impl serde::Serialize) -> Result<()> {
        let mut lock = self.stdout.lock();
        serde_json::to_writer_pretty(&mut lock, value)?;
        writeln!(lock)?;
        lock.flush()?;
        Ok(())
    }
}

impl Default for Output {
    fn default() -> Self {
        Self::new()
    }
}
