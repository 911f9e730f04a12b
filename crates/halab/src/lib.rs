//! halab's lab instrument. So far its checker: [`recorder`] runs a workload through the store's
//! client and records every operation's invocation and completion ([`history`]); [`verdict`]
//! checks the history — per key, linearizable as a register ([`linearizable`], pure), no
//! acknowledged write lost, no value from nowhere — and shrinks a failure to a small history.

pub mod history;
pub mod linearizable;
pub mod recorder;
pub mod verdict;
