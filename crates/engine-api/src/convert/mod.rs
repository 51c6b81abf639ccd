//! Between orch's objects and the Engine API's JSON (moby's field names).

pub mod objects;
pub mod service;
pub mod time;
