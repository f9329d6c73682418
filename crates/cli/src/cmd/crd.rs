//! `portwarden crd`: print the CustomResourceDefinitions (PortPolicy, PortReport) as YAML,
//! generated from the Rust types; the Helm chart ships the same text.

use std::process::ExitCode;

use crate::Outcome;

/// Arguments of `crd`.
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Example (install the CRDs into the current cluster):\n  portwarden crd | kubectl apply --server-side -f -"
)]
pub struct Args {}

pub fn run(_: Args) -> Outcome {
    print!("{}", portwarden_kube::crds_yaml()?);
    Ok(ExitCode::SUCCESS)
}
