//! Plain-text scenario files (`suites/scenarios/*.scn`): the step table and types here, the
//! parser (with line-numbered errors) in [`parse`], the step executor in [`exec`]. The format
//! is documented in `suites/scenarios/README.md`.

use std::collections::BTreeMap;
use std::fmt;

use crate::protocol::ErrorKind;

use super::terms::{Capability, CaseLevel};

mod exec;
mod parse;

pub use exec::run_scenario;
pub use parse::{parse, parse_dir};

/// The kind of a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepKind {
    /// `run SESSION`: stateful command.
    Run,
    /// `bg SESSION`: stateful command started in the background.
    Bg,
    /// `bg-list`: background processes of the case's sessions.
    BgList,
    /// `bg-kill NAME` / `session=` / `pattern=`.
    BgKill,
    /// `bg-logs NAME`.
    BgLogs,
    /// `exec SESSION`: interactive command.
    Exec,
    /// `view SESSION`.
    View,
    /// `wait SESSION SECS`.
    Wait,
    /// `write-stdin SESSION`.
    WriteStdin,
    /// `kill SESSION`.
    Kill,
    /// `write PATH`.
    Write,
    /// `upload PATH`: the content streamed with `file_upload` (the Cloud Run backend sends
    /// workspace uploads straight to the Storage API).
    Upload,
    /// `read PATH`.
    Read,
    /// `exists PATH`.
    Exists,
    /// `delete PATH`.
    Delete,
    /// `list PATH`.
    List,
    /// `find DIR GLOB`.
    Find,
    /// `search PATH REGEX`.
    Search,
    /// `replace PATH OLD NEW`.
    Replace,
    /// `sleep SECS`.
    Sleep,
}

/// What follows a directive line before `----`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BodyKind {
    None,
    /// Raw command text (no escapes), lines joined by `\n`.
    Command,
    /// Escaped content, each line followed by `\n` unless it ends with `\c`.
    Content,
}

struct Spec {
    name: &'static str,
    kind: StepKind,
    args: (usize, usize),
    body: BodyKind,
    opts: &'static [&'static str],
    flags: &'static [&'static str],
    expected: bool,
}

const FILE_OPTS: &[&str] = &["session"];

