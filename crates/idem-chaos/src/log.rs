//! `--log FILE`: one JSON line per injected fault.

use crate::fault::Fault;
use serde::Serialize;
use std::fs::File;
use std::io::{self, LineWriter, Write};
use std::path::Path;
use std::sync::Mutex;
use std::time::SystemTime;

/// One injected fault, as a line of the log.
#[derive(Debug, Serialize)]
pub(crate) struct Entry {
    /// When the fault's effect completed (RFC 3339).
    pub time: String,
    /// The request's number, counting every request from 1 in arrival
    /// order.
    pub request_id: u64,
    pub method: String,
    pub path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    pub fault: Fault,
    /// The status of the (first) upstream answer; `null` when the request
    /// was not forwarded or the upstream failed.
    pub upstream_status: Option<u16>,
    /// For `duplicate`: the status of the second delivery.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duplicate_status: Option<u16>,
    /// For `delay`: how long the request was held.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delay_ms: Option<u64>,
    /// The upstream error, when forwarding failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Entry {
    pub(crate) fn now() -> String {
        humantime::format_rfc3339_millis(SystemTime::now()).to_string()
    }
}

/// The log file, written a whole line at a time.
pub(crate) struct FaultLog {
    file: Mutex<LineWriter<File>>,
}

impl FaultLog {
    /// Creates (or truncates) `path`.
    pub(crate) fn create(path: &Path) -> io::Result<FaultLog> {
        Ok(FaultLog {
            file: Mutex::new(LineWriter::new(File::create(path)?)),
        })
    }

    pub(crate) fn write(&self, entry: &Entry) {
        let mut line = serde_json::to_vec(entry).expect("an entry is plain data");
        line.push(b'\n');
        let mut file = self.file.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(e) = file.write_all(&line) {
            tracing::warn!(error = %e, "cannot write the fault log");
        }
    }
}
