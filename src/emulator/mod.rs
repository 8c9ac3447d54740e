//! A local Cloud Run Admin API v2 + Cloud Storage JSON API emulator. Executions run as Docker
//! containers; objects live in a flat object store; Cloud Storage volumes are FUSE mounts of
//! it (`gcsfuse`), bind-mounted into task containers.
//!
//! The storage half lives in `storage`, the Cloud Run half in `run`; `server` assembles both
//! behind one axum router on 127.0.0.1 (see `server` for the hook that adds the Run routes);
//! `local` starts the whole thing in-process. Both halves answer with `base::ApiError` (each in
//! its own wire dialect), sit behind `auth::require_auth` and inject faults through
//! `faults::FaultInjector::inject`; `base` is the leaf they all import.

pub mod auth;
pub mod base;
pub mod context;
pub mod faults;
pub mod gcsfuse;
pub mod local;
pub mod routes;
pub mod run;
pub mod server;
pub mod storage;

pub use base::{ApiError, AuthMode, Clock, Dialect};
pub use context::{EmulatorConfig, EmulatorContext};
pub use local::{LocalCloud, LocalCloudError};
pub use server::Emulator;
