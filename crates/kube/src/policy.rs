//! A `PortPolicy` object as the standalone document it carries, and its validation by the
//! same rules as a file: what the agent applies and the controller reports on.

use kube::ResourceExt;
use portwarden_policy::Policy;
use portwarden_policy::validate::Issue;

use crate::crd::PortPolicy;

/// The standalone document of a `PortPolicy` object, for the one validator.
pub fn document(p: &PortPolicy) -> portwarden_policy::PortPolicy {
    portwarden_policy::PortPolicy {
        api_version: portwarden_policy::API_VERSION.to_string(),
        kind: "PortPolicy".to_string(),
        metadata: portwarden_policy::document::Metadata {
            name: p.name_any(),
            labels: p.labels().clone(),
        },
        spec: p.spec.0.clone(),
    }
}

/// Validates a `PortPolicy` object with the same rules as a file.
///
/// # Errors
///
/// Every semantic problem of the object.
pub fn validate(p: &PortPolicy) -> Result<Policy, Vec<Issue>> {
    portwarden_policy::validate::policy(&document(p))
}

/// Formats semantic issues as one line each: `spec.ports[0].ports: message (help)`.
pub fn issues_text(issues: &[Issue]) -> String {
    issues
        .iter()
        .map(|i| {
            let path: String = i.path.iter().map(ToString::to_string).collect();
            let path = path.trim_start_matches('.');
            match &i.help {
                Some(h) => format!("{path}: {} ({h})", i.message),
                None => format!("{path}: {}", i.message),
            }
        })
        .collect::<Vec<_>>()
        .join("; ")
}
