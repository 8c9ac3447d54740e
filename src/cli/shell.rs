//! `sandbox-harness shell`: an interactive session on one backend.

use std::process::ExitCode;

use sandbox_harness::backends::{self, OpenBackend, OpenOptions};
use sandbox_harness::conformance;
use sandbox_harness::protocol::Capabilities;

/// Flags of `shell`.
#[derive(Debug, clap::Args)]
pub struct ShellArgs {
    /// docker or cloudrun.
    #[arg(long, default_value = "docker")]
    backend: String,
    /// Ask for a sandbox with a browser (prints its DevTools and VNC addresses).
    #[arg(long)]
    browser: bool,
}

/// Opens the backend, runs the REPL on stdin until `:quit`, end of input or Ctrl-C, then
/// destroys the sandbox and closes the backend (the embedded emulator with it).
pub async fn run(args: &ShellArgs) -> ExitCode {
    let backend = match backends::open::open_one(&args.backend, &OpenOptions::default()).await {
        Ok(b) => b,
        Err(e) if e.is_usage() => return super::usage_error(&e),
        Err(e) => return super::failure(&e),
    };
    let code = super::until_ctrl_c(session(args, &backend)).await;
    backend.close().await;
    code.unwrap_or(ExitCode::FAILURE)
}

async fn session(args: &ShellArgs, opened: &OpenBackend) -> ExitCode {
    let wants = Capabilities {
        browser: args.browser,
        ..Default::default()
    };
    let sandbox = match opened.backend.create_with(wants).await {
        Ok(s) => s,
        Err(e) => return super::failure(&e),
    };
    eprintln!(
        "sandbox {} on {}; :help lists meta-commands, :quit ends",
        sandbox.id(),
        opened.backend.name()
    );
    let guard = conformance::SandboxGuard::new(sandbox.clone());
    if args.browser {
        match sandbox.get_browser().await {
            Ok(b) => eprintln!(
                "browser {}: DevTools {} ({}), VNC {}",
                b.version.as_deref().unwrap_or("?"),
                b.cdp_url,
                b.websocket_url.as_deref().unwrap_or("-"),
                b.vnc_url.as_deref().unwrap_or("-")
            ),
            Err(e) => eprintln!("sandbox-harness: the browser did not come up: {e}"),
        }
    }
    let stdin = tokio::io::BufReader::new(tokio::io::stdin());
    let result = conformance::shell::run_repl(sandbox.as_ref(), stdin, tokio::io::stdout()).await;
    if let Err(e) = guard.destroy().await {
        eprintln!("sandbox-harness: destroying the sandbox failed: {e}");
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => super::failure(&e),
    }
}
