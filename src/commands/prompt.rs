//! Asking for a username and a password on the terminal (`oras login` without them): the questions
//! on stderr, the answers from stdin, the password not echoed.

use anyhow::{bail, Context, Result};
use std::io::{BufRead, IsTerminal, Write};

/// The terminal's settings while the echo is off, to put back however the run ends.
#[cfg(unix)]
static SAVED: std::sync::Mutex<Option<libc::termios>> = std::sync::Mutex::new(None);

/// Whether there is someone to ask: standard input and error on a terminal.
pub fn interactive() -> bool {
    std::io::stdin().is_terminal() && std::io::stderr().is_terminal()
}

/// Asks `question` and reads one line (without its line break); the answer is echoed.
pub fn ask(question: &str) -> Result<String> {
    eprint!("{question}");
    let _ = std::io::stderr().flush();
    read_line()
}

/// Asks `question` and reads one line with the terminal's echo off.
pub fn ask_hidden(question: &str) -> Result<String> {
    eprint!("{question}");
    let _ = std::io::stderr().flush();
    let answer = {
        let _echo_off = EchoOff::new()?;
        read_line()
    };
    // The Enter the user typed was not echoed either.
    eprintln!();
    answer
}

fn read_line() -> Result<String> {
    let mut line = String::new();
    let n = std::io::stdin().lock().read_line(&mut line).context("cannot read the terminal")?;
    if n == 0 {
        bail!("no answer: the terminal's input ended");
    }
    let line = line.strip_suffix('\n').unwrap_or(&line);
    Ok(line.strip_suffix('\r').unwrap_or(line).to_string())
}

/// Puts back the terminal's echo if a hidden question was cut short (Ctrl-C while it waits).
pub fn restore_terminal() {
    #[cfg(unix)]
    if let Ok(mut saved) = SAVED.lock() {
        if let Some(t) = saved.take() {
            // SAFETY: t is a termios that tcgetattr filled for this same descriptor.
            unsafe { libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &t) };
        }
    }
}

/// The terminal's echo off while it lives.
struct EchoOff;

impl EchoOff {
    #[cfg(unix)]
    fn new() -> Result<EchoOff> {
        // SAFETY: termios is plain data, filled by tcgetattr before it is read.
        let mut t: libc::termios = unsafe { std::mem::zeroed() };
        if unsafe { libc::tcgetattr(libc::STDIN_FILENO, &mut t) } != 0 {
            bail!("cannot turn the terminal's echo off: {}", std::io::Error::last_os_error());
        }
        if let Ok(mut saved) = SAVED.lock() {
            *saved = Some(t);
        }
        let mut quiet = t;
        quiet.c_lflag &= !libc::ECHO;
        // TCSANOW, not TCSAFLUSH: an answer typed ahead must not be thrown away.
        // SAFETY: quiet is a valid termios derived from the one just read.
        if unsafe { libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &quiet) } != 0 {
            restore_terminal();
            bail!("cannot turn the terminal's echo off: {}", std::io::Error::last_os_error());
        }
        Ok(EchoOff)
    }

    #[cfg(not(unix))]
    fn new() -> Result<EchoOff> {
        bail!("cannot ask for a password unechoed here: give it with --password-stdin")
    }
}

impl Drop for EchoOff {
    fn drop(&mut self) {
        restore_terminal();
    }
}
