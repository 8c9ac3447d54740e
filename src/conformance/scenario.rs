//! Plain-text scenario files (`suites/scenarios/*.scn`): the parser (with line-numbered errors)
//! and the step executor. The format is documented in `suites/scenarios/README.md`.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::protocol::{
    ErrorKind, ExecOutcome, FileKind, ProcessSelector, ReadOptions, SandboxError, StatefulExec,
    WriteOptions,
};

use super::case::{Capability, CaseCtx, CaseFailure, CaseResult, Level, validate_id};
use super::text::{describe_mismatch, escape_bytes, unescape};

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
    pub level: Level,
    /// Required capabilities.
    pub requires: Vec<Capability>,
    /// Declared platform differences (`expected-divergence BACKEND | RULE | SOURCE`).
    pub divergences: Vec<super::case::Divergence>,
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

/// Parses the scenarios of one file; `file` names it in errors and reports.
pub fn parse(file: &str, text: &str) -> Result<Vec<Scenario>, ParseError> {
    let err = |line: usize, message: String| ParseError {
        file: file.to_string(),
        line,
        message,
    };
    let lines: Vec<&str> = text.lines().collect();
    let mut out: Vec<Scenario> = Vec::new();
    let mut pending_error: Option<(usize, ErrorKind)> = None;
    let mut i = 0;
    while i < lines.len() {
        let lineno = i + 1;
        let line = lines[i].trim_end();
        i += 1;
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        let (word, rest) = match line.split_once(char::is_whitespace) {
            Some((w, r)) => (w, r.trim()),
            None => (line, ""),
        };
        match word {
            "case" => {
                if let Some((l, _)) = pending_error {
                    return Err(err(l, "`expect-error` is not followed by a step".into()));
                }
                validate_id(rest).map_err(|m| err(lineno, m))?;
                if out.iter().any(|s| s.id == rest) {
                    return Err(err(lineno, format!("case {rest:?} is defined twice")));
                }
                out.push(Scenario {
                    id: rest.to_string(),
                    level: Level::Core,
                    requires: Vec::new(),
                    divergences: Vec::new(),
                    file: file.to_string(),
                    line: lineno,
                    steps: Vec::new(),
                });
                continue;
            }
            _ if out.is_empty() => {
                return Err(err(
                    lineno,
                    format!("expected `case AREA.NAME`, found {word:?}"),
                ));
            }
            "expected-divergence" => {
                let sc = out.last_mut().expect("checked above");
                if !sc.steps.is_empty() {
                    return Err(err(
                        lineno,
                        "`expected-divergence` must come before the first step".into(),
                    ));
                }
                let d = super::case::Divergence::parse(rest).map_err(|m| err(lineno, m))?;
                if sc.divergences.iter().any(|x| x.backend == d.backend) {
                    return Err(err(
                        lineno,
                        format!("two `expected-divergence` lines for {}", d.backend),
                    ));
                }
                sc.divergences.push(d);
                continue;
            }
            "level" | "requires" => {
                let sc = out.last_mut().expect("checked above");
                if !sc.steps.is_empty() {
                    return Err(err(
                        lineno,
                        format!("`{word}` must come before the first step"),
                    ));
                }
                if word == "level" {
                    sc.level = match rest {
                        "core" => Level::Core,
                        "extended" => Level::Extended,
                        other => {
                            return Err(err(
                                lineno,
                                format!("unknown level {other:?} (core or extended)"),
                            ));
                        }
                    };
                } else {
                    for name in rest
                        .split(|c: char| c == ',' || c.is_whitespace())
                        .filter(|s| !s.is_empty())
                    {
                        let cap = Capability::parse(name).ok_or_else(|| {
                            err(
                                lineno,
                                format!(
                                    "unknown capability {name:?} (one of {})",
                                    Capability::ALL.map(Capability::as_str).join(", ")
                                ),
                            )
                        })?;
                        sc.requires.push(cap);
                    }
                }
                continue;
            }
            "expect-error" => {
                if pending_error.is_some() {
                    return Err(err(lineno, "two `expect-error` lines in a row".into()));
                }
                let kind = parse_error_kind(rest).ok_or_else(|| {
                    err(
                        lineno,
                        format!(
                            "unknown error class {rest:?} (one of {})",
                            ErrorKind::ALL.map(ErrorKind::as_str).join(", ")
                        ),
                    )
                })?;
                pending_error = Some((lineno, kind));
                continue;
            }
            _ => {}
        }
        let spec = SPECS.iter().find(|s| s.name == word).ok_or_else(|| {
            err(
                lineno,
                format!(
                    "unknown step {word:?} (one of {})",
                    SPECS.iter().map(|s| s.name).collect::<Vec<_>>().join(", ")
                ),
            )
        })?;
        let tokens = tokenize(rest).map_err(|m| err(lineno, m))?;
        let mut args = Vec::new();
        let mut opts = BTreeMap::new();
        let mut flags = Vec::new();
        for (tok, quoted) in tokens {
            if !quoted {
                if let Some((k, v)) = tok.split_once('=')
                    && spec.opts.contains(&k)
                {
                    let v = unescape(v).map_err(|m| err(lineno, format!("option {k}: {m}")))?;
                    if opts.insert(k.to_string(), v.bytes).is_some() {
                        return Err(err(lineno, format!("option {k} given twice")));
                    }
                    continue;
                }
                if spec.flags.contains(&tok.as_str()) {
                    flags.push(tok);
                    continue;
                }
            }
            let v = unescape(&tok).map_err(|m| err(lineno, format!("argument {tok:?}: {m}")))?;
            args.push(v.bytes);
        }
        if args.len() < spec.args.0 || args.len() > spec.args.1 {
            return Err(err(
                lineno,
                format!(
                    "`{}` takes {} argument(s), found {} (options: {}; flags: {})",
                    spec.name,
                    if spec.args.0 == spec.args.1 {
                        spec.args.0.to_string()
                    } else {
                        format!("{}-{}", spec.args.0, spec.args.1)
                    },
                    args.len(),
                    spec.opts.join(" "),
                    spec.flags.join(" ")
                ),
            ));
        }
        // Body lines run to `----` or a blank line.
        let mut body_lines: Vec<(usize, &str)> = Vec::new();
        let mut has_expected = false;
        while i < lines.len() {
            let l = lines[i];
            if l.trim_end() == "----" {
                has_expected = true;
                i += 1;
                break;
            }
            if l.trim().is_empty() {
                break;
            }
            body_lines.push((i + 1, l));
            i += 1;
        }
        let body = match spec.body {
            BodyKind::None if !body_lines.is_empty() => {
                return Err(err(
                    body_lines[0].0,
                    format!(
                        "`{}` takes no body; put `----` before the expected result",
                        spec.name
                    ),
                ));
            }
            BodyKind::None => None,
            BodyKind::Command if body_lines.is_empty() => {
                return Err(err(
                    lineno,
                    format!("`{}` needs the command on the following line(s)", spec.name),
                ));
            }
            BodyKind::Command => Some(
                body_lines
                    .iter()
                    .map(|(_, l)| if *l == "." { "" } else { *l })
                    .collect::<Vec<_>>()
                    .join("\n")
                    .into_bytes(),
            ),
            BodyKind::Content => Some(decode_block(&body_lines).map_err(|(l, m)| err(l, m))?),
        };
        let mut expected = None;
        if has_expected {
            if !spec.expected {
                return Err(err(
                    lineno,
                    format!(
                        "`{}` has no result to compare; remove the `----` block",
                        spec.name
                    ),
                ));
            }
            let mut exp_lines = Vec::new();
            while i < lines.len() && !lines[i].trim().is_empty() {
                exp_lines.push((i + 1, lines[i]));
                i += 1;
            }
            expected = Some(decode_block(&exp_lines).map_err(|(l, m)| err(l, m))?);
        }
        let expect_error = pending_error.take().map(|(_, k)| k);
        out.last_mut().expect("checked above").steps.push(Step {
            line: lineno,
            text: line.to_string(),
            kind: spec.kind,
            args,
            opts,
            flags,
            body,
            expected,
            expect_error,
        });
    }
    if let Some((l, _)) = pending_error {
        return Err(err(l, "`expect-error` is not followed by a step".into()));
    }
    for sc in &out {
        if sc.steps.is_empty() {
            return Err(err(sc.line, format!("case {} has no steps", sc.id)));
        }
    }
    Ok(out)
}

