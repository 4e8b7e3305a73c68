//! A real headless Chromium for tests, driven over WebDriver.
//!
//! [`Browser::start`] spawns `chromedriver` on a free 127.0.0.1 port, waits
//! (with a deadline) until it answers, and opens a [`fantoccini`] session
//! on a headless Chromium with a fresh profile and the flags a machine
//! without network needs (no background fetches, no QUIC, no component
//! updates: without them Chromium hangs on connections it cannot make).
//! Dropping the [`Browser`] kills chromedriver and the browser it started;
//! [`Browser::close`] ends the session politely first.
//!
//! A missing `chromedriver` is an error, never a skip: the tests that use
//! this assert what a person would see, and CI installs the browser
//! (`.ci/run`, `install_chromium`).
//!
//! ```no_run
//! # async fn example() {
//! use idem_testkit::browser::{Browser, Locator};
//! let browser = Browser::start().await;
//! browser.client().goto("file:///tmp/report.html").await.unwrap();
//! let title = browser.client().find(Locator::Css("h1")).await.unwrap();
//! assert!(title.text().await.unwrap().contains("idem audit"));
//! browser.close().await;
//! # }
//! ```

pub use fantoccini::{self, Client, Locator};

use std::fmt;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Where chromedriver is looked for (`IDEM_TEST_CHROMEDRIVER` overrides).
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// Where Chromium is looked for (`IDEM_TEST_CHROMIUM` overrides).
pub const CHROMIUM: &str = "/usr/bin/chromium";
/// How to install both on Debian (what `.ci/run` does when they are missing).
pub const INSTALL: &str = "apt-get install -y chromium chromium-driver";

/// The command-line flags Chromium gets: headless, and quiet on a
/// machine whose network is closed.
pub const CHROME_ARGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1280,1024",
];

/// How long chromedriver may take to answer `/status`, and the browser
/// session to open.
const STARTUP_DEADLINE: Duration = Duration::from_secs(30);

/// Why a browser could not be started.
#[derive(Debug)]
pub enum BrowserError {
    /// The chromedriver or chromium binary is not there.
    Missing {
        /// Which program.
        program: &'static str,
        /// Where it was looked for.
        path: PathBuf,
    },
    /// chromedriver did not start or did not answer in time.
    Driver(String),
    /// chromedriver answered but could not open a browser session.
    Session(String),
}

impl fmt::Display for BrowserError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BrowserError::Missing { program, path } => write!(
                f,
                "{program} is not installed at {} (this test drives a real headless Chromium; \
                 install it with `{INSTALL}`, as .ci/run does, or point IDEM_TEST_CHROMEDRIVER \
                 and IDEM_TEST_CHROMIUM at the binaries)",
                path.display()
            ),
            BrowserError::Driver(why) => write!(f, "chromedriver did not start: {why}"),
            BrowserError::Session(why) => {
                write!(f, "chromedriver could not open a Chromium session: {why}")
            }
        }
    }
}

impl std::error::Error for BrowserError {}

/// A headless Chromium session and the chromedriver behind it, both
/// stopped when this is dropped.
pub struct Browser {
    client: Option<Client>,
    driver: Child,
    _profile: tempfile::TempDir,
}

impl fmt::Debug for Browser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Browser")
            .field("chromedriver_pid", &self.driver.id())
            .finish_non_exhaustive()
    }
}

impl Browser {
    /// Starts chromedriver and a headless Chromium session; panics with
    /// the reason (and how to install the browser) if it cannot.
    pub async fn start() -> Browser {
        match Browser::try_start().await {
            Ok(browser) => browser,
            Err(e) => panic!("{e}"),
        }
    }

    /// Starts chromedriver and a headless Chromium session.
    pub async fn try_start() -> Result<Browser, BrowserError> {
        let driver = binary("IDEM_TEST_CHROMEDRIVER", CHROMEDRIVER);
        let chrome = binary("IDEM_TEST_CHROMIUM", CHROMIUM);
        Browser::try_start_with(&driver, &chrome).await
    }

