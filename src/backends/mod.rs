//! Sandbox backends: each provides a `Transport` and a `SandboxBackend`.

pub mod cloudrun;
pub mod docker;