/// Parses every `*.scn` file of a directory (sorted by name).
pub fn parse_dir(dir: &Path) -> Result<Vec<Scenario>, ParseError> {
    let io_err = |m: String| ParseError {
        file: dir.display().to_string(),
        line: 0,
        message: m,
    };
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| io_err(format!("cannot read the directory: {e}")))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "scn"))
        .collect();
    files.sort();
    let mut out = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).map_err(|e| ParseError {
            file: f.display().to_string(),
            line: 0,
            message: format!("cannot read: {e}"),
        })?;
        out.extend(parse(&f.display().to_string(), &text)?);
    }
    Ok(out)
}

fn parse_error_kind(s: &str) -> Option<ErrorKind> {
    ErrorKind::ALL.into_iter().find(|k| k.as_str() == s)
}

/// Splits a directive's arguments on whitespace; `'...'` and `"..."` group (no escapes inside
/// the quotes themselves; escapes are decoded afterwards). Returns (token, was_quoted).
fn tokenize(s: &str) -> Result<Vec<(String, bool)>, String> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
            continue;
        }
        let mut tok = String::new();
        let mut quoted = false;
        while let Some(&c) = chars.peek() {
            if c.is_whitespace() {
                break;
            }
            chars.next();
            if c == '\'' || c == '"' {
                quoted = true;
                loop {
                    match chars.next() {
                        Some(q) if q == c => break,
                        Some(x) => tok.push(x),
                        None => return Err(format!("unterminated {c} quote")),
                    }
                }
            } else {
                tok.push(c);
            }
        }
        out.push((tok, quoted));
    }
    Ok(out)
}

