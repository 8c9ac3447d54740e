//! Typed requests and results of the Sandbox protocol.

use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::Stream;
use serde::{Deserialize, Serialize};

use super::error::SandboxError;

/// A stream of file bytes (uploads and downloads); errors end the stream.
pub type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes, SandboxError>> + Send>>;

/// The body of an upload: a byte stream and, when known, its exact length.
pub struct UploadBody {
    /// The bytes.
    pub stream: ByteStream,
    /// The exact length, when the caller knows it (lets a backend skip spooling).
    pub len: Option<u64>,
}

impl UploadBody {
    /// An upload body from bytes already in memory.
    pub fn from_bytes(data: impl Into<Bytes>) -> Self {
        let data: Bytes = data.into();
        let len = data.len() as u64;
        UploadBody {
            stream: Box::pin(futures::stream::once(async move { Ok(data) })),
            len: Some(len),
        }
    }
}

/// What a backend can do; conformance expectations are gated on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Capabilities {
    /// A browser with a CDP endpoint is available.
    pub browser: bool,
    /// A VNC endpoint is available.
    pub vnc: bool,
    /// write_to_process can reach the stdin of a running command.
    pub stdin: bool,
    /// Background processes can be started, listed and killed.
    pub background: bool,
    /// Sandboxes can be re-attached by id after the handle is dropped.
    pub reattach: bool,
}

impl Capabilities {
    /// Every capability, by name, with whether `self` offers it.
    pub fn named(&self) -> [(&'static str, bool); 5] {
        [
            ("browser", self.browser),
            ("vnc", self.vnc),
            ("stdin", self.stdin),
            ("background", self.background),
            ("reattach", self.reattach),
        ]
    }

    /// The names of the capabilities `wanted` asks for that `self` does not offer.
    pub fn missing(&self, wanted: &Capabilities) -> Vec<&'static str> {
        self.named()
            .into_iter()
            .zip(wanted.named())
            .filter(|((_, have), (_, want))| *want && !*have)
            .map(|((name, _), _)| name)
            .collect()
    }

    /// True when `self` offers everything `other` offers.
    pub fn contains(&self, other: &Capabilities) -> bool {
        self.missing(other).is_empty()
    }

    /// What both offer.
    pub fn intersection(&self, other: &Capabilities) -> Capabilities {
        Capabilities {
            browser: self.browser && other.browser,
            vnc: self.vnc && other.vnc,
            stdin: self.stdin && other.stdin,
            background: self.background && other.background,
            reattach: self.reattach && other.reattach,
        }
    }
}

/// The browser endpoints of a sandbox whose image provides one; every address is reachable
/// from the host that runs the harness.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrowserInfo {
    /// Chrome DevTools Protocol endpoint (HTTP: `/json/version`, `/json/list`...).
    pub cdp_url: String,
    /// VNC URL (`vnc://host:port`), when offered.
    pub vnc_url: Option<String>,
    /// The browser's product and version as its endpoint reports them (`Chrome/156.0...`).
    #[serde(default)]
    pub version: Option<String>,
    /// The browser-level DevTools WebSocket URL.
    #[serde(default)]
    pub websocket_url: Option<String>,
}

/// The result of `exec`: either finished within the wait, or still running.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum ExecOutcome {
    /// The command finished.
    Completed {
        /// Exit status.
        exit_code: i32,
        /// Combined stdout and stderr.
        output: Vec<u8>,
    },
    /// The command is still running; follow it with view_shell / wait_for_process.
    Running {
        /// PID of the running command inside the sandbox.
        pid: u32,
    },
}

/// A stateful command request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatefulExec {
    /// The shell command text.
    pub command: String,
    /// The shell session whose cwd and env apply and persist.
    pub session: String,
    /// Kill the command after this long (the session stays usable).
    pub timeout: Duration,
    /// Start in the background even without a trailing `&`.
    pub background: bool,
}

impl StatefulExec {
    /// A foreground command with the given timeout.
    pub fn new(session: impl Into<String>, command: impl Into<String>, timeout: Duration) -> Self {
        StatefulExec {
            command: command.into(),
            session: session.into(),
            timeout,
            background: false,
        }
    }
}

/// The result of a stateful command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShellResult {
    /// Exit status (0 for a started background process).
    pub exit_code: i32,
    /// The command's stdout.
    pub stdout: Vec<u8>,
    /// The command's stderr.
    pub stderr: Vec<u8>,
    /// True when stdout or stderr was cut at the output cap (an explicit marker ends the text).
    pub output_truncated: bool,
    /// The session's cwd after the command.
    pub cwd: String,
    /// Wall time of the call.
    pub duration: Duration,
    /// PID of the started background process, for background commands.
    pub background_pid: Option<u32>,
}

/// What the interactive shell of a session shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShellView {
    /// The command last started with `exec` in this session.
    pub command: String,
    /// Combined output so far.
    pub output: Vec<u8>,
    /// Still running?
    pub running: bool,
    /// Exit status once finished.
    pub exit_code: Option<i32>,
}

/// One background process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackgroundProcess {
    /// PID inside the sandbox.
    pub pid: u32,
    /// The session that started it.
    pub session: String,
    /// The command text.
    pub command: String,
    /// Still running?
    pub running: bool,
    /// When it was started.
    pub started_at: DateTime<Utc>,
}

/// Which background processes to kill.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProcessSelector {
    /// One process by PID.
    Pid(u32),
    /// Every process of a session.
    Session(String),
    /// Every process whose command contains this literal text.
    Pattern(String),
}

/// Options of `file_read`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReadOptions {
    /// First line to return, 0-based (default 0).
    pub start_line: Option<usize>,
    /// Line to stop before, 0-based and exclusive (default: end of file).
    pub end_line: Option<usize>,
    /// At most this many bytes are returned; more sets `truncated`.
    pub max_length: Option<usize>,
}

/// The result of `file_read`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileContent {
    /// The bytes of the selected lines (line endings kept).
    pub content: Vec<u8>,
    /// True when `max_length` cut the content.
    pub truncated: bool,
}

/// Options of `file_write`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WriteOptions {
    /// Append instead of replacing.
    pub append: bool,
    /// Write a newline before the content.
    pub leading_newline: bool,
    /// Write a newline after the content.
    pub trailing_newline: bool,
}

/// The kind of a directory entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileKind {
    /// Regular file.
    File,
    /// Directory.
    Dir,
    /// Symbolic link.
    Symlink,
    /// Anything else (fifo, socket, device).
    Other,
}

/// One entry of `file_list`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    /// Entry name (not the full path).
    pub name: String,
    /// Entry kind.
    pub kind: FileKind,
    /// Size in bytes.
    pub size: u64,
    /// Modification time.
    pub mtime: DateTime<Utc>,
}

/// One line matched by `file_search`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SearchMatch {
    /// 0-based line number.
    pub line: usize,
    /// The whole line, without its line ending.
    pub text: Vec<u8>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capability_requests() {
        let docker = Capabilities {
            browser: true,
            vnc: true,
            stdin: true,
            background: true,
            reattach: true,
        };
        let plain = Capabilities {
            browser: false,
            vnc: false,
            ..docker
        };
        let wants_browser = Capabilities {
            browser: true,
            ..Capabilities::default()
        };
        assert!(docker.contains(&wants_browser) && docker.contains(&plain));
        assert_eq!(plain.missing(&docker), vec!["browser", "vnc"]);
        assert!(plain.missing(&Capabilities::default()).is_empty());
        assert_eq!(docker.intersection(&wants_browser), wants_browser);
    }
}
