pub mod colouring;
pub mod config;
pub mod daemon;
pub mod links;
pub mod node;
pub mod state;

pub use config::ElectionConfig;
