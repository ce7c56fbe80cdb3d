//! The supervisor's side of privilege separation: it starts the front
//! door as its own confined process, keeps it running, and answers it
//! ([`front_door`]); the uid it runs as ([`front_ids`]).

pub mod front_door;
pub mod front_ids;
