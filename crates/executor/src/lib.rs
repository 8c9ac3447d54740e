//! Code shared by the harness and the executor that runs inside sandboxes: the stateful-shell
//! unit (one implementation for every backend).

pub mod output;
pub mod serve;
pub mod shell;
pub mod worker;
