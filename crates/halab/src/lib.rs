//! halab's lab instrument. Its checker: [`recorder`] runs a workload through the store's client
//! and records every operation's invocation and completion ([`history`]); [`verdict`] checks
//! the history — per key, linearizable as a register ([`linearizable`], pure), no acknowledged
//! write lost, no value from nowhere — and shrinks a failure to a small history. Its nemesis:
//! [`nemesis`] plans random faults from a seed (pure), [`chaos`] carries them out on the lab
//! through Docker's Engine API while the checker's workload runs and [`election`] watches the
//! leader election.

pub mod chaos;
pub mod election;
pub mod history;
pub mod linearizable;
pub mod nemesis;
pub mod recorder;
pub mod verdict;
