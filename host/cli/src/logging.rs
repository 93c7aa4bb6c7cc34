//! Log lines (plugin output, warnings, a server's step lines) go to stderr, above the live
//! progress line when there is one; `STEPFLOW_LOG` sets the level (default info).

use crate::cli::LogFormat;
use crate::progress::LogWriter;

/// How a command logs: the one-shot commands without times (a person watches them), the
/// server with times, as text or JSON.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Style {
    /// For commands a person runs and watches.
    Interactive,
    /// For a long-running server.
    Service(LogFormat),
}

/// Installs the log subscriber; colours only when stderr is a terminal.
pub fn init(style: Style) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("STEPFLOW_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(LogWriter)
        .with_target(false);
    let _ = match style {
        Style::Interactive => builder.with_ansi(ansi).without_time().try_init(),
        Style::Service(LogFormat::Text) => builder.with_ansi(ansi).try_init(),
        Style::Service(LogFormat::Json) => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
    };
}
