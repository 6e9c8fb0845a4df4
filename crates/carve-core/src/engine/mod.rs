//! The volume engine: what carve knows and does about volumes, independent of
//! the CSI API that asks for it.

pub mod capacity;
pub mod copiers;
pub mod fill;
pub mod health;
pub mod inflight;
pub mod jobs;
pub mod pools;
pub mod state;
