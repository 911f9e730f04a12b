pub mod colouring;
pub mod node;
