//! Runs the `oras` binary with a time limit, measuring how long it took and its peak resident
//! memory. A run that outlives its limit is killed, so a hang fails the test promptly instead of
//! stalling the suite.
//!
//! The peak is the kernel's `ru_maxrss`, from `wait4` when the process is reaped: exact, and no
//! tool needed. One catch: Linux counts in it the memory of the process image the child replaced at
//! `exec`, which for a child spawned by this (multi-threaded, vfork-spawning) test process is the
//! test process's own high-water mark. That is small unless a test blew it up (a panic symbolising
//! a backtrace reads the debug info: 150 MB), so a figure no larger than the test process's own
//! peak is not trusted: the child's own `VmHWM`, sampled every few milliseconds while it runs,
//! is used instead.

#![allow(dead_code)]

use crate::harness::Run;
use std::process::Stdio;
use std::time::{Duration, Instant};

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

/// Runs `oras <args>` (stdin from `stdin`, or none) with an empty docker config, no proxies and no
/// colour; kills it after `limit`. A killed run has no exit code and says so at the end of its stderr.
pub fn run_measured(args: &[&str], stdin: Option<&[u8]>, limit: Duration) -> Measured {
    let out = tempfile::tempdir().unwrap();
    let mut cmd = crate::harness::oras_command(args);
    cmd.stdout(Stdio::from(std::fs::File::create(out.path().join("stdout")).unwrap()))
        .stderr(Stdio::from(std::fs::File::create(out.path().join("stderr")).unwrap()));
    match stdin {
        Some(bytes) => {
            let p = out.path().join("stdin");
            std::fs::write(&p, bytes).unwrap();
            cmd.stdin(Stdio::from(std::fs::File::open(&p).unwrap()))
        }
        None => cmd.stdin(Stdio::null()),
    };
    let started = Instant::now();
    // Reaped by wait4 below, which Child::wait cannot do (it drops the resource usage).
    #[allow(clippy::zombie_processes)]
    let child = cmd.spawn().expect("spawn oras");
    let pid = child.id() as libc::pid_t;
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
            let code = libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status));
            break (code, usage.ru_maxrss as u64);
        }
        if !killed && started.elapsed() > limit {
            // SAFETY: the child is ours and not reaped yet, so the pid still names it.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            killed = true;
            continue;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let elapsed = started.elapsed();
    // The test process's peak only grows, so read after the run it bounds what exec inherited.
    let own = vm_hwm_kib("/proc/self/status").unwrap_or(u64::MAX);
    let peak_exact = maxrss > own;
    let peak = if peak_exact { maxrss } else { sampled };
    let mut stderr = std::fs::read_to_string(out.path().join("stderr")).unwrap_or_default();
    if killed {
        stderr.push_str(&format!("\n[killed by the test after {limit:?}]\n"));
    }
    let run = Run {
        args: args.iter().map(|a| a.to_string()).collect(),
        code: if killed { None } else { code },
        stdout: std::fs::read(out.path().join("stdout")).unwrap_or_default(),
        stderr,
    };
    if std::env::var_os("ORAS_TEST_ECHO").is_some() {
        eprintln!(
            "oras {}: exit {:?} after {:.1} s, peak RSS {peak} KiB ({})\n--- stdout ---\n{}\n--- stderr ---\n{}",
            args.join(" "),
            run.code,
            elapsed.as_secs_f64(),
            if peak_exact { "exact" } else { "sampled" },
            String::from_utf8_lossy(&run.stdout),
            run.stderr
        );
    }
    Measured { run, peak_rss_kib: peak, peak_exact, elapsed, killed }
}

/// `VmHWM` (peak resident set size, KiB) from a `/proc/<pid>/status` file; None once the process is gone.
fn vm_hwm_kib(status_file: &str) -> Option<u64> {
    let status = std::fs::read_to_string(status_file).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.trim_start_matches("VmHWM:").trim().trim_end_matches("kB").trim().parse().ok()
}
