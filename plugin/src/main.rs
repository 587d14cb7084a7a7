//! `kubectl-switchyard`: see the crate docs. Errors go to stderr as
//! `error: …` with exit status 1, as kubectl's own.

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use kubectl_switchyard::{cli::Cli, run};

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    // Quiet by default: the plugin's stdout is its output, and scripts
    // parse it; RUST_LOG=debug shows the requests on stderr.
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match run(cli).await {
        Ok(text) => {
            // A closed pipe (`| head`) is not an error worth a message.
            let _ = std::io::stdout().write_all(text.as_bytes());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