const SPECS: &[Spec] = &[
    Spec {
        name: "run",
        kind: StepKind::Run,
        args: (1, 1),
        body: BodyKind::Command,
        opts: &["exit", "cwd", "stderr", "stderr~", "stdout~", "timeout"],
        flags: &["truncated"],
        expected: true,
    },
    Spec {
        name: "bg",
        kind: StepKind::Bg,
        args: (1, 1),
        body: BodyKind::Command,
        opts: &["as"],
        flags: &[],
        expected: false,
    },
    Spec {
        name: "bg-list",
        kind: StepKind::BgList,
        args: (0, 0),
        body: BodyKind::None,
        opts: &["session", "wait"],
        flags: &[],
        expected: true,
    },
    Spec {
        name: "bg-kill",
        kind: StepKind::BgKill,
        args: (0, 1),
        body: BodyKind::None,
        opts: &["session", "pattern"],
        flags: &[],
        expected: true,
    },
    Spec {
        name: "bg-logs",
        kind: StepKind::BgLogs,
        args: (1, 1),
        body: BodyKind::None,
        opts: &["wait", "contains"],
        flags: &[],
        expected: true,
    },
    Spec {
        name: "exec",
        kind: StepKind::Exec,
        args: (1, 1),
        body: BodyKind::Command,
        opts: &["dir", "exit", "contains"],
        flags: &["running"],
        expected: true,
    },
    Spec {
        name: "view",
        kind: StepKind::View,
        args: (1, 1),
        body: BodyKind::None,
        opts: &["running", "exit", "contains", "wait"],
        flags: &[],
        expected: true,
    },
    Spec {
        name: "wait",
        kind: StepKind::Wait,
        args: (2, 2),
        body: BodyKind::None,
        opts: &["exit"],
        flags: &[],
        expected: false,
    },
    Spec {
        name: "write-stdin",
        kind: StepKind::WriteStdin,
        args: (1, 1),
        body: BodyKind::Content,
        opts: &[],
        flags: &["enter"],
        expected: false,
    },
    Spec {
        name: "kill",
        kind: StepKind::Kill,
        args: (1, 1),
        body: BodyKind::None,
        opts: &[],
        flags: &[],
        expected: false,
    },
    Spec {
        name: "write",
        kind: StepKind::Write,
        args: (1, 1),
        body: BodyKind::Content,
        opts: FILE_OPTS,
        flags: &["append", "leading-newline", "trailing-newline"],
        expected: false,
    },
    Spec {
        name: "upload",
        kind: StepKind::Upload,
        args: (1, 1),
        body: BodyKind::Content,
        opts: &["session"],
        flags: &[],
        expected: false,
    },
    Spec {
        name: "read",
        kind: StepKind::Read,
        args: (1, 1),
        body: BodyKind::None,
        opts: &["session", "start", "end", "max", "truncated"],
        flags: &[],
        expected: true,
    },
    Spec {
        name: "exists",
        kind: StepKind::Exists,
        args: (1, 1),
        body: BodyKind::None,
        opts: FILE_OPTS,
        flags: &[],
        expected: true,
    },
    Spec {
        name: "delete",
        kind: StepKind::Delete,
        args: (1, 1),
        body: BodyKind::None,
        opts: FILE_OPTS,
        flags: &[],
        expected: false,
    },
    Spec {
        name: "list",
        kind: StepKind::List,
        args: (1, 1),
        body: BodyKind::None,
        opts: FILE_OPTS,
        flags: &[],
        expected: true,
    },
    Spec {
        name: "find",
        kind: StepKind::Find,
        args: (2, 2),
        body: BodyKind::None,
        opts: FILE_OPTS,
        flags: &[],
        expected: true,
    },
    Spec {
        name: "search",
        kind: StepKind::Search,
        args: (2, 2),
        body: BodyKind::None,
        opts: FILE_OPTS,
        flags: &[],
        expected: true,
    },
    Spec {
        name: "replace",
        kind: StepKind::Replace,
        args: (3, 3),
        body: BodyKind::None,
        opts: FILE_OPTS,
        flags: &[],
        expected: true,
    },
    Spec {
        name: "sleep",
        kind: StepKind::Sleep,
        args: (1, 1),
        body: BodyKind::None,
        opts: &[],
        flags: &[],
        expected: false,
    },
];

/// One parsed step.
#[derive(Debug, Clone)]
pub struct Step {
    /// 1-based line of the directive.
    pub line: usize,
    /// The directive line as written.
    pub text: String,
    /// What the step does.
    pub kind: StepKind,
    /// Positional arguments (escapes decoded).
    pub args: Vec<Vec<u8>>,
    /// `key=value` options (escapes decoded).
    pub opts: BTreeMap<String, Vec<u8>>,
    /// Bare flags.
    pub flags: Vec<String>,
    /// Command text or content bytes.
    pub body: Option<Vec<u8>>,
    /// The expected primary result (the block after `----`).
    pub expected: Option<Vec<u8>>,
    /// The step must fail with this error class.
    pub expect_error: Option<ErrorKind>,
}

/// One scenario: a case defined in a `.scn` file.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// `area.name`.
    pub id: String,
    /// Core or Extended.
    pub level: CaseLevel,
    /// Required capabilities.
    pub requires: Vec<Capability>,
    /// Declared platform differences (`expected-divergence BACKEND | RULE | SOURCE`).
    pub divergences: Vec<super::terms::Divergence>,
    /// The file it came from (as given to the parser).
    pub file: String,
    /// The line of its `case` header.
    pub line: usize,
    /// Its steps, in order.
    pub steps: Vec<Step>,
}

/// A scenario file that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}: {message}")]
pub struct ParseError {
    /// The file.
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for StepKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = SPECS
            .iter()
            .find(|s| s.kind == *self)
            .map_or("?", |s| s.name);
        f.write_str(name)
    }
}
