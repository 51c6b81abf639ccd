//! Stacks: compose files read as `docker stack deploy` reads them (`compose`, into `model`),
//! turned into the cluster's objects (`convert`) and deployed (`deploy`).

pub mod compose;
pub mod convert;
pub mod deploy;
pub mod model;
