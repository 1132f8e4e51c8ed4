//! Running the binary under test, the one way every test does: [`Oras`] says how (arguments,
//! environment, standard input, a terminal), [`Running`] is a run under way (to feed, watch or
//! signal), and [`Run`] is what it did. Every run gets an empty docker config, no proxies from the
//! environment and no colour, and ends within a time limit: a run that outlives it is killed, so
//! that a hang fails its test promptly instead of stalling the suite.
//!
//! Each run is reaped with `wait4`, which also gives its peak resident memory, `ru_maxrss`: exact,
//! and no tool needed. One catch: Linux counts in it the memory of the process image the child
//! replaced at `exec`, which for a child spawned by this (multi-threaded, vfork-spawning) test
//! process is the test process's own high-water mark, large once a test has held big blobs in
//! memory. So a figure no larger than the test process's own peak is not trusted: the child's own
//! `VmHWM`, sampled every few milliseconds while it runs, is used instead.

use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// How long a run may take when its test sets no limit of its own.
const RUN_LIMIT: Duration = Duration::from_secs(180);

/// How often a run is checked for its end (and its memory sampled).
const POLL: Duration = Duration::from_millis(5);

/// `oras <args>` with no standard input, ended within the default limit.
pub fn oras(args: &[&str]) -> Run {
    Oras::new(args).run()
}

/// `oras backup --no-tty <args>`
pub fn backup(args: &[&str]) -> Run {
    Oras::new(&["backup", "--no-tty"]).args(args).run()
}

/// `oras restore --no-tty <args>`
pub fn restore(args: &[&str]) -> Run {
    Oras::new(&["restore", "--no-tty"]).args(args).run()
}

/// What a run's standard input is.
enum Input {
    Nothing,
    Bytes(Vec<u8>),
    /// A pipe the test writes to, through [`Running::stdin`].
    Pipe,
}

/// How to run the binary: built up, then [`Oras::run`] (to its end) or [`Oras::spawn`] (in the
/// background).
pub struct Oras {
    binary: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    input: Input,
    terminal: bool,
}

impl Oras {
    /// `oras <args>`, with no standard input.
    pub fn new(args: &[&str]) -> Oras {
        Oras {
            binary: env!("CARGO_BIN_EXE_oras").into(),
            args: Vec::new(),
            env: Vec::new(),
            input: Input::Nothing,
            terminal: false,
        }
        .args(args)
    }

    /// More arguments.
    pub fn args(mut self, args: &[&str]) -> Oras {
        self.args.extend(args.iter().map(|a| a.to_string()));
        self
    }

    /// Sets `name` on top of the defaults (e.g. `PATH` with a credential helper, `DOCKER_CONFIG`,
    /// `HTTPS_PROXY`/`NO_PROXY`).
    pub fn env(mut self, name: &str, value: &str) -> Oras {
        self.env.push((name.into(), value.into()));
        self
    }

    /// Sets each of `vars` on top of the defaults.
    pub fn envs(self, vars: &[(&str, &str)]) -> Oras {
        vars.iter().fold(self, |o, (name, value)| o.env(name, value))
    }

    /// Standard input: these bytes, then its end.
    pub fn stdin(mut self, bytes: &[u8]) -> Oras {
        self.input = Input::Bytes(bytes.to_vec());
        self
    }

    /// Standard input: a pipe the test writes to while the run goes on ([`Running::stdin`]).
    pub fn stdin_pipe(mut self) -> Oras {
        self.input = Input::Pipe;
        self
    }

    /// Standard input, output and error on a pseudo-terminal, through util-linux `script` (which
    /// scripts/test.sh installs). What the terminal showed is the run's stdout, its line ends as
    /// `\n`; stderr is empty, having gone to the terminal too.
    pub fn on_a_terminal(mut self) -> Oras {
        self.terminal = true;
        self
    }

    /// Runs another build of `oras` (the binary an image holds, say) instead of this test's.
    pub fn binary(mut self, path: &Path) -> Oras {
        self.binary = path.to_path_buf();
        self
    }

