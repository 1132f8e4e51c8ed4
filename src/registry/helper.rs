//! Running a credential helper, `docker-credential-<name> get|store|erase`, as the
//! docker-credential-helpers protocol has it: the request on standard input (never in the
//! arguments, where every user of the machine could read it), the answer on standard output, a
//! failure as a message and a non-zero exit, all within a time limit.

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// What a helper prints, exiting with a failure, when it has no credentials for the server: the
/// protocol signals "not found" by this message (`credentials.ErrCredentialsNotFound`,
/// "credentials not found in native keychain"), not by an exit code.
const NOT_FOUND: &str = "credentials not found";

/// The longest part of a helper's failure message that is shown.
const MAX_MESSAGE: usize = 200;

/// What became of one run of a helper.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// It succeeded; what it printed on standard output.
    Done(Vec<u8>),
    /// It has no credentials for the server.
    NotFound,
    /// It is not installed (not on `PATH`).
    Missing,
    /// It failed: why, in one line fit to print (the helper's own message escaped and redacted).
    Failed(String),
}

/// The program a helper name stands for.
pub fn program(name: &str) -> String {
    format!("docker-credential-{name}")
}

/// How long a credential helper may take: `ORAS_CREDENTIAL_HELPER_TIMEOUT` seconds, 60 by default.
/// A helper waiting for a prompt nobody sees (a locked keychain in a CI job) would hang the run.
fn timeout() -> Duration {
    let secs = std::env::var("ORAS_CREDENTIAL_HELPER_TIMEOUT")
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .filter(|s| *s > 0);
    Duration::from_secs(secs.unwrap_or(60))
}

/// Runs `docker-credential-<name> <action>` with `input` on its standard input, blocking until it
/// answers or its time is up.
pub fn run(name: &str, action: &str, input: &[u8]) -> Outcome {
    let program = program(name);
    if name.contains(['/', '\\']) || name.trim().is_empty() {
        return Outcome::Failed(format!(
            "{:?} is not a credential helper name",
            crate::scrub::escape_controls(name)
        ));
    }
    let child = Command::new(&program)
        .arg(action)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Outcome::Missing,
        Err(e) => return Outcome::Failed(format!("cannot run {program}: {e}")),
    };
    if let Some(mut stdin) = child.stdin.take() {
        // A helper that exits without reading is answered by its exit status below; dropping the
        // pipe closes it, which is how the helper knows the request is complete.
        let _ = stdin.write_all(input);
    }
    let limit = timeout();
    let out = match wait_for(child, limit) {
        Ok(Some(o)) => o,
        Ok(None) => {
            let secs = limit.as_secs();
            return Outcome::Failed(format!(
                "`{program} {action}` did not answer within {secs} s (waiting for a prompt? ORAS_CREDENTIAL_HELPER_TIMEOUT sets the limit)"
            ));
        }
        Err(e) => return Outcome::Failed(format!("cannot run {program}: {e}")),
    };
    if out.status.success() {
        return Outcome::Done(out.stdout);
    }
    let said =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    if said.to_ascii_lowercase().contains(NOT_FOUND) {
        return Outcome::NotFound;
    }
    // A failing helper prints an error, not credentials; keep it short and printable all the same.
    let first: String = said
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("")
        .chars()
        .take(MAX_MESSAGE)
        .collect();
    Outcome::Failed(format!(
        "`{program} {action}` failed ({}): {}",
        out.status,
        crate::scrub::scrub(&first)
    ))
}

/// Stores credentials in a helper: `store`, with `{"ServerURL","Username","Secret"}` on its
/// standard input; an identity token goes under the username `<token>`.
pub fn store(name: &str, server: &str, username: &str, secret: &str) -> Outcome {
    let request = serde_json::json!({"ServerURL": server, "Username": username, "Secret": secret})
        .to_string();
    run(name, "store", request.as_bytes())
}

/// Removes a server's credentials from a helper: `erase`, with the server address on its standard
/// input.
pub fn erase(name: &str, server: &str) -> Outcome {
    run(name, "erase", server.as_bytes())
}

/// Collects a child's output, or kills it once `limit` has passed (None).
fn wait_for(
    mut child: std::process::Child,
    limit: Duration,
) -> std::io::Result<Option<std::process::Output>> {
    // Readers on their own threads, so a full pipe cannot stall the child; after a kill they are
    // left to end with the pipes (a grandchild may still hold them).
    let reader = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_end(&mut buf);
            }
            buf
        })
    };
    let out = reader(child.stdout.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
    let err = reader(child.stderr.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(st) = child.try_wait()? {
            break st;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let stdout = out.join().unwrap_or_default();
    let stderr = err.join().unwrap_or_default();
    Ok(Some(std::process::Output { status, stdout, stderr }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_with_paths_are_refused_and_absent_helpers_are_missing() {
        assert!(
            matches!(run("../x", "get", b""), Outcome::Failed(m) if m.contains("not a credential helper name"))
        );
        assert_eq!(run("oras-test-surely-missing", "get", b"r"), Outcome::Missing);
    }
}
