//! A `patina run` process for tests that need the real daemon: started in a folder holding
//! `patina.toml`, its stderr in a log file, the HTTP address read from the `serving /healthz`
//! log line (so policies can say `listen = "127.0.0.1:0"`), signals, and `/proc` figures.

// Shared by several integration test modules; not each of them uses every helper.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Daemon {
    pub child: Child,
    pub log: PathBuf,
}

impl Daemon {
    /// `patina run --shutdown-grace 5s` in `dir` with `PATINA_LOG=level` and the given extra
    /// environment.
    pub fn start(dir: &Path, level: &str, env: &[(&str, &str)]) -> Daemon {
        let log = dir.join(format!("daemon-{}.log", uuid::Uuid::new_v4().simple()));
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_patina"));
        cmd.args(["run", "--shutdown-grace", "5s"])
            .current_dir(dir)
            .env_remove("PATINA_CONFIG")
            .env_remove("PATINA_LOG_FORMAT")
            .env("PATINA_LOG", level)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        for (k, v) in env {
            cmd.env(k, v);
        }
        Daemon {
            child: cmd.spawn().unwrap(),
            log,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The address of the HTTP server, from the `serving /healthz` line (waits up to 30 s).
    pub fn addr(&mut self) -> SocketAddr {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let log = self.log();
            if let Some(line) = log.lines().find(|l| l.contains("serving /healthz")) {
                let at = line
                    .find("listen=")
                    .map(|i| i + "listen=".len())
                    .or_else(|| {
                        line.find("\"listen\":\"")
                            .map(|i| i + "\"listen\":\"".len())
                    })
                    .unwrap_or_else(|| panic!("no listen= in {line}"));
                let addr: String = line[at..]
                    .chars()
                    .take_while(|c| c.is_ascii_digit() || *c == '.' || *c == ':')
                    .collect();
                return addr.parse().unwrap_or_else(|e| panic!("{addr}: {e}"));
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("the daemon exited ({status}) before serving:\n{log}");
            }
            assert!(
                Instant::now() < deadline,
                "the daemon did not serve within 30 s:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {sig} {}", self.child.id());
    }

    /// The exit code, waiting at most `within` (panics with the log after that).
    pub fn wait_exit(&mut self, within: Duration) -> Option<i32> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("daemon did not exit within {within:?}:\n{}", self.log());
    }

    /// Resident memory in KiB (`VmRSS` of `/proc/PID/status`).
    pub fn rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).ok()?;
        status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    }

    /// Open file descriptors (entries of `/proc/PID/fd`).
    pub fn fds(&self) -> Option<usize> {
        Some(
            std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
                .ok()?
                .count(),
        )
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port free right now on 127.0.0.1 (bound and released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
