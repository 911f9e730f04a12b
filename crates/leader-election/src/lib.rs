pub mod colouring;
pub mod config;
pub mod daemon;
pub mod links;
pub mod node;

pub use config::ElectionConfig;
