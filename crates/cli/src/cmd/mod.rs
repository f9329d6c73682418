//! One module per command; each has an `Args` (clap) and a `run(Args) -> Outcome`.

pub mod explain;
pub mod scan;
pub mod validate;
