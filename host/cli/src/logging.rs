//! Log lines (plugin output, warnings) go to stderr, above the live progress line when there is
//! one; `STEPFLOW_LOG` sets the level (default info).

use crate::progress::LogWriter;

/// Installs the log subscriber; colours only when stderr is a terminal.
pub fn init() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("STEPFLOW_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(LogWriter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .without_time()
        .try_init();
}
