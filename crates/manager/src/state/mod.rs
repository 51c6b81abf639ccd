//! The replicated store.

pub mod store;
