//! The scenario parser: text in, [`Scenario`]s out, every error with its file and line.

use std::collections::BTreeMap;
use std::path::Path;

use crate::conformance::terms::{Capability, CaseLevel, Divergence, validate_id};
use crate::conformance::text::unescape;
use crate::protocol::ErrorKind;

use super::{BodyKind, ParseError, SPECS, Scenario, Spec, Step};

/// Parses the scenarios of one file; `file` names it in errors and reports.
pub fn parse(file: &str, text: &str) -> Result<Vec<Scenario>, ParseError> {
    let mut p = Parser {
        file,
        lines: text.lines().collect(),
        next: 0,
        out: Vec::new(),
        pending_error: None,
    };
    while p.next < p.lines.len() {
        let lineno = p.next + 1;
        let line = p.lines[p.next].trim_end();
        p.next += 1;
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        let (word, rest) = match line.split_once(char::is_whitespace) {
            Some((w, r)) => (w, r.trim()),
            None => (line, ""),
        };
        if !p.header(lineno, word, rest)? {
            p.step(lineno, line, word, rest)?;
        }
    }
    if let Some((l, _)) = p.pending_error {
        return Err(p.err(l, "`expect-error` is not followed by a step".into()));
    }
    for sc in &p.out {
        if sc.steps.is_empty() {
            return Err(p.err(sc.line, format!("case {} has no steps", sc.id)));
        }
    }
    Ok(p.out)
}

/// The state of parsing one file: its lines, the next one to read, the scenarios so far and
/// an `expect-error` waiting for its step.
struct Parser<'t> {
    file: &'t str,
    lines: Vec<&'t str>,
    /// 0-based index of the next line to read.
    next: usize,
    out: Vec<Scenario>,
    pending_error: Option<(usize, ErrorKind)>,
}

impl<'t> Parser<'t> {
    fn err(&self, line: usize, message: String) -> ParseError {
        ParseError {
            file: self.file.to_string(),
            line,
            message,
        }
    }

    /// The scenario being parsed; only called once a `case` line has been seen.
    fn current(&mut self) -> &mut Scenario {
        self.out.last_mut().expect("a case header was seen")
    }

