//! The scenario executor: runs a [`Scenario`]'s steps against the case's sandbox, one
//! function per step kind.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::conformance::terms::{CaseCtx, CaseFailure, CaseResult};
use crate::conformance::text::{describe_mismatch, escape_bytes};
use crate::protocol::{
    ExecOutcome, FileKind, ProcessSelector, ReadOptions, SandboxError, StatefulExec, WriteOptions,
};

use super::{Scenario, Step, StepKind};

const DEFAULT_SESSION: &str = "s";
const DEFAULT_RUN_TIMEOUT: Duration = Duration::from_secs(60);

struct Exec<'a> {
    ctx: &'a CaseCtx,
    sc: &'a Scenario,
    names: HashMap<String, u32>,
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

/// Unwraps a sandbox call inside a step; a failed call ends the step with the error as its
/// outcome (the caller checks it against `expect-error`).
macro_rules! call {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(e) => return Ok(Err(e)),
        }
    };
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
            (Err(e), Some(want)) => Err(CaseFailure::class_differs(self.at(step), want, e)),
            (Ok(()), Some(want)) => Err(CaseFailure::at(
                self.at(step),
                format!("expected an error of class {want}, but the step succeeded"),
            )),
        }
    }

    /// Outer `Err`: the step's checks failed; inner `Err`: the sandbox call failed.
    async fn step_inner(&mut self, step: &Step) -> Result<StepOut, CaseFailure> {
        match step.kind {
            StepKind::Run => self.run(step).await,
            StepKind::Bg => self.bg(step).await,
            StepKind::BgList => self.bg_list(step).await,
            StepKind::BgKill => self.bg_kill(step).await,
            StepKind::BgLogs => self.bg_logs(step).await,
            StepKind::Exec => self.exec(step).await,
            StepKind::View => self.view(step).await,
            StepKind::Wait => self.wait(step).await,
            StepKind::WriteStdin => self.write_stdin(step).await,
            StepKind::Kill => self.kill(step).await,
            StepKind::Write => self.write(step).await,
            StepKind::Upload => self.upload(step).await,
            StepKind::Read => self.read(step).await,
            StepKind::Exists => self.exists(step).await,
            StepKind::Delete => self.delete(step).await,
            StepKind::List => self.list(step).await,
            StepKind::Find => self.find(step).await,
            StepKind::Search => self.search(step).await,
            StepKind::Replace => self.replace(step).await,
            StepKind::Sleep => self.sleep(step).await,
        }
    }

    /// `run SESSION`: a stateful command, its output, cwd and exit code checked.
    async fn run(&self, step: &Step) -> Result<StepOut, CaseFailure> {
        let sb = &self.ctx.sandbox;
        let session = self.ctx.session(&self.arg(step, 0)?);
        let command = self.text(step, step.body.as_deref().unwrap_or_default(), "command")?;
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
        Ok(Ok(()))
    }

    /// `bg SESSION`: a stateful command started in the background, optionally named.
    async fn bg(&mut self, step: &Step) -> Result<StepOut, CaseFailure> {
        let sb = &self.ctx.sandbox;
        let session = self.ctx.session(&self.arg(step, 0)?);
        let command = self.text(step, step.body.as_deref().unwrap_or_default(), "command")?;
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
        Ok(Ok(()))
    }

    /// `bg-list`: the background processes of the case's sessions, polled until they match or `wait` runs out.
    async fn bg_list(&self, step: &Step) -> Result<StepOut, CaseFailure> {
        let sb = &self.ctx.sandbox;
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
        Ok(Ok(()))
    }

    /// `bg-kill`: kills background processes by name/pid, session or pattern.
    async fn bg_kill(&self, step: &Step) -> Result<StepOut, CaseFailure> {
        let sb = &self.ctx.sandbox;
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
        Ok(Ok(()))
    }

    /// `bg-logs NAME`: a background process's logs, polled until they match or `wait` runs out.
    async fn bg_logs(&self, step: &Step) -> Result<StepOut, CaseFailure> {
        let sb = &self.ctx.sandbox;
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
        Ok(Ok(()))
    }

    /// `exec SESSION`: an interactive command, completed or still running.
    async fn exec(&self, step: &Step) -> Result<StepOut, CaseFailure> {
        let sb = &self.ctx.sandbox;
        let session = self.ctx.session(&self.arg(step, 0)?);
        let command = self.text(step, step.body.as_deref().unwrap_or_default(), "command")?;
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
                let code = call!(sb.wait_for_process(&session, Duration::from_secs(60)).await);
                let view = call!(sb.view_shell(&session).await);
                self.check_expected(step, "output", &view.output)?;
                self.check_contains(step, "contains", "output", &view.output)?;
                self.check_exit(step, code, Some(0))?;
            }
        }
        Ok(Ok(()))
    }

    /// `view SESSION`: the shell's output and state, polled until they match or `wait` runs out.
    async fn view(&self, step: &Step) -> Result<StepOut, CaseFailure> {
        let sb = &self.ctx.sandbox;
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
        Ok(Ok(()))
    }

    /// `wait SESSION SECS`: waits for the session's process and checks its exit code.
    async fn wait(&self, step: &Step) -> Result<StepOut, CaseFailure> {
        let sb = &self.ctx.sandbox;
        let session = self.ctx.session(&self.arg(step, 0)?);
        let secs: f64 = self.arg(step, 1)?.parse().map_err(|_| {
            CaseFailure::at(self.at(step), "the wait time is not a number of seconds")
        })?;
        let code = call!(
            sb.wait_for_process(&session, Duration::from_secs_f64(secs))
                .await
        );
        self.check_exit(step, code, None)?;
        Ok(Ok(()))
    }

    /// `write-stdin SESSION`: sends the body to the running process.
    async fn write_stdin(&self, step: &Step) -> Result<StepOut, CaseFailure> {
        let sb = &self.ctx.sandbox;
        let session = self.ctx.session(&self.arg(step, 0)?);
        let input = self.subst_bytes(step.body.as_deref().unwrap_or_default());
        let enter = step.flags.iter().any(|f| f == "enter");
        call!(sb.write_to_process(&session, &input, enter).await);
        Ok(Ok(()))
    }

    /// `kill SESSION`: kills the session's process.
    async fn kill(&self, step: &Step) -> Result<StepOut, CaseFailure> {
        let sb = &self.ctx.sandbox;
        let session = self.ctx.session(&self.arg(step, 0)?);
        call!(sb.kill_process(&session).await);
        Ok(Ok(()))
    }

    /// `write PATH`: writes the body with the given flags.
    async fn write(&self, step: &Step) -> Result<StepOut, CaseFailure> {
        let sb = &self.ctx.sandbox;
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
        Ok(Ok(()))
    }

    /// `upload PATH`: streams the body with `file_upload`.
    async fn upload(&self, step: &Step) -> Result<StepOut, CaseFailure> {
        let sb = &self.ctx.sandbox;
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
        Ok(Ok(()))
    }

    /// `read PATH`: reads (a range of) a file.
    async fn read(&self, step: &Step) -> Result<StepOut, CaseFailure> {
        let sb = &self.ctx.sandbox;
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
        Ok(Ok(()))
    }

    /// `exists PATH`.
    async fn exists(&self, step: &Step) -> Result<StepOut, CaseFailure> {
        let sb = &self.ctx.sandbox;
        let path = self.arg(step, 0)?;
        let r = call!(sb.file_exists(&self.session(step)?, &path).await);
        self.check_expected(step, "exists", format!("{r}\n").as_bytes())?;
        Ok(Ok(()))
    }

    /// `delete PATH`.
    async fn delete(&self, step: &Step) -> Result<StepOut, CaseFailure> {
        let sb = &self.ctx.sandbox;
        let path = self.arg(step, 0)?;
        call!(sb.file_delete(&self.session(step)?, &path).await);
        Ok(Ok(()))
    }

    /// `list PATH`: the directory listing, sorted by name.
    async fn list(&self, step: &Step) -> Result<StepOut, CaseFailure> {
        let sb = &self.ctx.sandbox;
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
        Ok(Ok(()))
    }

    /// `find DIR GLOB`: the matches, which must come sorted.
    async fn find(&self, step: &Step) -> Result<StepOut, CaseFailure> {
        let sb = &self.ctx.sandbox;
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
        Ok(Ok(()))
    }

    /// `search PATH REGEX`: the matching lines.
    async fn search(&self, step: &Step) -> Result<StepOut, CaseFailure> {
        let sb = &self.ctx.sandbox;
        let path = self.arg(step, 0)?;
        let re = self.arg(step, 1)?;
        let found = call!(sb.file_search(&self.session(step)?, &path, &re).await);
        let text: String = found
            .iter()
            .map(|m| format!("{}:{}\n", m.line, escape_bytes(&m.text)))
            .collect();
        self.check_expected(step, "search matches", text.as_bytes())?;
        Ok(Ok(()))
    }

    /// `replace PATH OLD NEW`: the replacement count.
    async fn replace(&self, step: &Step) -> Result<StepOut, CaseFailure> {
        let sb = &self.ctx.sandbox;
        let path = self.arg(step, 0)?;
        let old = self.subst_bytes(&step.args[1]);
        let new = self.subst_bytes(&step.args[2]);
        let n = call!(
            sb.file_replace(&self.session(step)?, &path, &old, &new)
                .await
        );
        self.check_expected(step, "replacement count", format!("{n}\n").as_bytes())?;
        Ok(Ok(()))
    }

    /// `sleep SECS`.
    async fn sleep(&self, step: &Step) -> Result<StepOut, CaseFailure> {
        let secs: f64 = self
            .arg(step, 0)?
            .parse()
            .map_err(|_| CaseFailure::at(self.at(step), "sleep needs a number of seconds"))?;
        tokio::time::sleep(Duration::from_secs_f64(secs)).await;
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
