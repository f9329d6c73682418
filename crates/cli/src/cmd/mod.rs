//! One module per command; each has an `Args` (clap) and a `run(Args) -> Outcome`.

pub mod agent;
pub mod apply;
pub mod confirm;
pub mod controller;
pub mod crd;
pub mod explain;
pub mod plan;
pub mod reset;
pub mod rollback;
pub mod scan;
pub mod status;
pub mod validate;
pub mod verify;
