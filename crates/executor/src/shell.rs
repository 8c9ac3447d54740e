//! The stateful-shell unit: how a command is wrapped so that the working directory and the
//! exported environment of a session persist between calls, and how the result is parsed back.
//!
//! Every backend uses this one implementation: the Docker backend sends the argv built here to
//! the engine's exec API, the Cloud Run worker spawns it as a local process. No session value is
//! ever pasted into a shell string: the cwd, the command text and every environment variable are
//! passed as separate argv entries, and the script itself is a constant.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The state that persists between stateful commands of one shell session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ShellState {
    /// Working directory after the last command (absolute).
    pub cwd: String,
    /// Exported environment after the last command.
    pub env: BTreeMap<String, String>,
}

/// Variables the shell manages itself; they are never persisted.
const SHELL_MANAGED: &[&str] = &["_", "SHLVL", "PWD"];

/// The constant wrapper script. Positional parameters: $1 cwd, $2 command, $3 marker, $4 timeout
/// in seconds (0 = none).
///
/// The command is `eval`ed in the wrapper's own shell so that `cd`, `export` and `unset` take
/// effect; an EXIT trap dumps the exit status, the cwd (NUL-terminated) and the exported
/// environment (as `/proc/self/environ` of a child: NUL-separated, byte-exact) after a random
/// marker, even when the command calls `exit`. A watchdog kills the whole process group (the
/// exec's own group) when the timeout expires, so no dump is written and the caller reports a
/// timeout.
pub const WRAPPER_SCRIPT: &str = r#"__sh_marker=$3
__sh_wd=
if [ "$4" != 0 ]; then
  ( trap 'kill "$__sh_s" 2>/dev/null; exit 0' TERM
    sleep "$4" & __sh_s=$!
    wait "$__sh_s" && kill -KILL 0 ) </dev/null >/dev/null 2>&1 &
  __sh_wd=$!
fi
__sh_dump() {
  __sh_rc=$?
  trap - EXIT
  if [ -n "$__sh_wd" ]; then kill "$__sh_wd" 2>/dev/null; fi
  printf '%s%s\n%s\000' "$__sh_marker" "$__sh_rc" "$PWD"
  cat /proc/self/environ
  exit "$__sh_rc"
}
cd -- "$1" 2>/dev/null || cd /
__sh_cmd=$2
shift 4
trap __sh_dump EXIT
eval "$__sh_cmd"
"#;

/// Builds a fresh random marker for one call (128 bits, hex).
pub fn new_marker(random: u128) -> String {
    format!("__SANDBOX_HARNESS_STATE_{random:032x}__")
}

/// True when `name` is a valid portable environment variable name.
pub fn valid_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    match chars.next() {
        Some(c) if c == '_' || c.is_ascii_alphabetic() => {}
        _ => return false,
    }
    chars.all(|c| c == '_' || c.is_ascii_alphanumeric())
}

/// The argv that runs `command` in `state` (or, with `None`, in the container's own default
/// environment, which is how a new session captures its initial state).
///
/// `timeout_secs` of 0 means no watchdog. Environment entries whose names are not valid are
/// skipped (they cannot be set by `env` without ambiguity); values may hold any bytes but NUL.
pub fn wrap(
    state: Option<&ShellState>,
    command: &str,
    timeout_secs: u64,
    marker: &str,
) -> Vec<String> {
    let mut argv = Vec::new();
    let cwd = match state {
        Some(state) => {
            argv.push("env".to_string());
            argv.push("-i".to_string());
            for (k, v) in &state.env {
                if valid_env_name(k) && !v.contains('\0') {
                    argv.push(format!("{k}={v}"));
                }
            }
            state.cwd.clone()
        }
        None => "/".to_string(),
    };
    argv.extend([
        "sh".to_string(),
        "-c".to_string(),
        WRAPPER_SCRIPT.to_string(),
        "sh".to_string(),
        cwd,
        command.to_string(),
        marker.to_string(),
        timeout_secs.to_string(),
    ]);
    argv
}

/// The parsed result of one wrapped command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unwrapped {
    /// The command's own stdout, with the state dump removed.
    pub stdout: Vec<u8>,
    /// The command's exit status.
    pub exit_code: i32,
    /// The session state after the command.
    pub state: ShellState,
}

/// Why a wrapped command's output could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UnwrapError {
    /// The state dump is missing: the wrapper was killed (timeout) or never ran.
    MissingDump,
    /// The state dump is present but malformed.
    Malformed(String),
}

impl std::fmt::Display for UnwrapError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UnwrapError::MissingDump => write!(f, "the shell wrapper wrote no state dump"),
            UnwrapError::Malformed(why) => write!(f, "malformed shell state dump: {why}"),
        }
    }
}

impl std::error::Error for UnwrapError {}

