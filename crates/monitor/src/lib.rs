//! halab's monitor (seeds 001, 003, 004): health checks of every node of every system — an
//! ICMP echo for the machine, the service's own status request for the service — turned into
//! states by thresholds that keep one lost ping from flapping them; and the clients' HTTP
//! front door to the store.
//!
//! [`health`] holds the state machine (pure), [`icmp`] the echo, [`poller`] the loop,
//! [`events`] what each answer reveals (pure), [`overview`] each system at a glance (pure),
//! [`front_door`] the HTTP routes, [`gateway`] the store clients behind them.

pub mod balancer;
pub mod config;
pub mod events;
pub mod front_door;
pub mod gateway;
pub mod health;
pub mod icmp;
pub mod metrics;
pub mod overview;
pub mod poller;
