//! halab's lab instrument. Its checker: [`recorder`] runs a workload through the store's client
//! and records every operation's invocation and completion ([`history`]); [`verdict`] checks
//! the history — per key, linearizable as a register ([`linearizable`], pure), no acknowledged
//! write lost, no value from nowhere — and shrinks a failure to a small history. Its nemesis:
//! [`nemesis`] plans random faults from a seed (pure), [`chaos`] carries them out on the lab
//! ([`lab`]: Docker's Engine API) while the checker's workload runs and [`election`] watches the
//! leader election. Its benchmark: [`bench`] runs halab's store and election beside etcd and
//! Redis Sentinel on this machine; [`soak`] saturates the cores and counts false failovers.

pub mod bench;
pub mod chaos;
pub mod dispatch;
pub mod election;
pub mod history;
pub mod lab;
pub mod linearizable;
pub mod monitor;
pub mod nemesis;
pub mod recorder;
pub mod scenario;
pub mod soak;
pub mod verdict;
