//! What a person sees while a run is driven: a live line on a terminal, plain lines otherwise,
//! nothing with `--json`. It is the engine's observer for the command line.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use stepflow_engine::{Observer, Stopped, Waiting};
use stepflow_model::{CallKind, CallRecord, Outcome};

use crate::output;

/// The live line, when there is one, so log lines can be written above it (see [`LogWriter`]).
static LIVE: std::sync::OnceLock<ProgressBar> = std::sync::OnceLock::new();

/// Where log lines go: stderr, above the live progress line when there is one.
#[derive(Clone, Copy, Default)]
pub struct LogWriter;

impl std::io::Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match LIVE.get() {
            Some(bar) if !bar.is_finished() => bar.suspend(|| std::io::stderr().write(buf)),
            _ => std::io::stderr().write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogWriter {
    type Writer = LogWriter;

    fn make_writer(&'a self) -> Self::Writer {
        *self
    }
}

/// The progress display.
pub struct Progress {
    mode: Mode,
    /// The run being driven, once known, for the hint of a wait for a signal.
    run_id: Option<String>,
}

enum Mode {
    Silent,
    Lines,
    Live(ProgressBar),
}

impl Progress {
    /// Live on a terminal, lines otherwise, silent when `quiet`.
    pub fn new(quiet: bool) -> Self {
        let mode = if quiet {
            Mode::Silent
        } else if std::io::stdout().is_terminal() {
            let bar = ProgressBar::new_spinner();
            bar.set_style(
                ProgressStyle::with_template("{spinner:.cyan} {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            bar.enable_steady_tick(Duration::from_millis(120));
            let _ = LIVE.set(bar.clone());
            Mode::Live(bar)
        } else {
            Mode::Lines
        };
        Progress { mode, run_id: None }
    }

    /// Names the run being driven, so a wait for a signal can say how to send it.
    pub fn set_run(&mut self, run_id: &str) {
        self.run_id = Some(run_id.to_string());
    }

    /// Prints a line above the live line (or as a plain line).
    pub fn line(&self, text: &str) {
        match &self.mode {
            Mode::Silent => {}
            Mode::Lines => output::line(text),
            Mode::Live(bar) => bar.println(text),
        }
    }

    /// What is happening now, on the live line (nothing otherwise): e.g. loading plugins.
    pub fn status(&self, text: &str) {
        if let Mode::Live(bar) = &self.mode {
            bar.set_message(text.to_string());
        }
    }

    /// A call is about to be made.
    pub fn started(&self, n: u64, path: &str, kind: CallKind) {
        if let Mode::Live(bar) = &self.mode {
            bar.set_message(format!("step {n} · {path} ({})", kind.as_str()));
        }
    }

    /// A call finished.
    pub fn finished(&self, n: u64, call: &CallRecord, duration_ms: u64) {
        let (mark, what) = match &call.outcome {
            Outcome::Done(_) => ("✓", "done".to_string()),
            Outcome::Answered(b) => ("✓", format!("{b}")),
            Outcome::Retrying {
                error,
                group,
                attempt,
            } => (
                "↻",
                format!("{error}; retrying {group} (attempt {attempt})"),
            ),
            Outcome::Failed(error) => ("✗", format!("failed: {error}")),
        };
        let attempt = if call.attempt > 1 {
            format!(" [attempt {}]", call.attempt)
        } else {
            String::new()
        };
        let redelivered = if call.redelivered {
            " [redelivered]"
        } else {
            ""
        };
        self.line(&format!(
            "{mark} {n:>3} {} ({}){attempt}{redelivered}: {what} ({duration_ms} ms)",
            call.step,
            call.kind.as_str()
        ));
    }

    /// The run sleeps until `until` (Unix ms) before checking `path` again.
    pub fn waiting(&self, path: &str, until: u64, now: u64, first: bool) {
        let left = human_ms(until.saturating_sub(now));
        match &self.mode {
            Mode::Silent => {}
            Mode::Lines if first => {
                output::line(format!("… waiting {left} before {path} is due again"))
            }
            Mode::Lines => {}
            Mode::Live(bar) => {
                bar.set_message(format!("waiting {left} before {path} is due again"))
            }
        }
    }

    /// The run waits at `wait.step` for `signal` (until `wait.until_ms`, when it has a timeout).
    fn awaiting_signal(&self, wait: &Waiting<'_>, signal: &str) {
        let left = match wait.until_ms {
            stepflow_store::NEVER_DUE_MS => String::new(),
            until => format!(
                ", giving up in {}",
                human_ms(until.saturating_sub(wait.now_ms))
            ),
        };
        let hint = match &self.run_id {
            Some(run) => format!(" (send it: stepflow signal {run} {signal})"),
            None => String::new(),
        };
        match &self.mode {
            Mode::Silent => {}
            Mode::Lines if wait.first => output::line(format!(
                "… {} waits for signal `{signal}`{left}{hint}",
                wait.step
            )),
            Mode::Lines => {}
            Mode::Live(bar) => bar.set_message(format!(
                "{} waits for signal `{signal}`{left}{hint}",
                wait.step
            )),
        }
    }

    /// The step in flight was abandoned by a second Ctrl-C.
    pub fn abandoned(&self) {
        self.line("abandoned the step in flight; it will run again on resume");
    }

    /// Clears the live line.
    pub fn finish(&self) {
        if let Mode::Live(bar) = &self.mode {
            bar.finish_and_clear();
        }
    }
}

impl Observer for Progress {
    fn building(&mut self, _plugin: &str, command: &str) {
        eprintln!("building plugins: {command}");
    }

    fn step_started(&mut self, n: u64, step: &str, kind: CallKind) {
        self.started(n, step, kind);
    }

    fn step_finished(&mut self, n: u64, call: &CallRecord, duration_ms: u64) {
        self.finished(n, call, duration_ms);
    }

    fn waiting(&mut self, wait: &Waiting<'_>) {
        match wait.signal {
            Some(signal) => self.awaiting_signal(wait, signal),
            None => Progress::waiting(self, wait.step, wait.until_ms, wait.now_ms, wait.first),
        }
    }

    fn stopped(&mut self, why: Stopped) {
        if why == Stopped::Abandoned {
            self.abandoned();
        }
    }
}

/// `850ms`, `4s`, `2m 5s`, `3h 0m`: short and exact enough for a countdown.
pub fn human_ms(ms: u64) -> String {
    if ms < 1000 {
        return format!("{ms}ms");
    }
    // Rounded up, so a countdown never shows 0 while time is left.
    let secs = ms.div_ceil(1000);
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m {}s", secs / 60, secs % 60),
        _ => format!("{}h {}m", secs / 3600, secs % 3600 / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::human_ms;

    #[test]
    fn countdowns_round_up_and_carry_into_the_next_unit() {
        assert_eq!(human_ms(850), "850ms");
        assert_eq!(human_ms(3_001), "4s");
        assert_eq!(human_ms(59_999), "1m 0s");
        assert_eq!(human_ms(125_000), "2m 5s");
        assert_eq!(human_ms(3_599_001), "1h 0m");
        assert_eq!(human_ms(10_800_000), "3h 0m");
    }
}
