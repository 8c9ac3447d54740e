//! Sandbox backends: each provides a `Transport` and a `SandboxBackend`; [`open`] opens the
//! ones a `--backend` spec names.

pub mod cloudrun;
pub mod docker;
pub mod open;

pub use open::{Backends, OpenBackend, OpenError, OpenOptions, open};
