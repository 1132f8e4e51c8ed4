//! `oras`: back up and restore OCI content between registries and portable OCI layouts.

// A function a reader can hold in mind at once: at most 100 lines (clippy.toml).
#![warn(clippy::too_many_lines)]

use oras::{cli, commands};

use clap::Parser;
use std::process::ExitCode;

// glibc's per-thread arenas grow a page at a time under the worker threads (an mprotect call each);
// jemalloc does not, at no cost elsewhere.
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

// jemalloc's defaults are for long-running servers: an arena per 4 CPUs per thread pool and freed
// pages kept 10 s for reuse. A run's resident memory is its heap's peak plus that slack: one arena
// and pages given back at once (by jemalloc's background thread, off the transfer path) took a
// restore of 5,000 tags from 176 to 134 MiB at the same speed. `_RJEM_MALLOC_CONF` still
// overrides it.
#[cfg(all(not(target_env = "msvc"), target_os = "linux"))]
#[export_name = "_rjem_malloc_conf"]
#[used]
static MALLOC_CONF: &[u8; 67] =
    b"narenas:1,background_thread:true,dirty_decay_ms:0,muzzy_decay_ms:0\0";

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    oras::progress::set_debug(cli.command.debug());
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("Error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let code = rt.block_on(async {
        // Listening before the command starts: a signal that comes while it starts still ends the
        // run through the clean path below, never by the default action (no exit code, files left).
        let stop = stop_signals();
        let work = async move {
            match cli.command {
                cli::Command::Backup(a) => commands::backup::run(a).await,
                cli::Command::Restore(a) => commands::restore::run(a).await,
                cli::Command::Repo(cli::RepoCommand::Ls(a)) => commands::repo::ls(a).await,
                cli::Command::Repo(cli::RepoCommand::Tags(a)) => commands::repo::tags(a).await,
                cli::Command::Discover(a) => commands::discover::run(a).await,
                cli::Command::Manifest(cli::ManifestCommand::Fetch(a)) => {
                    commands::manifest::fetch(a).await
                }
                cli::Command::Verify(a) => commands::verify::run(a).await,
                cli::Command::Copy(a) => commands::copy::run(a).await,
                cli::Command::Login(a) => commands::login::login(a).await,
                cli::Command::Logout(a) => commands::login::logout(a).await,
                cli::Command::Completion(a) => {
                    use clap::CommandFactory;
                    clap_complete::generate(
                        a.shell,
                        &mut cli::Cli::command(),
                        "oras",
                        &mut std::io::stdout(),
                    );
                    Ok(())
                }
                cli::Command::Man(a) => write_man_pages(&a.dir),
                cli::Command::Version => {
                    use std::io::Write;
                    // Not println!: a closed pipe (`oras version | true`) is an error to report,
                    // not a panic.
                    writeln!(std::io::stdout(), "oras {}", cli::LONG_VERSION)
                        .map_err(anyhow::Error::from)
                }
            }
        };
        // The command runs as a task on the runtime's workers, beside the connection tasks it talks
        // to: driven from this thread instead, every answer of thousands of small requests crossed
        // threads. Aborted when dropped (Ctrl-C), as the future itself was.
        let work = async move {
            match tokio_util::task::AbortOnDropHandle::new(tokio::spawn(work)).await {
                Ok(r) => r,
                Err(e) => Err(anyhow::anyhow!("internal: the command's task failed: {e}")),
            }
        };
        tokio::select! {
            r = work => match r {
                Ok(()) => 0u8,
                Err(e) => {
                    oras::interrupt::abandon_uploads().await;
                    // One line: the outermost context, then its causes.
                    let msg = format!("{e:#}").replace('\n', " ");
                    eprintln!("Error: {}", oras::scrub::scrub(&msg));
                    if e.downcast_ref::<commands::UsageError>().is_some() { 2 } else { 1 }
                }
            },
            _ = stop => {
                // A password prompt stopped midway leaves the terminal not echoing.
                commands::prompt::restore_terminal();
                oras::interrupt::abandon_uploads().await;
                eprintln!("Interrupted: stopped transfers; nothing incomplete was left in place.");
                130
            }
        }
    });
    // Dropping the runtime cancels whatever was in flight; temporary files go with their owners.
    rt.shutdown_timeout(oras::interrupt::SHUTDOWN_LIMIT);
    ExitCode::from(code)
}

/// Writes `oras.1` and one page per subcommand into `dir`.
fn write_man_pages(dir: &std::path::Path) -> anyhow::Result<()> {
    use anyhow::Context;
    use clap::CommandFactory;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let cmd = cli::Cli::command();
    let mut pages: Vec<(&'static str, clap::Command)> = vec![("oras", cmd.clone())];
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        pages.push((Box::leak(format!("oras-{}", sub.get_name()).into_boxed_str()), sub.clone()));
    }
    for (name, cmd) in pages {
        let mut buf = Vec::new();
        clap_mangen::Man::new(cmd.name(name)).render(&mut buf)?;
        let path = dir.join(format!("{name}.1"));
        std::fs::write(&path, buf).with_context(|| format!("cannot write {}", path.display()))?;
        println!("{}", path.display());
    }
    Ok(())
}

/// Resolves at the first Ctrl-C or SIGTERM; the handlers are installed when it is called, not when
/// it is first polled.
#[cfg(unix)]
fn stop_signals() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{signal, SignalKind};
    let int = signal(SignalKind::interrupt());
    let term = signal(SignalKind::terminate());
    async move {
        match (int, term) {
            (Ok(mut int), Ok(mut term)) => {
                tokio::select! {
                    _ = int.recv() => {}
                    _ = term.recv() => {}
                }
            }
            (Ok(mut one), Err(_)) | (Err(_), Ok(mut one)) => {
                one.recv().await;
            }
            (Err(_), Err(_)) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
}

/// Resolves at the first Ctrl-C.
#[cfg(not(unix))]
fn stop_signals() -> impl std::future::Future<Output = ()> {
    async {
        let _ = tokio::signal::ctrl_c().await;
    }
}