fn decode_block(lines: &[(usize, &str)]) -> Result<Vec<u8>, (usize, String)> {
    let mut out = Vec::new();
    for (n, l) in lines {
        if *l == "." {
            out.push(b'\n');
            continue;
        }
        let d = unescape(l).map_err(|m| (*n, m))?;
        out.extend_from_slice(&d.bytes);
        if !d.no_newline {
            out.push(b'\n');
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Execution

const DEFAULT_SESSION: &str = "s";
const DEFAULT_RUN_TIMEOUT: Duration = Duration::from_secs(60);

struct Exec<'a> {
    ctx: &'a CaseCtx,
    sc: &'a Scenario,
    names: HashMap<String, u32>,
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

/// Runs a scenario's steps in order against the case's sandbox; the first failing step ends it.
pub async fn run_scenario(sc: &Scenario, ctx: &CaseCtx) -> CaseResult {
    let mut ex = Exec {
        ctx,
        sc,
        names: HashMap::new(),
    };
    for step in &sc.steps {
        ex.step(step).await?;
    }
    Ok(())
}

/// What one step produced, for the error-class check.
type StepOut = Result<(), SandboxError>;

impl Exec<'_> {
    fn at(&self, step: &Step) -> String {
        format!("{}:{}: {}", self.sc.file, step.line, self.subst(&step.text))
    }

    fn subst(&self, s: &str) -> String {
        s.replace("${CASE}", &self.ctx.case_dir)
    }

    fn subst_bytes(&self, b: &[u8]) -> Vec<u8> {
        let needle = b"${CASE}";
        let mut out = Vec::with_capacity(b.len());
        let mut i = 0;
        while i < b.len() {
            if b[i..].starts_with(needle) {
                out.extend_from_slice(self.ctx.case_dir.as_bytes());
                i += needle.len();
            } else {
                out.push(b[i]);
                i += 1;
            }
        }
        out
    }

    fn text(&self, step: &Step, b: &[u8], what: &str) -> Result<String, CaseFailure> {
        String::from_utf8(self.subst_bytes(b))
            .map_err(|_| CaseFailure::at(self.at(step), format!("{what} is not valid UTF-8")))
    }

    fn arg(&self, step: &Step, i: usize) -> Result<String, CaseFailure> {
        self.text(step, &step.args[i], &format!("argument {}", i + 1))
    }

    fn opt(&self, step: &Step, key: &str) -> Result<Option<String>, CaseFailure> {
        step.opts
            .get(key)
            .map(|v| self.text(step, v, &format!("option {key}")))
            .transpose()
    }

    fn opt_num<T: std::str::FromStr>(
        &self,
        step: &Step,
        key: &str,
    ) -> Result<Option<T>, CaseFailure> {
        match self.opt(step, key)? {
            None => Ok(None),
            Some(v) => v.parse().map(Some).map_err(|_| {
                CaseFailure::at(self.at(step), format!("option {key}={v:?} is not a number"))
            }),
        }
    }

    fn session(&self, step: &Step) -> Result<String, CaseFailure> {
        Ok(self.ctx.session(&match self.opt(step, "session")? {
            Some(s) => s,
            None => DEFAULT_SESSION.to_string(),
        }))
    }

    fn expected(&self, step: &Step) -> Option<Vec<u8>> {
        step.expected.as_ref().map(|e| self.subst_bytes(e))
    }

    fn compare(&self, step: &Step, what: &str, expected: &[u8], actual: &[u8]) -> CaseResult {
        if expected == actual {
            Ok(())
        } else {
            Err(CaseFailure::at(
                self.at(step),
                format!("{what} differs\n  {}", describe_mismatch(expected, actual)),
            ))
        }
    }

    fn check_expected(&self, step: &Step, what: &str, actual: &[u8]) -> CaseResult {
        match self.expected(step) {
            Some(e) => self.compare(step, what, &e, actual),
            None => Ok(()),
        }
    }

    fn check_contains(&self, step: &Step, key: &str, what: &str, actual: &[u8]) -> CaseResult {
        if let Some(needle) = step.opts.get(key) {
            let needle = self.subst_bytes(needle);
            if !contains(actual, &needle) {
                return Err(CaseFailure::at(
                    self.at(step),
                    format!(
                        "{what} does not contain \"{}\"\n  actual: \"{}\"",
                        escape_bytes(&needle),
                        escape_bytes(actual)
                    ),
                ));
            }
        }
        Ok(())
    }

    fn check_exit(&self, step: &Step, actual: i32, default: Option<i32>) -> CaseResult {
        let want = match self.opt(step, "exit")? {
            Some(v) if v == "any" => None,
            Some(v) => Some(v.parse::<i32>().map_err(|_| {
                CaseFailure::at(
                    self.at(step),
                    format!("exit={v:?} is not a number or `any`"),
                )
            })?),
            None => default,
        };
        match want {
            Some(w) if w != actual => Err(CaseFailure::at(
                self.at(step),
                format!("exit code differs\n  expected: {w}\n    actual: {actual}"),
            )),
            _ => Ok(()),
        }
    }

    async fn step(&mut self, step: &Step) -> CaseResult {
        let result = self.step_inner(step).await?;
        match (result, step.expect_error) {
            (Ok(()), None) => Ok(()),
            (Err(e), None) => Err(CaseFailure::sandbox(self.at(step), e)),
            (Err(e), Some(want)) if e.kind() == want => Ok(()),
            (Err(e), Some(want)) => {
                let mut f = CaseFailure::at(
                    self.at(step),
                    format!(
                        "error class differs\n  expected: {want}\n    actual: {} ({e})",
                        e.kind()
                    ),
                );
                if e.kind() == ErrorKind::Unsupported {
                    f.error = Some(Box::new(e));
                }
                Err(f)
            }
            (Ok(()), Some(want)) => Err(CaseFailure::at(
                self.at(step),
                format!("expected an error of class {want}, but the step succeeded"),
            )),
        }
    }

    /// Outer `Err`: the step's checks failed; inner `Err`: the sandbox call failed.
    async fn step_inner(&mut self, step: &Step) -> Result<StepOut, CaseFailure> {
        let sb = self.ctx.sandbox.clone();
        macro_rules! call {
            ($e:expr) => {
                match $e {
                    Ok(v) => v,
                    Err(e) => return Ok(Err(e)),
                }
            };
        }
        match step.kind {
            StepKind::Run => {
                let session = self.ctx.session(&self.arg(step, 0)?);
                let command =
                    self.text(step, step.body.as_deref().unwrap_or_default(), "command")?;
                let timeout = self
                    .opt_num::<f64>(step, "timeout")?
                    .map(Duration::from_secs_f64)
                    .unwrap_or(DEFAULT_RUN_TIMEOUT);
                let r = call!(
                    sb.exec_stateful(StatefulExec::new(session, command, timeout))
                        .await
                );
                self.check_expected(step, "stdout", &r.stdout)?;
                self.check_contains(step, "stdout~", "stdout", &r.stdout)?;
                if let Some(e) = step.opts.get("stderr") {
                    self.compare(step, "stderr", &self.subst_bytes(e), &r.stderr)?;
                }
                self.check_contains(step, "stderr~", "stderr", &r.stderr)?;
                if let Some(cwd) = self.opt(step, "cwd")? {
                    self.compare(step, "cwd", cwd.as_bytes(), r.cwd.as_bytes())?;
                }
                if step.flags.iter().any(|f| f == "truncated") && !r.output_truncated {
                    return Err(CaseFailure::at(
                        self.at(step),
                        "expected output_truncated = true, got false",
                    ));
                }
                self.check_exit(step, r.exit_code, Some(0))?;
            }
            StepKind::Bg => {
                let session = self.ctx.session(&self.arg(step, 0)?);
                let command =
                    self.text(step, step.body.as_deref().unwrap_or_default(), "command")?;
                let mut req = StatefulExec::new(session, command, DEFAULT_RUN_TIMEOUT);
                req.background = true;
                let r = call!(sb.exec_stateful(req).await);
                let pid = r.background_pid.ok_or_else(|| {
                    CaseFailure::at(
                        self.at(step),
                        "a background command returned no background_pid",
                    )
                })?;
                if let Some(name) = self.opt(step, "as")? {
                    self.names.insert(name, pid);
                }
            }
            StepKind::BgList => {
                let wait = self.opt_num::<f64>(step, "wait")?.unwrap_or(0.0);
                let only = self.opt(step, "session")?.map(|s| self.ctx.session(&s));
                let deadline = Instant::now() + Duration::from_secs_f64(wait);
                loop {
                    let procs = call!(sb.list_background_processes(only.as_deref()).await);
                    let mut lines: Vec<String> = procs
                        .iter()
                        .filter_map(|p| {
                            let local = p.session.strip_prefix(&self.ctx.session_prefix)?;
                            Some(format!(
                                "{local} {} {}\n",
                                if p.running { "running" } else { "exited" },
                                escape_bytes(p.command.as_bytes())
                            ))
                        })
                        .collect();
                    lines.sort();
                    let actual = lines.concat().into_bytes();
                    let done = self.expected(step).is_none_or(|e| e == actual);
                    if done || Instant::now() >= deadline {
                        self.check_expected(step, "background process list", &actual)?;
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
            StepKind::BgKill => {
                let selector = if let Some(s) = self.opt(step, "session")? {
                    ProcessSelector::Session(self.ctx.session(&s))
                } else if let Some(p) = self.opt(step, "pattern")? {
                    ProcessSelector::Pattern(p)
                } else if !step.args.is_empty() {
                    ProcessSelector::Pid(self.pid(step)?)
                } else {
                    return Err(CaseFailure::at(
                        self.at(step),
                        "bg-kill needs a process name, session= or pattern=",
                    ));
                };
                let killed = call!(sb.kill_background_process(selector).await);
                self.check_expected(
                    step,
                    "number of killed processes",
                    format!("{}\n", killed.len()).as_bytes(),
                )?;
            }
            StepKind::BgLogs => {
                let pid = self.pid(step)?;
                let wait = self.opt_num::<f64>(step, "wait")?.unwrap_or(0.0);
                let deadline = Instant::now() + Duration::from_secs_f64(wait);
                let needle = step.opts.get("contains").map(|n| self.subst_bytes(n));
                loop {
                    let logs = call!(sb.get_background_logs(pid).await);
                    let ok = self.expected(step).is_none_or(|e| e == logs)
                        && needle.as_ref().is_none_or(|n| contains(&logs, n));
                    if ok || Instant::now() >= deadline {
                        self.check_expected(step, "background logs", &logs)?;
                        self.check_contains(step, "contains", "background logs", &logs)?;
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
            StepKind::Exec => {
                let session = self.ctx.session(&self.arg(step, 0)?);
                let command =
                    self.text(step, step.body.as_deref().unwrap_or_default(), "command")?;
                let dir = self.opt(step, "dir")?.unwrap_or_default();
                let out = call!(sb.exec(&session, &dir, &command).await);
                let want_running = step.flags.iter().any(|f| f == "running");
                match (out, want_running) {
                    (ExecOutcome::Running { .. }, true) => {}
                    (ExecOutcome::Completed { exit_code, output }, true) => {
                        return Err(CaseFailure::at(
                            self.at(step),
                            format!(
                                "expected the command to be still running, but it completed with exit code {exit_code} and output \"{}\"",
                                escape_bytes(&output)
                            ),
                        ));
                    }
                    (ExecOutcome::Completed { exit_code, output }, false) => {
                        self.check_expected(step, "output", &output)?;
                        self.check_contains(step, "contains", "output", &output)?;
                        self.check_exit(step, exit_code, Some(0))?;
                    }
                    (ExecOutcome::Running { .. }, false) => {
                        // A slow backend may hand back `Running` for a quick command: follow it.
                        let code =
                            call!(sb.wait_for_process(&session, Duration::from_secs(60)).await);
                        let view = call!(sb.view_shell(&session).await);
                        self.check_expected(step, "output", &view.output)?;
                        self.check_contains(step, "contains", "output", &view.output)?;
                        self.check_exit(step, code, Some(0))?;
                    }
                }
            }
            StepKind::View => {
                let session = self.ctx.session(&self.arg(step, 0)?);
                let wait = self.opt_num::<f64>(step, "wait")?.unwrap_or(0.0);
                let deadline = Instant::now() + Duration::from_secs_f64(wait);
                let running = match self.opt(step, "running")?.as_deref() {
                    None => None,
                    Some("true") => Some(true),
                    Some("false") => Some(false),
                    Some(o) => {
                        return Err(CaseFailure::at(
                            self.at(step),
                            format!("running={o:?} is not true or false"),
                        ));
                    }
                };
                let needle = step.opts.get("contains").map(|n| self.subst_bytes(n));
                loop {
                    let v = call!(sb.view_shell(&session).await);
                    let ok = self.expected(step).is_none_or(|e| e == v.output)
                        && needle.as_ref().is_none_or(|n| contains(&v.output, n))
                        && running.is_none_or(|r| r == v.running);
                    if ok || Instant::now() >= deadline {
                        self.check_expected(step, "shell output", &v.output)?;
                        self.check_contains(step, "contains", "shell output", &v.output)?;
                        if let Some(r) = running
                            && r != v.running
                        {
                            return Err(CaseFailure::at(
                                self.at(step),
                                format!(
                                    "running differs\n  expected: {r}\n    actual: {}",
                                    v.running
                                ),
                            ));
                        }
                        if step.opts.contains_key("exit") {
                            match v.exit_code {
                                Some(code) => self.check_exit(step, code, None)?,
                                None => {
                                    return Err(CaseFailure::at(
                                        self.at(step),
                                        "expected an exit code, the view has none",
                                    ));
                                }
                            }
                        }
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
            StepKind::Wait => {
                let session = self.ctx.session(&self.arg(step, 0)?);
                let secs: f64 = self.arg(step, 1)?.parse().map_err(|_| {
                    CaseFailure::at(self.at(step), "the wait time is not a number of seconds")
                })?;
                let code = call!(
                    sb.wait_for_process(&session, Duration::from_secs_f64(secs))
                        .await
                );
                self.check_exit(step, code, None)?;
            }
            StepKind::WriteStdin => {
                let session = self.ctx.session(&self.arg(step, 0)?);
                let input = self.subst_bytes(step.body.as_deref().unwrap_or_default());
                let enter = step.flags.iter().any(|f| f == "enter");
                call!(sb.write_to_process(&session, &input, enter).await);
            }
            StepKind::Kill => {
                let session = self.ctx.session(&self.arg(step, 0)?);
                call!(sb.kill_process(&session).await);
            }
            StepKind::Write => {
                let path = self.arg(step, 0)?;
                let content = self.subst_bytes(step.body.as_deref().unwrap_or_default());
                let has = |f: &str| step.flags.iter().any(|x| x == f);
                let opts = WriteOptions {
                    append: has("append"),
                    leading_newline: has("leading-newline"),
                    trailing_newline: has("trailing-newline"),
                };
                call!(
                    sb.file_write(&self.session(step)?, &path, &content, opts)
                        .await
                );
            }
            StepKind::Upload => {
                let path = self.arg(step, 0)?;
                let content = self.subst_bytes(step.body.as_deref().unwrap_or_default());
                let n = content.len() as u64;
                let written = call!(
                    sb.file_upload(
                        &self.session(step)?,
                        &path,
                        crate::protocol::UploadBody::from_bytes(content)
                    )
                    .await
                );
                if written != n {
                    return Err(CaseFailure::at(
                        self.at(step),
                        format!("upload reported {written} bytes written, {n} were sent"),
                    ));
                }
            }
            StepKind::Read => {
                let path = self.arg(step, 0)?;
                let opts = ReadOptions {
                    start_line: self.opt_num(step, "start")?,
                    end_line: self.opt_num(step, "end")?,
                    max_length: self.opt_num(step, "max")?,
                };
                let r = call!(sb.file_read(&self.session(step)?, &path, opts).await);
                self.check_expected(step, "content", &r.content)?;
                if let Some(t) = self.opt(step, "truncated")? {
                    let want = t == "true";
                    if want != r.truncated {
                        return Err(CaseFailure::at(
                            self.at(step),
                            format!(
                                "truncated differs\n  expected: {want}\n    actual: {}",
                                r.truncated
                            ),
                        ));
                    }
                }
            }
            StepKind::Exists => {
                let path = self.arg(step, 0)?;
                let r = call!(sb.file_exists(&self.session(step)?, &path).await);
                self.check_expected(step, "exists", format!("{r}\n").as_bytes())?;
            }
            StepKind::Delete => {
                let path = self.arg(step, 0)?;
                call!(sb.file_delete(&self.session(step)?, &path).await);
            }
            StepKind::List => {
                let path = self.arg(step, 0)?;
                let mut entries = call!(sb.file_list(&self.session(step)?, &path).await);
                entries.sort_by(|a, b| a.name.cmp(&b.name));
                let text: String = entries
                    .iter()
                    .map(|e| match e.kind {
                        FileKind::File => {
                            format!("file {} {}\n", escape_bytes(e.name.as_bytes()), e.size)
                        }
                        FileKind::Dir => format!("dir {}\n", escape_bytes(e.name.as_bytes())),
                        FileKind::Symlink => {
                            format!("symlink {}\n", escape_bytes(e.name.as_bytes()))
                        }
                        FileKind::Other => format!("other {}\n", escape_bytes(e.name.as_bytes())),
                    })
                    .collect();
                self.check_expected(step, "directory listing", text.as_bytes())?;
            }
            StepKind::Find => {
                let dir = self.arg(step, 0)?;
                let glob = self.arg(step, 1)?;
                let found = call!(sb.file_find(&self.session(step)?, &dir, &glob).await);
                let mut abs: Vec<String> = found
                    .iter()
                    .map(|p| {
                        if p.starts_with('/') {
                            p.clone()
                        } else {
                            crate::paths::resolve(&dir, p).unwrap_or_else(|_| p.clone())
                        }
                    })
                    .collect();
                if abs.windows(2).any(|w| w[0] > w[1]) {
                    return Err(CaseFailure::at(
                        self.at(step),
                        format!("file_find results are not sorted: {found:?}"),
                    ));
                }
                abs.sort();
                let text: String = abs
                    .iter()
                    .map(|p| format!("{}\n", escape_bytes(p.as_bytes())))
                    .collect();
                self.check_expected(step, "found paths", text.as_bytes())?;
            }
            StepKind::Search => {
                let path = self.arg(step, 0)?;
                let re = self.arg(step, 1)?;
                let found = call!(sb.file_search(&self.session(step)?, &path, &re).await);
                let text: String = found
                    .iter()
                    .map(|m| format!("{}:{}\n", m.line, escape_bytes(&m.text)))
                    .collect();
                self.check_expected(step, "search matches", text.as_bytes())?;
            }
            StepKind::Replace => {
                let path = self.arg(step, 0)?;
                let old = self.subst_bytes(&step.args[1]);
                let new = self.subst_bytes(&step.args[2]);
                let n = call!(
                    sb.file_replace(&self.session(step)?, &path, &old, &new)
                        .await
                );
                self.check_expected(step, "replacement count", format!("{n}\n").as_bytes())?;
            }
            StepKind::Sleep => {
                let secs: f64 = self.arg(step, 0)?.parse().map_err(|_| {
                    CaseFailure::at(self.at(step), "sleep needs a number of seconds")
                })?;
                tokio::time::sleep(Duration::from_secs_f64(secs)).await;
            }
        }
        Ok(Ok(()))
    }

    fn pid(&self, step: &Step) -> Result<u32, CaseFailure> {
        let name = self.arg(step, 0)?;
        if let Some(pid) = self.names.get(&name) {
            return Ok(*pid);
        }
        name.parse::<u32>().map_err(|_| {
            CaseFailure::at(self.at(step), format!("no background process named {name:?} (name one with `bg SESSION as=NAME`, or give a number)"))
        })
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || hay.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "# a comment
case files.sample
level extended
requires stdin, background

write ${CASE}/a\\x20b.txt append
one
two\\0\\c

read '${CASE}/a b.txt' start=1 end=2
----
two\\0\\c

expect-error not_found
read ${CASE}/missing

run s exit=3 cwd=/tmp
cd /tmp
.
exit 3
----
.
hello
";

    #[test]
    fn parses_headers_steps_bodies_and_expectations() {
        let scs = parse("t.scn", SAMPLE).unwrap();
        assert_eq!(scs.len(), 1);
        let sc = &scs[0];
        assert_eq!(sc.id, "files.sample");
        assert_eq!(sc.level, Level::Extended);
        assert_eq!(sc.requires, vec![Capability::Stdin, Capability::Background]);
        assert_eq!(sc.steps.len(), 4);
        let w = &sc.steps[0];
        assert_eq!((w.kind, w.line), (StepKind::Write, 6));
        assert_eq!(w.args[0], b"${CASE}/a b.txt");
        assert_eq!(w.flags, vec!["append"]);
        assert_eq!(w.body.as_deref(), Some(&b"one\ntwo\0"[..]));
        let r = &sc.steps[1];
        assert_eq!(r.opts.get("start").map(Vec::as_slice), Some(&b"1"[..]));
        assert_eq!(r.expected.as_deref(), Some(&b"two\0"[..]));
        assert_eq!(sc.steps[2].expect_error, Some(ErrorKind::NotFound));
        let run = &sc.steps[3];
        assert_eq!(run.body.as_deref(), Some(&b"cd /tmp\n\nexit 3"[..]));
        assert_eq!(run.expected.as_deref(), Some(&b"\nhello\n"[..]));
        assert_eq!(run.opts.get("cwd").map(Vec::as_slice), Some(&b"/tmp"[..]));
    }

    #[test]
    fn errors_carry_line_numbers() {
        let cases: &[(&str, usize, &str)] = &[
            ("read x\n", 1, "expected `case"),
            ("case files.a\nfrobnicate x\n", 2, "unknown step"),
            ("case files.a\nread\n", 2, "takes 1 argument"),
            ("case files.a\nexists x\nsome body\n", 3, "takes no body"),
            ("case files.a\nrun s\n", 2, "needs the command"),
            ("case files.a\nwrite x\nbad \\q\n", 3, "unknown escape"),
            (
                "case files.a\n\nexpect-error nope\n",
                3,
                "unknown error class",
            ),
            (
                "case files.a\nexpect-error backend\n",
                2,
                "not followed by a step",
            ),
            ("case nope.a\n", 1, "unknown area"),
            ("case files.a\nrequires warp\n", 2, "unknown capability"),
            (
                "case files.a\nread x\n\nlevel core\n",
                4,
                "before the first step",
            ),
            ("case files.a\n", 1, "has no steps"),
            ("case files.a\nread 'x\n", 2, "unterminated"),
            (
                "case files.a\ndelete x\n----\ny\n",
                2,
                "no result to compare",
            ),
            ("case files.a\nread x\n\ncase files.a\n", 4, "defined twice"),
        ];
        for (text, line, needle) in cases {
            let e = parse("f.scn", text).unwrap_err();
            assert_eq!(e.line, *line, "{text:?}: {e}");
            assert!(e.to_string().contains(needle), "{text:?}: {e}");
            assert!(e.to_string().starts_with(&format!("f.scn:{line}:")));
        }
    }

    #[test]
    fn options_only_when_known_and_unquoted() {
        let sc = &parse("f.scn", "case files.a\nreplace p a=b 'start=1'\n----\n1\n").unwrap()[0];
        let st = &sc.steps[0];
        assert_eq!(
            st.args,
            vec![b"p".to_vec(), b"a=b".to_vec(), b"start=1".to_vec()]
        );
        assert!(st.opts.is_empty());
    }

    #[test]
    fn builtin_scenarios_parse() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("suites/scenarios");
        let all = parse_dir(&dir).unwrap();
        assert!(all.len() >= 40, "only {} scenarios", all.len());
    }
}