    /// Runs to the end, within the default limit; a run still going then fails the test.
    pub fn run(self) -> Run {
        self.spawn().wait(RUN_LIMIT)
    }

    /// Runs to the end or to `limit`, then kills it, measuring time and memory either way.
    pub fn measure(self, limit: Duration) -> Measured {
        self.spawn().measure(limit)
    }

    /// Starts the run in the background.
    pub fn spawn(self) -> Running {
        let out = tempfile::Builder::new().prefix("oras-run").tempdir().unwrap();
        let mut cmd = if self.terminal {
            let line: Vec<String> = std::iter::once(self.binary.to_str().expect("utf-8 path"))
                .chain(self.args.iter().map(String::as_str))
                .map(shell_quote)
                .collect();
            let mut c = Command::new("script");
            // -e: script's exit code is the command's.
            c.args(["-qec", &line.join(" "), "/dev/null"]);
            c
        } else {
            let mut c = Command::new(&self.binary);
            c.args(&self.args);
            c
        };
        cmd.env("DOCKER_CONFIG", docker_config_dir())
            .env("NO_COLOR", "1")
            .env_remove("HTTP_PROXY")
            .env_remove("HTTPS_PROXY")
            .env_remove("ALL_PROXY")
            .env_remove("http_proxy")
            .env_remove("https_proxy")
            .env_remove("all_proxy")
            .env("NO_PROXY", "*")
            .envs(self.env.iter().map(|(n, v)| (n, v)))
            .stdout(Stdio::from(std::fs::File::create(out.path().join("stdout")).unwrap()))
            .stderr(Stdio::from(std::fs::File::create(out.path().join("stderr")).unwrap()));
        match &self.input {
            Input::Nothing => cmd.stdin(Stdio::null()),
            Input::Bytes(bytes) => {
                // A file rather than a pipe: nothing to feed while the run goes on.
                let p = out.path().join("stdin");
                std::fs::write(&p, bytes).unwrap();
                cmd.stdin(Stdio::from(std::fs::File::open(&p).unwrap()))
            }
            Input::Pipe => cmd.stdin(Stdio::piped()),
        };
        let started = Instant::now();
        let child = cmd.spawn().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
        Running { child, args: self.args, terminal: self.terminal, out, started, reaped: false }
    }
}

/// `s` as one word for `sh`.
fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// An empty docker config directory, so that no credentials of the machine are used.
fn docker_config_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir =
            tempfile::Builder::new().prefix("oras-test-docker-config").tempdir().unwrap().keep();
        std::fs::write(dir.join("config.json"), "{\"auths\":{}}").unwrap();
        dir
    })
}

/// A run under way. Dropped before its end (a test failing meanwhile), it is killed.
pub struct Running {
    child: Child,
    args: Vec<String>,
    terminal: bool,
    /// Where its stdout and stderr go.
    out: tempfile::TempDir,
    started: Instant,
    reaped: bool,
}

impl Running {
    /// The process ID.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The pipe to its standard input ([`Oras::stdin_pipe`]); closing it ends the input.
    pub fn stdin(&mut self) -> ChildStdin {
        self.child.stdin.take().expect("a piped standard input, not taken before")
    }

    /// What it has written to stdout so far (on a terminal, everything the terminal showed).
    pub fn stdout(&self) -> String {
        std::fs::read_to_string(self.out.path().join("stdout")).unwrap_or_default()
    }

