//! `sandbox-executor serve`: the in-sandbox agent of the Docker backend. Requests arrive as
//! JSON lines on stdin and answers leave as JSON lines on stdout, so a command costs one round
//! trip over an already open stream instead of a new engine exec.
//!
//! The first line written is a [`Hello`]; then one [`Response`] line per [`Request`] line, in
//! completion order (requests run concurrently, matched by id). At the end of stdin the agent
//! waits for the requests in flight and exits.

use std::io::{BufRead, Write};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::exec::{Request, Response, execute};

/// Version of the line protocol; bumped on any incompatible change.
pub const PROTOCOL: u32 = 1;

/// The agent's first line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// Always `"sandbox-executor"`.
    pub agent: String,
    /// The line protocol version ([`PROTOCOL`]).
    pub protocol: u32,
    /// The agent's process id inside the sandbox.
    pub pid: u32,
}

impl Hello {
    /// The hello of this process.
    pub fn current() -> Self {
        Hello {
            agent: "sandbox-executor".into(),
            protocol: PROTOCOL,
            pid: std::process::id(),
        }
    }
}

/// An answer to a line that is not a request (the id is empty when it could not be read).
fn refusal(id: String, why: String) -> Response {
    Response {
        id,
        exit_code: 127,
        stdout_b64: String::new(),
        stderr_b64: String::new(),
        truncated: false,
        timed_out: false,
        error: Some(why),
        duration_ms: 0,
        timing: None,
        inbox_next: None,
    }
}

fn write_line<W: Write, T: Serialize>(out: &Mutex<W>, value: &T) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(value).map_err(std::io::Error::other)?;
    line.push(b'\n');
    let mut w = out
        .lock()
        .map_err(|_| std::io::Error::other("output lock poisoned"))?;
    w.write_all(&line)?;
    w.flush()
}

/// Serves requests from `input` until it ends; returns the number of requests answered.
pub fn serve<R, W>(mut input: R, output: W) -> std::io::Result<u64>
where
    R: BufRead,
    W: Write + Send + 'static,
{
    let out = Arc::new(Mutex::new(output));
    write_line(&out, &Hello::current())?;
    let mut workers = Vec::new();
    let mut answered = 0u64;
    let mut line = Vec::new();
    loop {
        line.clear();
        if input.read_until(b'\n', &mut line)? == 0 {
            break;
        }
        if line.iter().all(|b| b.is_ascii_whitespace()) {
            continue;
        }
        let out = out.clone();
        answered += 1;
        let req: Result<Request, String> =
            serde_json::from_slice(&line).map_err(|e| format!("unreadable request: {e}"));
        workers.retain(|h: &std::thread::JoinHandle<()>| !h.is_finished());
        workers.push(std::thread::spawn(move || {
            let resp = match req {
                Ok(r) => execute(&r),
                Err(why) => refusal(String::new(), why),
            };
            // A harness that went away cannot be answered; the command has run regardless.
            let _ = write_line(&out, &resp);
        }));
    }
    for w in workers {
        let _ = w.join();
    }
    Ok(answered)
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD as B64;

    /// A writer the test can read back after `serve` returns.
    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn request(id: &str, script: &str) -> String {
        let r = Request {
            id: id.into(),
            argv: vec!["sh".into(), "-c".into(), script.into()],
            stdin_b64: Some(B64.encode(b"piped\n")),
            deadline_ms: 10_000,
        };
        serde_json::to_string(&r).unwrap()
    }

    #[test]
    fn answers_every_request_by_id_after_a_hello() {
        let input = format!(
            "{}\n\n{}\nnot json\n",
            request("slow", "sleep 0.3; echo slow"),
            request("fast", "cat; exit 3")
        );
        let sink = Shared::default();
        assert_eq!(serve(input.as_bytes(), sink.clone()).unwrap(), 3);
        let text = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        let mut lines = text.lines();
        let hello: Hello = serde_json::from_str(lines.next().unwrap()).unwrap();
        assert_eq!(hello.protocol, PROTOCOL);
        let answers: Vec<Response> = lines.map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(answers.len(), 3, "{text}");
        let by_id = |id: &str| answers.iter().find(|r| r.id == id).unwrap();
        assert_eq!(by_id("fast").exit_code, 3);
        assert_eq!(B64.decode(&by_id("fast").stdout_b64).unwrap(), b"piped\n");
        assert_eq!(B64.decode(&by_id("slow").stdout_b64).unwrap(), b"slow\n");
        // The fast request was not held up behind the slow one.
        let order: Vec<&str> = answers.iter().map(|r| r.id.as_str()).collect();
        assert!(
            order.iter().position(|i| *i == "fast") < order.iter().position(|i| *i == "slow"),
            "{order:?}"
        );
        assert!(by_id("").error.as_deref().unwrap().contains("unreadable"));
    }
}