/// Splits the raw stdout of a wrapped command into the command's stdout and the new state.
pub fn unwrap(raw_stdout: &[u8], marker: &str) -> Result<Unwrapped, UnwrapError> {
    let m = marker.as_bytes();
    let at = rfind(raw_stdout, m).ok_or(UnwrapError::MissingDump)?;
    let stdout = raw_stdout[..at].to_vec();
    let rest = &raw_stdout[at + m.len()..];
    let nl = rest
        .iter()
        .position(|&b| b == b'\n')
        .ok_or_else(|| UnwrapError::Malformed("no newline after the exit status".into()))?;
    let code_text = std::str::from_utf8(&rest[..nl])
        .map_err(|_| UnwrapError::Malformed("exit status is not text".into()))?;
    let exit_code: i32 = code_text
        .trim()
        .parse()
        .map_err(|_| UnwrapError::Malformed(format!("exit status {code_text:?}")))?;
    let rest = &rest[nl + 1..];
    let nul = rest
        .iter()
        .position(|&b| b == 0)
        .ok_or_else(|| UnwrapError::Malformed("cwd is not NUL-terminated".into()))?;
    let cwd = String::from_utf8_lossy(&rest[..nul]).into_owned();
    let mut env = BTreeMap::new();
    for entry in rest[nul + 1..].split(|&b| b == 0) {
        if entry.is_empty() {
            continue;
        }
        let Some(eq) = entry.iter().position(|&b| b == b'=') else {
            continue;
        };
        let (Ok(name), Ok(value)) = (
            std::str::from_utf8(&entry[..eq]),
            std::str::from_utf8(&entry[eq + 1..]),
        ) else {
            continue;
        };
        if !valid_env_name(name) || SHELL_MANAGED.contains(&name) {
            continue;
        }
        env.insert(name.to_string(), value.to_string());
    }
    Ok(Unwrapped {
        stdout,
        exit_code,
        state: ShellState { cwd, env },
    })
}

fn rfind(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || needle.len() > haystack.len() {
        return None;
    }
    (0..=haystack.len() - needle.len())
        .rev()
        .find(|&i| &haystack[i..i + needle.len()] == needle)
}

/// True when a command asks to run in the background: it ends with a single unescaped `&`.
pub fn is_background(command: &str) -> bool {
    let t = command.trim_end();
    t.ends_with('&') && !t.ends_with("&&") && !t.ends_with("\\&")
}

/// The command without its trailing background `&`.
pub fn strip_background(command: &str) -> &str {
    let t = command.trim_end();
    if is_background(t) {
        t[..t.len() - 1].trim_end()
    } else {
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_names() {
        assert!(valid_env_name("A_1"));
        assert!(valid_env_name("_x"));
        assert!(!valid_env_name("1A"));
        assert!(!valid_env_name("A-B"));
        assert!(!valid_env_name(""));
    }

    #[test]
    fn unwrap_splits_output_and_state() {
        let marker = new_marker(7);
        let mut raw = b"hello\nworld".to_vec();
        raw.extend_from_slice(marker.as_bytes());
        raw.extend_from_slice(b"3\n/tmp/a b\0A=x y\0_=/bin/sh\0B=multi\nline\0SHLVL=1\0");
        let u = unwrap(&raw, &marker).unwrap();
        assert_eq!(u.stdout, b"hello\nworld");
        assert_eq!(u.exit_code, 3);
        assert_eq!(u.state.cwd, "/tmp/a b");
        assert_eq!(u.state.env.get("A").unwrap(), "x y");
        assert_eq!(u.state.env.get("B").unwrap(), "multi\nline");
        assert!(!u.state.env.contains_key("_"));
        assert!(!u.state.env.contains_key("SHLVL"));
    }

    #[test]
    fn unwrap_without_dump_is_missing() {
        assert_eq!(
            unwrap(b"partial output", &new_marker(1)),
            Err(UnwrapError::MissingDump)
        );
    }

    #[test]
    fn wrap_passes_values_as_argv() {
        let mut state = ShellState {
            cwd: "/work space".into(),
            env: BTreeMap::new(),
        };
        state.env.insert("Q".into(), "it's \"$HOME\"".into());
        state.env.insert("bad-name".into(), "x".into());
        let argv = wrap(Some(&state), "echo $Q", 5, "M");
        assert_eq!(&argv[..2], &["env", "-i"]);
        assert!(argv.contains(&"Q=it's \"$HOME\"".to_string()));
        assert!(!argv.iter().any(|a| a.starts_with("bad-name")));
        assert_eq!(
            &argv[argv.len() - 4..],
            &["/work space", "echo $Q", "M", "5"]
        );
    }

    #[test]
    fn background_detection() {
        assert!(is_background("sleep 5 &"));
        assert!(is_background("sleep 5&  "));
        assert!(!is_background("a && b"));
        assert!(!is_background("echo \\&"));
        assert_eq!(strip_background("sleep 5 & "), "sleep 5");
    }
}
