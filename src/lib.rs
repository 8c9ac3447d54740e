//! sandbox-harness: conformance and benchmark harness for AI-agent code-execution sandboxes.

pub mod acceptance;
pub mod backends;
pub mod bench;
pub mod browser;
pub mod conformance;
pub mod cost;
pub mod emulator;
pub mod gate;
pub mod gc;
pub mod gcp;
pub mod generic;
pub mod health;
pub mod images;
pub mod metrics;
pub mod output;
pub mod paths;
pub mod pipeline;
pub mod preflight;
pub mod protocol;
pub mod report;
pub mod suites;
pub mod transport;

pub use sandbox_executor::shell;
