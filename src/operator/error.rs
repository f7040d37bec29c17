//! Reconcile errors. Each has a stable [`Reason`] that becomes the condition reason
//! and the Event reason, and a message that says what to do.

use crate::contract::model::{InvalidSpec, Reason};
use crate::operator::render::ca::CaError;

/// Why a reconcile did not complete.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The spec cannot be rendered.
    #[error(transparent)]
    InvalidSpec(#[from] InvalidSpec),
    /// A referenced Secret does not exist.
    #[error(
        "Secret {name} (referenced by the Bottle) does not exist in namespace {namespace}; create it"
    )]
    SecretNotFound {
        /// Namespace.
        namespace: String,
        /// Secret name.
        name: String,
    },
    /// A referenced Secret exists but lacks the key.
    #[error("Secret {name} has no key {key:?}; add it or fix the secretKeyRef")]
    SecretKeyMissing {
        /// Secret name.
        name: String,
        /// Missing key.
        key: String,
    },
    /// An object the Bottle would own already exists and belongs to something else.
    #[error(
        "{kind} {name} already exists and is not owned by this Bottle; rename the Bottle or remove the {kind}"
    )]
    NameConflict {
        /// Kind.
        kind: &'static str,
        /// Name.
        name: String,
    },
    /// The CA Secret exists but is unusable.
    #[error("CA Secret {name} is unusable ({why}); delete it and the operator makes a new CA")]
    CaInvalid {
        /// Secret name.
        name: String,
        /// What is wrong.
        why: String,
    },
    /// Making a CA failed.
    #[error(transparent)]
    Ca(#[from] CaError),
    /// The API server refused or failed a request.
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
}

impl Error {
    /// Stable condition/Event reason.
    pub fn reason(&self) -> Reason {
        match self {
            Error::InvalidSpec(e) => e.reason,
            Error::SecretNotFound { .. } => Reason::SecretNotFound,
            Error::SecretKeyMissing { .. } => Reason::SecretKeyMissing,
            Error::NameConflict { .. } => Reason::NameConflict,
            Error::CaInvalid { .. } => Reason::CaInvalid,
            Error::Ca(_) => Reason::CaGenerationFailed,
            Error::Kube(_) => Reason::ApiError,
        }
    }
}
