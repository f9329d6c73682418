//! The crate's error type: each variant names the step that failed.

/// What went wrong, and where.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A CRD could not be turned into JSON (a bug in the types).
    #[error("failed to serialize a CustomResourceDefinition: {0}")]
    SerializeCrd(#[source] serde_json::Error),
    /// A CRD could not be turned into YAML.
    #[error("failed to write a CustomResourceDefinition as YAML: {0}")]
    SerializeCrdYaml(String),
    /// No Kubernetes client could be configured (no kubeconfig, no in-cluster service account).
    #[error("failed to configure a Kubernetes client: {0}")]
    Client(#[source] kube::Error),
    /// Writing a node's PortReport failed.
    #[error("failed to apply PortReport {name}: {source}")]
    ApplyReport {
        /// The report's name (the node's).
        name: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// Writing a policy's status failed.
    #[error("failed to patch the status of PortPolicy {name}: {source}")]
    PatchStatus {
        /// The policy's name.
        name: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// The leader election could not start.
    #[error("failed to start leader election on Lease {namespace}/{name}: {source}")]
    LeaderElection {
        /// The Lease's namespace.
        namespace: String,
        /// The Lease's name.
        name: String,
        /// The lease manager's error.
        #[source]
        source: kube_lease_manager::LeaseManagerError,
    },
    /// The HTTP endpoint could not be bound or served.
    #[error("failed to serve HTTP on {addr}: {source}")]
    Serve {
        /// The address.
        addr: std::net::SocketAddr,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The agent's reconcile thread or runtime could not start.
    #[error("failed to start the agent: {0}")]
    Start(#[source] std::io::Error),
}
