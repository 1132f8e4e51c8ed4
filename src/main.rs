//! `oras`: back up and restore OCI content between registries and portable OCI layouts.

mod cli;
mod commands;
mod digest;
mod engine;
mod layout;
mod manifest;
mod progress;
mod reference;
mod registry;
mod target;

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("Error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let code = rt.block_on(async {
        let work = async {
            match cli.command {
                cli::Command::Backup(a) => commands::backup::run(a).await,
                cli::Command::Restore(a) => commands::restore::run(a).await,
            }
        };
        tokio::select! {
            r = work => match r {
                Ok(()) => 0u8,
                Err(e) => {
                    // One line: the outermost context, then its causes.
                    let msg = format!("{e:#}").replace('\n', " ");
                    eprintln!("Error: {msg}");
                    if e.downcast_ref::<commands::UsageError>().is_some() { 2 } else { 1 }
                }
            },
            _ = interrupted() => {
                eprintln!("Interrupted: stopped transfers; nothing incomplete was left in place.");
                130
            }
        }
    });
    // Dropping the runtime cancels whatever was in flight; temporary files go with their owners.
    rt.shutdown_timeout(std::time::Duration::from_secs(1));
    ExitCode::from(code)
}

async fn interrupted() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
