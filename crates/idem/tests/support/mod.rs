//! The real `idem` binary as the tests of this crate run it: a process
//! (`idem gateway`, `idem chaos`, …) started with its flags, its address
//! read from its first line (`listening on ADDR`), killed when dropped.
#![allow(dead_code)] // each test binary uses its own part

use std::ffi::{OsStr, OsString};
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// A running `idem` process, killed when dropped.
pub(crate) struct Idem {
    pub child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its stdout, after the `listening on` line.
    pub stdout: BufReader<ChildStdout>,
}

impl Idem {
    /// Starts `idem ARGS…` with `IDEM_LOG=log` and waits for its
    /// `listening on ADDR` line.
    pub(crate) fn start<S: AsRef<OsStr>>(args: impl IntoIterator<Item = S>, log: &str) -> Idem {
        Idem::start_with_env(args, log, &[])
    }

    /// [`Idem::start`] with extra environment variables (secrets, keys).
    pub(crate) fn start_with_env<S: AsRef<OsStr>>(
        args: impl IntoIterator<Item = S>,
        log: &str,
        env: &[(&str, &str)],
    ) -> Idem {
        let args: Vec<OsString> = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
        let mut child = Command::new(env!("CARGO_BIN_EXE_idem"))
            .args(&args)
            .envs(env.iter().copied())
            .env("IDEM_LOG", log)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the idem binary starts");
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        let Some(addr) = line.trim().strip_prefix("listening on ") else {
            let _ = child.kill();
            let status = child.wait();
            panic!("idem {args:?} did not start ({status:?}); first line: {line:?}");
        };
        Idem {
            addr: addr.parse().unwrap(),
            child,
            stdout,
        }
    }

    /// Starts `idem gateway` in front of `upstream` on `store`, with the
    /// configuration file `config`, and waits for its `listening on` line.
    pub(crate) fn gateway(upstream: SocketAddr, store: &str, config: &Path) -> Idem {
        Idem::gateway_with_env(upstream, store, config, &[])
    }

    /// [`Idem::gateway`] with extra environment variables.
    pub(crate) fn gateway_with_env(
        upstream: SocketAddr,
        store: &str,
        config: &Path,
        env: &[(&str, &str)],
    ) -> Idem {
        let upstream = format!("http://{upstream}");
        let mut args = [
            "gateway",
            "--listen",
            "127.0.0.1:0",
            "--upstream",
            &upstream,
            "--store",
            store,
            "--config",
        ]
        .map(OsStr::new)
        .to_vec();
        args.push(config.as_os_str());
        // Quiet: outages make gateways log an error per request. Set
        // IDEM_TEST_GATEWAY_LOG (e.g. to `warn`) to see their logs.
        let log = std::env::var("IDEM_TEST_GATEWAY_LOG").unwrap_or_else(|_| "off".to_owned());
        Idem::start_with_env(args, &log, env)
    }

    /// Sends it the signal `name` (`INT`, `TERM`, …).
    pub(crate) fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits (with a deadline) for the process to exit; returns its status
    /// and the rest of its stdout.
    pub(crate) fn wait(mut self) -> (ExitStatus, String) {
        let deadline = Instant::now() + Duration::from_secs(20);
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("idem did not exit after the signal");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut rest = String::new();
        self.stdout.read_to_string(&mut rest).unwrap();
        (status, rest)
    }
}

impl Drop for Idem {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
