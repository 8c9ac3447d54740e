//! Structured execution events: one JSON object per line (an events file), each also logged
//! through `tracing` (target `sandbox_harness::events`).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// An operation was sent to a sandbox.
    JobExecutionStarted,
    /// An operation finished (ok or with an error class).
    JobExecutionCompleted,
    /// A sandbox was created.
    SandboxCreated,
    /// A sandbox was destroyed.
    SandboxDestroyed,
    /// A state check (cwd and env after a command) held.
    StateChecked,
    /// A state check found cwd or env lost.
    StateLoss,
    /// A bench run started.
    BenchStarted,
    /// A bench run ended (`error_class` = "cancelled" when stopped early).
    BenchFinished,
}

/// One event line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// What happened.
    pub event: EventKind,
    /// Id of the operation (shared by its started/completed pair).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub execution_id: Option<String>,
    /// The sandbox (the session of the plan's vocabulary).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    /// The command text or operation description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    /// The protocol operation ("exec_stateful", "file_upload", "create", ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub op: Option<String>,
    /// The bench measurement the operation belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub measurement: Option<String>,
    /// Wall time of the operation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_seconds: Option<f64>,
    /// Exit status of a command.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// Error class when it failed (an `ErrorKind` name, or "wrong_result").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_class: Option<String>,
    /// When, ISO 8601.
    pub timestamp: DateTime<Utc>,
    /// The backend name.
    pub backend: String,
}

impl Event {
    /// An event of `kind` now, for `backend`, other fields empty.
    pub fn new(kind: EventKind, backend: impl Into<String>) -> Event {
        Event {
            event: kind,
            execution_id: None,
            session_id: None,
            command: None,
            op: None,
            measurement: None,
            duration_seconds: None,
            exit_code: None,
            error_class: None,
            timestamp: Utc::now(),
            backend: backend.into(),
        }
    }
}

/// Failure of the events file.
#[derive(Debug, thiserror::Error)]
pub enum EventsError {
    /// Opening or writing the file failed.
    #[error("events file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// Writes events as JSON lines and logs each through tracing.
pub struct EventWriter {
    path: Option<PathBuf>,
    inner: Mutex<WriterState>,
}

struct WriterState {
    file: Option<BufWriter<File>>,
    lines: u64,
    error: Option<std::io::Error>,
}

impl EventWriter {
    /// A writer to `path` (created or truncated).
    pub fn create(path: &Path) -> Result<EventWriter, EventsError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| EventsError::Io {
                path: path.to_path_buf(),
                source,
            })?;
        }
        let f = File::create(path).map_err(|source| EventsError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(EventWriter {
            path: Some(path.to_path_buf()),
            inner: Mutex::new(WriterState {
                file: Some(BufWriter::new(f)),
                lines: 0,
                error: None,
            }),
        })
    }

    /// A writer that only logs through tracing.
    pub fn tracing_only() -> EventWriter {
        EventWriter {
            path: None,
            inner: Mutex::new(WriterState {
                file: None,
                lines: 0,
                error: None,
            }),
        }
    }

    /// Records one event; a write failure is kept and reported by [`EventWriter::finish`].
    pub fn emit(&self, ev: &Event) {
        let line = match serde_json::to_string(ev) {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "cannot serialise an event");
                return;
            }
        };
        tracing::info!(target: "sandbox_harness::events", event = %line);
        let Ok(mut st) = self.inner.lock() else {
            return;
        };
        if st.error.is_some() {
            return;
        }
        if let Some(f) = st.file.as_mut() {
            let mut buf = line.into_bytes();
            buf.push(b'\n');
            if let Err(e) = f.write_all(&buf) {
                st.error = Some(e);
                return;
            }
            st.lines += 1;
        }
    }

    /// Flushes the file; returns the number of lines written, or the first write error.
    pub fn finish(&self) -> Result<u64, EventsError> {
        let mut st = self.inner.lock().map_err(|_| EventsError::Io {
            path: self.path.clone().unwrap_or_default(),
            source: std::io::Error::other("events writer lock poisoned"),
        })?;
        let err = |source| EventsError::Io {
            path: self.path.clone().unwrap_or_default(),
            source,
        };
        if let Some(e) = st.error.take() {
            return Err(err(e));
        }
        if let Some(f) = st.file.as_mut() {
            f.flush().map_err(err)?;
        }
        Ok(st.lines)
    }

    /// The file written to, if any.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }
}

/// Reads an events file; each malformed line is reported with its line number.
pub fn read_events(path: &Path) -> Result<Vec<Event>, ReadEventsError> {
    use std::io::BufRead;
    let f = File::open(path).map_err(|source| ReadEventsError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mut out = Vec::new();
    for (i, line) in std::io::BufReader::new(f).lines().enumerate() {
        let line = line.map_err(|source| ReadEventsError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        if line.trim().is_empty() {
            continue;
        }
        let ev = serde_json::from_str(&line).map_err(|e| ReadEventsError::Parse {
            path: path.to_path_buf(),
            line: i + 1,
            detail: e.to_string(),
        })?;
        out.push(ev);
    }
    Ok(out)
}

/// Failure reading an events file.
#[derive(Debug, thiserror::Error)]
pub enum ReadEventsError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A line is not a valid event.
    #[error("{path}:{line}: not an event: {detail}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// Why.
        detail: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip_through_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub/ev.jsonl");
        let w = EventWriter::create(&p).unwrap();
        let mut e = Event::new(EventKind::JobExecutionCompleted, "docker");
        e.duration_seconds = Some(0.25);
        e.error_class = Some("timeout".into());
        w.emit(&e);
        w.emit(&Event::new(EventKind::SandboxCreated, "docker"));
        assert_eq!(w.finish().unwrap(), 2);
        let back = read_events(&p).unwrap();
        assert_eq!(back.len(), 2);
        assert_eq!(back[0], e);
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(text.contains("\"event\":\"job_execution_completed\""));
        std::fs::write(&p, "{not json}\n").unwrap();
        assert!(matches!(
            read_events(&p),
            Err(ReadEventsError::Parse { line: 1, .. })
        ));
    }
}
