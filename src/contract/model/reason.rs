//! Every reason the operator writes into a Bottle condition or Event, in one catalogue, so
//! nothing emits a reason the README's troubleshooting table does not explain.

macro_rules! reasons {
    ($($(#[doc = $doc:literal])+ $name:ident,)+) => {
        /// A stable CamelCase reason for a condition or an Event.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Reason {
            $($(#[doc = $doc])+ $name,)+
        }

        impl Reason {
            /// Every reason, in catalogue order.
            pub const ALL: &[Reason] = &[$(Reason::$name,)+];

            /// The reason as Kubernetes shows it.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Reason::$name => stringify!($name),)+
                }
            }
        }
    };
}

reasons! {
    /// Every container of the Pod is ready.
    PodReady,
    /// The Pod was just created or is about to be.
    PodCreating,
    /// The Pod exists but a container is not ready (the message carries the kubelet's reason).
    PodNotReady,
    /// The Pod template changed; the old Pod is being replaced.
    PodReplacing,
    /// Event: a new Pod was created.
    PodCreated,
    /// `spec.paused`: the Pod is deleted (or being deleted); everything else is kept.
    Paused,
    /// `spec.lifetime.shutdownTime` passed: the bottle is paused, or (Event) its Bottle deleted.
    LifetimeEnded,
    /// Event: the ConfigMap changed and the sidecars reload it in place.
    ConfigUpdated,
    /// The rendered config is applied.
    Applied,
    /// A declared host or host pattern is not a valid DNS name.
    InvalidHost,
    /// A credProxy upstream is not a usable `https://` URL.
    InvalidUrl,
    /// An egress route path does not start with `/` or contains spaces.
    InvalidPath,
    /// A route name is not a DNS label.
    InvalidRouteName,
    /// An egress route host or a credProxy route name is declared twice.
    DuplicateRoute,
    /// A route's auth header name or scheme is malformed.
    InvalidAuth,
    /// A `secretKeyRef` has an empty name or key.
    InvalidSecretRef,
    /// A git remote's name is not a DNS label or repeats, its SSH URL is unusable, or it has
    /// no knownHosts.
    InvalidRemote,
    /// A DLP pattern lacks a name or regex, a pattern or scanAllowlist entry is not one
    /// safe line, or a scanAllowPaths entry is not a relative path glob.
    InvalidDlpPattern,
    /// `spec.agent.env` sets a variable the operator owns (proxy, CA, git or Anthropic settings).
    ReservedEnv,
    /// `spec.agent.workspace.size` is not a Kubernetes quantity.
    InvalidWorkspace,
    /// `spec.supervise.enabled`, but the operator knows no address at which bottle Pods
    /// reach the API server.
    SuperviseUnavailable,
    /// A Secret the Bottle references does not exist.
    SecretNotFound,
    /// A referenced Secret exists but lacks the key.
    SecretKeyMissing,
    /// An object the Bottle would own already exists and belongs to something else.
    NameConflict,
    /// The CA Secret exists but holds no usable certificate and key.
    CaInvalid,
    /// Generating the bottle CA failed.
    CaGenerationFailed,
    /// The Kubernetes API refused or failed a request.
    ApiError,
    /// Event: an AccessRequest of the bottle waits for a decision.
    AccessRequested,
    /// Event: an AccessRequest was approved; its grant is written into the Bottle.
    AccessApproved,
    /// Event: the sidecar config now carries an approved grant.
    AccessCarried,
    /// Event: the bottle's supervise sidecar saw egress enforce an approved grant.
    AccessApplied,
    /// Event: an AccessRequest was denied, by an approver or by the operator (an ask that
    /// cannot run, too many pending).
    AccessDenied,
    /// Event: an AccessRequest nobody decided in time, or a time-boxed grant that ran out.
    AccessExpired,
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::Reason;

    /// The README's troubleshooting table has one row per reason, and no row for a reason
    /// that no longer exists.
    #[test]
    fn readme_explains_every_reason() {
        let readme = include_str!("../../../README.md");
        let (_, table) = readme
            .split_once("\n## Troubleshooting")
            .expect("README has a Troubleshooting section");
        let rows: Vec<&str> = table
            .lines()
            .take_while(|l| !l.starts_with("## "))
            .filter_map(|l| l.strip_prefix("| `"))
            .filter_map(|l| l.split_once('`').map(|(name, _)| name))
            .collect();
        let missing: Vec<_> = Reason::ALL
            .iter()
            .map(|r| r.as_str())
            .filter(|r| !rows.contains(r))
            .collect();
        assert!(missing.is_empty(), "README does not explain {missing:?}");
        let stale: Vec<_> = rows
            .iter()
            .filter(|row| !Reason::ALL.iter().any(|r| r.as_str() == **row))
            .collect();
        assert!(
            stale.is_empty(),
            "README explains unknown reasons {stale:?}"
        );
    }
}