    /// Starts the given chromedriver with the given Chromium.
    pub async fn try_start_with(
        driver_path: &Path,
        chrome_path: &Path,
    ) -> Result<Browser, BrowserError> {
        let (driver_path, chrome_path) = (driver_path.to_path_buf(), chrome_path.to_path_buf());
        for (program, path) in [("chromedriver", &driver_path), ("chromium", &chrome_path)] {
            if !path.is_file() {
                return Err(BrowserError::Missing {
                    program,
                    path: path.clone(),
                });
            }
        }
        let profile = tempfile::Builder::new()
            .prefix("idem-chromium-")
            .tempdir()
            .map_err(|e| BrowserError::Driver(format!("cannot make a profile directory: {e}")))?;
        let port = free_port().map_err(|e| BrowserError::Driver(format!("no free port: {e}")))?;
        let log = profile.path().join("chromedriver.log");
        let mut command = Command::new(&driver_path);
        command
            .arg(format!("--port={port}"))
            .arg(format!("--log-path={}", log.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // Its own process group, so that dropping the Browser can end
        // chromedriver and every browser process it started, by that id.
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        let driver = command.spawn().map_err(|e| {
            BrowserError::Driver(format!("cannot run {}: {e}", driver_path.display()))
        })?;
        let mut browser = Browser {
            client: None,
            driver,
            _profile: profile,
        };
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        if let Err(why) = wait_until_ready(addr, &mut browser.driver).await {
            return Err(BrowserError::Driver(format!("{why}{}", log_tail(&log))));
        }
        let mut args: Vec<String> = CHROME_ARGS.iter().map(|a| (*a).to_owned()).collect();
        args.push(format!(
            "--user-data-dir={}",
            browser._profile.path().join("profile").display()
        ));
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".to_owned(),
            serde_json::json!({ "binary": chrome_path, "args": args }),
        );
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let webdriver = format!("http://{addr}");
        let mut builder = fantoccini::ClientBuilder::new(connector);
        builder.capabilities(capabilities);
        let client = match tokio::time::timeout(STARTUP_DEADLINE, builder.connect(&webdriver)).await
        {
            Ok(Ok(client)) => client,
            Ok(Err(e)) => {
                return Err(BrowserError::Session(format!("{e}{}", log_tail(&log))));
            }
            Err(_) => {
                return Err(BrowserError::Session(format!(
                    "no session within {STARTUP_DEADLINE:?}{}",
                    log_tail(&log)
                )))
            }
        };
        browser.client = Some(client);
        Ok(browser)
    }

    /// The WebDriver client: navigate, find elements, click, run scripts.
    pub fn client(&self) -> &Client {
        self.client
            .as_ref()
            .unwrap_or_else(|| unreachable!("a started Browser has a session"))
    }

    /// Ends the session (Chromium quits), then stops chromedriver.
    pub async fn close(mut self) {
        if let Some(client) = self.client.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), client.close()).await;
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // The whole group: chromedriver and the Chromium it started.
        let group = format!("-{}", self.driver.id());
        let _ = Command::new("kill")
            .args(["-KILL", "--", &group])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

fn binary(var: &str, default: &str) -> PathBuf {
    std::env::var_os(var)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(default))
}

fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Polls chromedriver's `/status` until it says it is ready, the process
/// exits, or the deadline passes.
async fn wait_until_ready(addr: SocketAddr, driver: &mut Child) -> Result<(), String> {
    let deadline = tokio::time::Instant::now() + STARTUP_DEADLINE;
    loop {
        if let Ok(Some(status)) = driver.try_wait() {
            return Err(format!("it exited with {status} before answering"));
        }
        if status_ready(addr).await {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(format!(
                "no ready answer on http://{addr}/status within {STARTUP_DEADLINE:?}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One `GET /status`: whether chromedriver answered `"ready": true`.
async fn status_ready(addr: SocketAddr) -> bool {
    let attempt = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
        stream
            .write_all(b"GET /status HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n\r\n")
            .await
            .ok()?;
        // chromedriver keeps the connection open whatever the request
        // says: read the head, then Content-Length bytes of body.
        let mut answer = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let n = stream.read(&mut chunk).await.ok()?;
            if n == 0 {
                break;
            }
            answer.extend_from_slice(&chunk[..n]);
            let text = String::from_utf8_lossy(&answer);
            if let Some(head_end) = text.find("\r\n\r\n") {
                let length = text[..head_end]
                    .lines()
                    .find_map(|l| {
                        let (name, value) = l.split_once(':')?;
                        name.eq_ignore_ascii_case("content-length")
                            .then(|| value.trim().parse::<usize>().ok())?
                    })
                    .unwrap_or(0);
                if answer.len() >= head_end + 4 + length {
                    break;
                }
            }
        }
        let text = String::from_utf8_lossy(&answer);
        let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
        Some(text.starts_with("HTTP/1.1 200") && compact.contains("\"ready\":true"))
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(2), attempt).await,
        Ok(Some(true))
    )
}

/// The end of chromedriver's log, for an error message.
fn log_tail(log: &Path) -> String {
    match std::fs::read_to_string(log) {
        Ok(text) if !text.trim().is_empty() => {
            let lines: Vec<&str> = text.lines().collect();
            let tail = lines[lines.len().saturating_sub(15)..].join("\n");
            format!(
                "\nchromedriver log ({}), last lines:\n{tail}",
                log.display()
            )
        }
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_missing_chromedriver_is_an_error_that_says_how_to_install_it() {
        let err =
            Browser::try_start_with(Path::new("/nonexistent/chromedriver"), Path::new(CHROMIUM))
                .await
                .unwrap_err();
        let message = err.to_string();
        assert!(
            message.starts_with("chromedriver is not installed at /nonexistent/chromedriver"),
            "{message}"
        );
        assert!(message.contains(INSTALL), "{message}");
    }
}
