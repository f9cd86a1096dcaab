//! The `kyc-server` executable: parses the command line, runs it, and turns the outcome into what
//! a script relies on: the created id or key alone on stdout, one line on stderr and a non-zero
//! exit on failure.

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use clap::error::{ContextKind, ContextValue, ErrorKind};
use kyc_server::{Cli, run, telemetry};
use secrecy::ExposeSecret;

/// A serving process allocates and frees many small buffers per request (JSON, rows, headers);
/// mimalloc's thread-local free lists make that markedly cheaper than the system allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => return usage_error(&error),
    };
    telemetry::init(&cli.config.log_filter, cli.config.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(Some(output)) => {
            let mut stdout = std::io::stdout().lock();
            if writeln!(stdout, "{}", output.expose_secret()).is_err() {
                return ExitCode::FAILURE;
            }
            ExitCode::SUCCESS
        }
        Ok(None) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("error: {failure}");
            ExitCode::FAILURE
        }
    }
}

/// Help and version print as clap renders them; every other parse error (an unknown flag, a
/// malformed setting from a flag or the environment) becomes one line naming the flag and, through
/// its value name, the environment variable. The rejected value is never repeated: it may be a
/// database URL with a password in it.
fn usage_error(error: &clap::Error) -> ExitCode {
    match error.kind() {
        ErrorKind::DisplayHelp
        | ErrorKind::DisplayVersion
        | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _printed = error.print();
            if error.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            }
        }
        _ => {
            eprintln!("error: {}", one_line(error));
            ExitCode::from(2)
        }
    }
}

fn one_line(error: &clap::Error) -> String {
    let context = |kind: ContextKind| match error.get(kind) {
        Some(ContextValue::String(text)) => Some(text.clone()),
        Some(ContextValue::Strings(texts)) => Some(texts.join(", ")),
        _ => None,
    };
    let arg = context(ContextKind::InvalidArg).unwrap_or_else(|| "an argument".to_owned());
    match error.kind() {
        ErrorKind::ValueValidation => {
            let reason = std::error::Error::source(error)
                .map_or_else(|| "not a valid value".to_owned(), ToString::to_string);
            format!("invalid value for {arg}: {reason}")
        }
        ErrorKind::InvalidValue => match context(ContextKind::ValidValue) {
            Some(valid) => format!("invalid value for {arg}: expected one of {valid}"),
            None => format!("invalid value for {arg}"),
        },
        ErrorKind::MissingRequiredArgument => format!("missing required argument {arg}"),
        _ => {
            // Other errors (unknown flag or subcommand) only echo what was typed on the command
            // line: their first sentence, with the line that completes it.
            let rendered = error.render().to_string();
            let mut lines = rendered
                .lines()
                .map(str::trim)
                .filter(|line| !line.is_empty());
            let first = lines.next().unwrap_or("invalid command line");
            let first = first.strip_prefix("error: ").unwrap_or(first);
            match (first.ends_with(':'), lines.next()) {
                (true, Some(next)) => format!("{first} {next}"),
                _ => first.to_owned(),
            }
        }
    }
}
