//! Code shared by the harness and the executor that runs inside sandboxes: the stateful-shell
//! unit (one implementation for every backend), the request core every agent runs, and the
//! Cloud Run worker with the bucket protocol it speaks.

pub mod exec;
pub mod gcs;
pub mod output;
pub mod serve;
pub mod shell;
pub mod worker;