    /// Handles a header line (`case`, `level`, `requires`, `expected-divergence`,
    /// `expect-error`); false when `word` is not one, so the line is a step.
    fn header(&mut self, lineno: usize, word: &str, rest: &str) -> Result<bool, ParseError> {
        match word {
            "case" => self.case(lineno, rest)?,
            _ if self.out.is_empty() => {
                return Err(self.err(lineno, format!("expected `case AREA.NAME`, found {word:?}")));
            }
            "expected-divergence" => {
                self.before_steps(lineno, word)?;
                let d = Divergence::parse(rest).map_err(|m| self.err(lineno, m))?;
                if self
                    .current()
                    .divergences
                    .iter()
                    .any(|x| x.backend == d.backend)
                {
                    return Err(self.err(
                        lineno,
                        format!("two `expected-divergence` lines for {}", d.backend),
                    ));
                }
                self.current().divergences.push(d);
            }
            "level" => {
                self.before_steps(lineno, word)?;
                self.current().level = match rest {
                    "core" => CaseLevel::Core,
                    "extended" => CaseLevel::Extended,
                    other => {
                        return Err(self.err(
                            lineno,
                            format!("unknown level {other:?} (core or extended)"),
                        ));
                    }
                };
            }
            "requires" => {
                self.before_steps(lineno, word)?;
                for name in rest
                    .split(|c: char| c == ',' || c.is_whitespace())
                    .filter(|s| !s.is_empty())
                {
                    let cap = Capability::parse(name).ok_or_else(|| {
                        self.err(
                            lineno,
                            format!(
                                "unknown capability {name:?} (one of {})",
                                Capability::ALL.map(Capability::as_str).join(", ")
                            ),
                        )
                    })?;
                    self.current().requires.push(cap);
                }
            }
            "expect-error" => {
                if self.pending_error.is_some() {
                    return Err(self.err(lineno, "two `expect-error` lines in a row".into()));
                }
                let kind = parse_error_kind(rest).ok_or_else(|| {
                    self.err(
                        lineno,
                        format!(
                            "unknown error class {rest:?} (one of {})",
                            ErrorKind::ALL.map(ErrorKind::as_str).join(", ")
                        ),
                    )
                })?;
                self.pending_error = Some((lineno, kind));
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// `case AREA.NAME`: starts a new scenario.
    fn case(&mut self, lineno: usize, id: &str) -> Result<(), ParseError> {
        if let Some((l, _)) = self.pending_error {
            return Err(self.err(l, "`expect-error` is not followed by a step".into()));
        }
        validate_id(id).map_err(|m| self.err(lineno, m))?;
        if self.out.iter().any(|s| s.id == id) {
            return Err(self.err(lineno, format!("case {id:?} is defined twice")));
        }
        self.out.push(Scenario {
            id: id.to_string(),
            level: CaseLevel::Core,
            requires: Vec::new(),
            divergences: Vec::new(),
            file: self.file.to_string(),
            line: lineno,
            steps: Vec::new(),
        });
        Ok(())
    }

    /// Header lines other than `case` must come before the case's first step.
    fn before_steps(&mut self, lineno: usize, word: &str) -> Result<(), ParseError> {
        if self.current().steps.is_empty() {
            Ok(())
        } else {
            Err(self.err(lineno, format!("`{word}` must come before the first step")))
        }
    }

    /// A step directive, with its body and expected block from the lines that follow.
    fn step(
        &mut self,
        lineno: usize,
        line: &str,
        word: &str,
        rest: &str,
    ) -> Result<(), ParseError> {
        let spec = SPECS.iter().find(|s| s.name == word).ok_or_else(|| {
            self.err(
                lineno,
                format!(
                    "unknown step {word:?} (one of {})",
                    SPECS.iter().map(|s| s.name).collect::<Vec<_>>().join(", ")
                ),
            )
        })?;
        let (args, opts, flags) = self.arguments(lineno, spec, rest)?;
        let (body, has_expected) = self.body(lineno, spec)?;
        let expected = if has_expected {
            Some(self.expected(lineno, spec)?)
        } else {
            None
        };
        let expect_error = self.pending_error.take().map(|(_, k)| k);
        self.current().steps.push(Step {
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
        Ok(())
    }

    /// Splits a directive's words into arguments, the step's known `key=value` options and
    /// its flags, and checks the argument count.
    fn arguments(&self, lineno: usize, spec: &Spec, rest: &str) -> Result<StepWords, ParseError> {
        let tokens = tokenize(rest).map_err(|m| self.err(lineno, m))?;
        let mut args = Vec::new();
        let mut opts = BTreeMap::new();
        let mut flags = Vec::new();
        for (tok, quoted) in tokens {
            if !quoted {
                if let Some((k, v)) = tok.split_once('=')
                    && spec.opts.contains(&k)
                {
                    let v =
                        unescape(v).map_err(|m| self.err(lineno, format!("option {k}: {m}")))?;
                    if opts.insert(k.to_string(), v.bytes).is_some() {
                        return Err(self.err(lineno, format!("option {k} given twice")));
                    }
                    continue;
                }
                if spec.flags.contains(&tok.as_str()) {
                    flags.push(tok);
                    continue;
                }
            }
            let v =
                unescape(&tok).map_err(|m| self.err(lineno, format!("argument {tok:?}: {m}")))?;
            args.push(v.bytes);
        }
        if args.len() < spec.args.0 || args.len() > spec.args.1 {
            return Err(self.err(
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
        Ok((args, opts, flags))
    }

    /// The step's body: lines up to `----` or a blank line. Also says whether a `----`
    /// (an expected block) follows.
    fn body(&mut self, lineno: usize, spec: &Spec) -> Result<(Option<Vec<u8>>, bool), ParseError> {
        let mut body_lines: Vec<(usize, &str)> = Vec::new();
        let mut has_expected = false;
        while self.next < self.lines.len() {
            let l = self.lines[self.next];
            if l.trim_end() == "----" {
                has_expected = true;
                self.next += 1;
                break;
            }
            if l.trim().is_empty() {
                break;
            }
            body_lines.push((self.next + 1, l));
            self.next += 1;
        }
        let body = match spec.body {
            BodyKind::None if !body_lines.is_empty() => {
                return Err(self.err(
                    body_lines[0].0,
                    format!(
                        "`{}` takes no body; put `----` before the expected result",
                        spec.name
                    ),
                ));
            }
            BodyKind::None => None,
            BodyKind::Command if body_lines.is_empty() => {
                return Err(self.err(
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
            BodyKind::Content => Some(decode_block(&body_lines).map_err(|(l, m)| self.err(l, m))?),
        };
        Ok((body, has_expected))
    }

    /// The expected block after `----`, up to a blank line.
    fn expected(&mut self, lineno: usize, spec: &Spec) -> Result<Vec<u8>, ParseError> {
        if !spec.expected {
            return Err(self.err(
                lineno,
                format!(
                    "`{}` has no result to compare; remove the `----` block",
                    spec.name
                ),
            ));
        }
        let mut exp_lines = Vec::new();
        while self.next < self.lines.len() && !self.lines[self.next].trim().is_empty() {
            exp_lines.push((self.next + 1, self.lines[self.next]));
            self.next += 1;
        }
        decode_block(&exp_lines).map_err(|(l, m)| self.err(l, m))
    }
}

/// A step's positional arguments, `key=value` options and flags.
type StepWords = (Vec<Vec<u8>>, BTreeMap<String, Vec<u8>>, Vec<String>);

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

#[cfg(test)]
mod tests {
    use super::super::StepKind;
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
        assert_eq!(sc.level, CaseLevel::Extended);
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