    /// What it has written to stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.out.path().join("stderr")).unwrap_or_default()
    }

    /// Sends `signal` (`libc::SIGINT`, `libc::SIGTERM`...).
    pub fn signal(&self, signal: libc::c_int) {
        // SAFETY: the child is not reaped yet (self.reaped is only set on the way out), so the pid
        // still names it.
        let sent = unsafe { libc::kill(self.pid() as libc::pid_t, signal) };
        assert_eq!(sent, 0, "kill -{signal} {}: {}", self.pid(), std::io::Error::last_os_error());
    }

    /// Whether it has not ended yet (an ended run is left to be reaped, with its resource usage, by
    /// [`Running::wait`] or [`Running::measure`]).
    pub fn is_running(&self) -> bool {
        // SAFETY: siginfo_t is plain data; waitid fills it, WNOWAIT leaving the child unreaped.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        let r = unsafe {
            libc::waitid(
                libc::P_PID,
                self.pid() as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
            )
        };
        assert_eq!(r, 0, "waitid: {}", std::io::Error::last_os_error());
        // SAFETY: waitid succeeded and filled info; its pid is 0 when the child has not ended.
        let ended = unsafe { info.si_pid() };
        ended == 0
    }

    /// Waits up to `limit` for the end; a run still going then is killed and fails the test.
    #[track_caller]
    pub fn wait(self, limit: Duration) -> Run {
        let m = self.measure(limit);
        assert!(!m.killed, "oras did not end within {limit:?} (a hang):\n{}", m.run.describe());
        m.run
    }

    /// Waits up to `limit` for the end, killing the run then; measures it either way. A killed run
    /// has no exit code and says so at the end of its stderr.
    pub fn measure(mut self, limit: Duration) -> Measured {
        let pid = self.pid() as libc::pid_t;
        let mut killed = false;
        let mut sampled = 0;
        let (code, maxrss) = loop {
            sampled = sampled.max(vm_hwm_kib(&format!("/proc/{pid}/status")).unwrap_or(0));
            let mut status = 0;
            // SAFETY: rusage is plain data; wait4 fills it for the child we spawned (and reaps it).
            let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
            let flags = if killed { 0 } else { libc::WNOHANG };
            let reaped = unsafe { libc::wait4(pid, &mut status, flags, &mut usage) };
            assert!(reaped >= 0, "wait4: {}", std::io::Error::last_os_error());
            if reaped == pid {
                self.reaped = true;
                let code = libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status));
                break (code, usage.ru_maxrss as u64);
            }
            if !killed && self.started.elapsed() > limit {
                // SAFETY: the child is ours and not reaped yet, so the pid still names it.
                unsafe { libc::kill(pid, libc::SIGKILL) };
                killed = true;
                continue;
            }
            std::thread::sleep(POLL);
        };
        let elapsed = self.started.elapsed();
        // The test process's peak only grows, so read after the run it bounds what exec inherited.
        let own = vm_hwm_kib("/proc/self/status").unwrap_or(u64::MAX);
        let peak_exact = maxrss > own;
        let peak_rss_kib = if peak_exact { maxrss } else { sampled };
        let mut stdout = std::fs::read(self.out.path().join("stdout")).unwrap_or_default();
        if self.terminal {
            stdout.retain(|b| *b != b'\r');
        }
        let mut stderr = self.stderr();
        if killed {
            stderr.push_str(&format!("\n[killed by the test after {limit:?}]\n"));
        }
        let run = Run {
            args: std::mem::take(&mut self.args),
            code: if killed { None } else { code },
            stdout,
            stderr,
        };
        if std::env::var_os("ORAS_TEST_ECHO").is_some() {
            // Debugging aid: `ORAS_TEST_ECHO=1 cargo test -- --nocapture` shows every run.
            let how = if peak_exact { "exact" } else { "sampled" };
            eprintln!(
                "{}\nafter {:.1} s, peak RSS {peak_rss_kib} KiB ({how})",
                run.describe(),
                elapsed.as_secs_f64()
            );
        }
        Measured { run, peak_rss_kib, peak_exact, elapsed, killed }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if !self.reaped {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `VmHWM` (peak resident set size, KiB) from a `/proc/<pid>/status` file; None once the process is gone.
fn vm_hwm_kib(status_file: &str) -> Option<u64> {
    let status = std::fs::read_to_string(status_file).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.trim_start_matches("VmHWM:").trim().trim_end_matches("kB").trim().parse().ok()
}

/// One measured run.
#[derive(Debug)]
pub struct Measured {
    pub run: Run,
    /// Peak resident set size, KiB: `ru_maxrss`, or the sampled `VmHWM` when `ru_maxrss` may be
    /// the test process's own (then a spike in the last few milliseconds could be missed).
    pub peak_rss_kib: u64,
    /// Whether `peak_rss_kib` is `ru_maxrss` (exact) rather than sampled.
    pub peak_exact: bool,
    /// From spawn to exit (or to the kill).
    pub elapsed: Duration,
    /// Killed at the time limit.
    pub killed: bool,
}

/// The result of one `oras` run.
#[derive(Debug)]
pub struct Run {
    pub args: Vec<String>,
    /// None when killed at its time limit.
    pub code: Option<i32>,
    pub stdout: Vec<u8>,
    pub stderr: String,
}

impl Run {
    pub fn stdout_str(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    /// stdout and stderr together (for "the output mentions X" checks).
    pub fn output(&self) -> String {
        format!("{}\n{}", self.stdout_str(), self.stderr)
    }

    /// The run, for assertion messages: its command, exit code and output (cut to a readable size).
    pub fn describe(&self) -> String {
        format!(
            "oras {}\nexit code: {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.args.join(" "),
            self.code,
            truncate(&self.stdout_str(), 4000),
            truncate(&self.stderr, 4000)
        )
    }

    /// The lines of stderr that look like an error (`Error: ...`, clap's `error: ...`).
    pub fn error_lines(&self) -> Vec<&str> {
        self.stderr
            .lines()
            .filter(|l| l.trim_start().to_ascii_lowercase().starts_with("error"))
            .collect()
    }

    /// Exit code 0 and no panic.
    pub fn check_ok(&self) -> Result<(), String> {
        if self.code != Some(0) {
            return Err(format!("expected success:\n{}", self.describe()));
        }
        self.check_no_panic()
    }

    /// A clean failure: exit `code`, no panic, exactly one error on stderr, and that error naming
    /// each of `names` (any case). The error is one line starting with `Error: `, or for a usage
    /// error caught by the argument parser (exit 2), its `error: ` line and the indented lines under it.
    pub fn check_failure(&self, code: i32, names: &[&str]) -> Result<(), String> {
        if self.code != Some(code) {
            return Err(format!("expected exit code {code}:\n{}", self.describe()));
        }
        self.check_no_panic()?;
        if self.error_lines().len() != 1 {
            return Err(format!("expected exactly one error line on stderr:\n{}", self.describe()));
        }
        let mut lines = self
            .stderr
            .lines()
            .skip_while(|l| !l.trim_start().to_ascii_lowercase().starts_with("error"));
        let first = lines.next().unwrap_or_default();
        if !(first.starts_with("Error: ") || (code == 2 && first.starts_with("error: "))) {
            return Err(format!(
                "the error line does not start with \"Error: \":\n{}",
                self.describe()
            ));
        }
        let error: Vec<&str> = std::iter::once(first)
            .chain(lines.take_while(|l| l.starts_with(char::is_whitespace)))
            .collect();
        let error = error.join("\n").to_lowercase();
        for name in names {
            if !error.contains(&name.to_lowercase()) {
                return Err(format!("expected {name:?} in the error:\n{}", self.describe()));
            }
        }
        Ok(())
    }

    fn check_no_panic(&self) -> Result<(), String> {
        if self.output().contains("panicked") {
            return Err(format!("oras panicked:\n{}", self.describe()));
        }
        Ok(())
    }

    /// Asserts [`Run::check_ok`].
    #[track_caller]
    pub fn ok(&self) -> &Run {
        if let Err(e) = self.check_ok() {
            panic!("{e}");
        }
        self
    }

    /// Asserts [`Run::check_failure`]: the clean-failure assertion of every test.
    #[track_caller]
    pub fn fails(&self, code: i32, names: &[&str]) -> &Run {
        if let Err(e) = self.check_failure(code, names) {
            panic!("{e}");
        }
        self
    }
}

fn truncate(s: &str, n: usize) -> String {
    if s.len() <= n {
        s.to_string()
    } else {
        let mut end = n;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}... [{} bytes cut]", &s[..end], s.len() - end)
    }
}
