//! halab's replicated key-value store (seeds 001 and 003).
//!
//! One binary, roles decided at run time: the first node to claim the witness is primary, the
//! others are standbys. The rules (roles, epochs, the in-sync set, leases, catch-up) live in
//! the sans-IO [`node`]; [`daemon`] carries them out over sockets, the data dir ([`wal`]) and
//! the shared witness ([`witness`]).

pub mod client;
pub mod config;
pub mod daemon;
pub mod limits;
pub mod load;
mod log_writer;
pub mod node;
pub mod redis;
pub mod store;
#[cfg(feature = "testing")]
pub mod testing;
pub mod wal;
pub mod witness;
