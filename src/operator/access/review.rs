//! Pure: what each AccessRequest of a Bottle should say, and which grants the Bottle carries.
//! Decided from the requests, the Bottle's spec and one clock, so a pass over the same inputs
//! writes nothing new (every timestamp is carried over while its phase stands).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::ResourceExt;
use serde_json::{Value, json};

use crate::contract::api::{AccessPhase, AccessRequest, AccessRequestStatus, Bottle, Verdict};
use crate::contract::model::Policy;
use crate::contract::model::access::Ask;

/// How long requests wait and how many may: the operator's `--access-pending-seconds` and
/// `--access-max-pending`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// How long a request waits for a decision before it expires.
    pub pending_for: Duration,
    /// How many requests of one Bottle may wait at once; more are denied at once.
    pub max_pending: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            pending_for: Duration::from_secs(3600),
            max_pending: 5,
        }
    }
}
/// Who `status.decidedBy` names when the operator itself refused.
pub const OPERATOR: &str = "bottle-operator";
/// The annotation on a Bottle holding the hash of the grants last applied to it.
pub const GRANTS_ANNOTATION: &str = "bottle-operator.dev/access-grants";

/// One request's outcome.
#[derive(Debug, Clone, PartialEq)]
pub struct Reviewed {
    /// The request's name.
    pub name: String,
    /// The status it should carry.
    pub status: AccessRequestStatus,
    /// What the Bottle carries for it, while approved.
    pub grant: Option<Ask>,
}

/// Every request of one Bottle, reviewed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Review {
    /// In the order they were filed.
    pub requests: Vec<Reviewed>,
    /// The next moment something expires, when one is ahead.
    pub wake_at: Option<Timestamp>,
}

impl Review {
    /// The approved grants, in filing order.
    pub fn grants(&self) -> impl Iterator<Item = &Ask> {
        self.requests.iter().filter_map(|r| r.grant.as_ref())
    }
}

fn at(t: Timestamp) -> Time {
    // Whole seconds: the API server stores metav1.Time so, and a finer copy would differ from
    // what it hands back, rewriting the status every pass.
    Time(Timestamp::from_second(t.as_second()).expect("a timestamp in range"))
}

fn after(t: Timestamp, d: Duration) -> Timestamp {
    t.saturating_add(SignedDuration::try_from(d).unwrap_or(SignedDuration::MAX))
        .expect("saturating")
}

/// Reviews `requests` (those naming `bottle`) at `now`.
pub fn review(
    bottle: &Bottle,
    requests: &[&AccessRequest],
    limits: Limits,
    now: Timestamp,
) -> Review {
    // Filing order, except that what already waits keeps its place under the cap: creation
    // times have whole seconds, so a newer request can sort before an older one.
    let mut sorted: Vec<&AccessRequest> = requests.to_vec();
    sorted.sort_by_key(|r| {
        let waiting = r.status.as_ref().and_then(|s| s.phase) == Some(AccessPhase::Pending);
        (
            !waiting,
            r.metadata.creation_timestamp.clone().map(|t| t.0),
            r.name_any(),
        )
    });
    // Each approval is tried on top of the spec with the earlier ones: one that would make
    // the Bottle unrunnable is refused, not written. A spec the user already broke cannot
    // tell, so then approvals are carried as they are.
    let mut candidate = bottle.spec.clone();
    let base_valid = Policy::from_spec(&candidate).is_ok();
    let mut pending = 0;
    let mut out = Review::default();
    for r in sorted {
        let old = r.status.clone().unwrap_or_default();
        let mut wake = |t: Timestamp| {
            out.wake_at = Some(out.wake_at.map_or(t, |w: Timestamp| w.min(t)));
        };
        // Keeps the old decision time while the phase stands.
        let stamp = |phase: AccessPhase| {
            if old.phase == Some(phase) {
                old.decided_at.clone().or(Some(at(now)))
            } else {
                Some(at(now))
            }
        };
        let host = r
            .spec
            .route
            .as_ref()
            .map(|x| x.host.clone())
            .or_else(|| r.spec.allow_host.clone());
        let refuse = |message: String| AccessRequestStatus {
            phase: Some(AccessPhase::Denied),
            host: host.clone(),
            decided_by: Some(OPERATOR.into()),
            decided_at: stamp(AccessPhase::Denied),
            message: Some(message),
            ..Default::default()
        };
        let mut grant = None;
        let operator_refused =
            old.phase == Some(AccessPhase::Denied) && old.decided_by.as_deref() == Some(OPERATOR);
        let status = match &r.spec.decision {
            // The operator's refusals are final, even against an approval that raced them.
            _ if operator_refused => old.clone(),
            Some(d) if d.verdict == Verdict::Deny => AccessRequestStatus {
                phase: Some(AccessPhase::Denied),
                host: host.clone(),
                decided_by: Some(d.decided_by.clone()),
                decided_at: stamp(AccessPhase::Denied),
                message: Some(
                    d.reason
                        .clone()
                        .unwrap_or_else(|| format!("denied by {}", d.decided_by)),
                ),
                ..Default::default()
            },
            Some(d) => match Ask::of(&r.spec, d.paths.as_deref()) {
                Err(e) => refuse(format!("approved, but it cannot be carried: {e}")),
                Ok(ask) => {
                    // A grant's clock starts when the operator first saw the approval.
                    let decided_at = match old.phase {
                        Some(
                            AccessPhase::Approved | AccessPhase::Applied | AccessPhase::Expired,
                        ) => old.decided_at.clone().unwrap_or(at(now)),
                        _ => at(now),
                    };
                    let ends = d
                        .for_seconds
                        .map(|s| after(decided_at.0, Duration::from_secs(s.into())));
                    let mut trial = candidate.clone();
                    ask.add_to(&mut trial);
                    match (ends, base_valid.then(|| Policy::from_spec(&trial))) {
                        (Some(end), _) if end <= now => AccessRequestStatus {
                            phase: Some(AccessPhase::Expired),
                            host: Some(ask.host()),
                            decided_by: Some(d.decided_by.clone()),
                            decided_at: Some(decided_at),
                            expires_at: Some(at(end)),
                            config_version: old.config_version.clone(),
                            message: Some(format!(
                                "the grant ended at {} and was removed",
                                at(end).0
                            )),
                            applied_at: old.applied_at.clone(),
                        },
                        (_, Some(Err(e))) => refuse(format!(
                            "approved, but the Bottle could not run with it: {e}"
                        )),
                        (ends, _) => {
                            if let Some(end) = ends {
                                wake(end);
                            }
                            candidate = trial;
                            let status =
                                AccessRequestStatus {
                                    // supervise's report, the one field it writes, makes
                                    // an approval Applied.
                                    phase: Some(match old.applied_at {
                                        Some(_) => AccessPhase::Applied,
                                        None => AccessPhase::Approved,
                                    }),
                                    host: Some(ask.host()),
                                    decided_by: Some(d.decided_by.clone()),
                                    decided_at: Some(decided_at),
                                    expires_at: ends.map(at),
                                    config_version: old.config_version.clone(),
                                    message: Some(d.reason.clone().unwrap_or_else(|| {
                                        format!("approved by {}", d.decided_by)
                                    })),
                                    applied_at: old.applied_at.clone(),
                                };
                            grant = Some(ask);
                            status
                        }
                    }
                }
            },
            // Expiries are final too.
            None if old.phase == Some(AccessPhase::Expired) => old.clone(),
            None => match Ask::of(&r.spec, None) {
                Err(e) => refuse(e.to_string()),
                Ok(ask) => {
                    let filed = r.metadata.creation_timestamp.as_ref().map_or(now, |t| t.0);
                    let expires = after(filed, limits.pending_for);
                    if expires <= now {
                        AccessRequestStatus {
                            phase: Some(AccessPhase::Expired),
                            host: Some(ask.host()),
                            decided_by: Some(OPERATOR.into()),
                            decided_at: stamp(AccessPhase::Expired),
                            expires_at: Some(at(expires)),
                            message: Some(format!(
                                "nobody decided within {} s; file a new request",
                                limits.pending_for.as_secs()
                            )),
                            ..Default::default()
                        }
                    } else {
                        pending += 1;
                        if pending > limits.max_pending {
                            refuse(format!(
                                "{} requests of Bottle {} already wait for a decision; wait for one of them, or delete one",
                                limits.max_pending,
                                bottle.name_any()
                            ))
                        } else {
                            wake(expires);
                            AccessRequestStatus {
                                phase: Some(AccessPhase::Pending),
                                host: Some(ask.host()),
                                expires_at: Some(at(expires)),
                                message: Some("waiting for a decision".into()),
                                ..Default::default()
                            }
                        }
                    }
                }
            },
        };
        out.requests.push(Reviewed {
            name: r.name_any(),
            status,
            grant,
        });
    }
    out
}

/// The server-side apply body of the operator's grants on `bottle`: the routes and allowed
/// hosts of every approved ask (an open route of the user's is left alone), and the hash of
/// that set in [`GRANTS_ANNOTATION`]. Applying an empty set takes back every earlier grant.
pub fn grants_patch<'a>(bottle: &Bottle, grants: impl Iterator<Item = &'a Ask>) -> (Value, String) {
    let mut routes: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut allow: BTreeSet<String> = BTreeSet::new();
    for g in grants {
        if g.covered_by(&bottle.spec) {
            continue;
        }
        match g {
            Ask::Allow(p) => {
                allow.insert(p.to_string());
            }
            Ask::Route { host, paths } => {
                routes
                    .entry(host.to_string())
                    .or_default()
                    .extend(paths.iter().cloned());
            }
        }
    }
    let routes: Vec<Value> = routes
        .into_iter()
        .map(|(host, paths)| json!({"host": host, "paths": paths}))
        .collect();
    let hash = crate::operator::render::hash_of(&(&routes, &allow));
    let mut egress = serde_json::Map::new();
    if !allow.is_empty() {
        egress.insert("allow".into(), json!(allow));
    }
    if !routes.is_empty() {
        egress.insert("routes".into(), json!(routes));
    }
    let body = json!({
        "apiVersion": "bottle-operator.dev/v1alpha1",
        "kind": "Bottle",
        "metadata": {
            "name": bottle.name_any(),
            "annotations": {GRANTS_ANNOTATION: hash},
        },
        "spec": if egress.is_empty() { json!({}) } else { json!({"egress": egress}) },
    });
    (body, hash)
}

/// Whether the grants must be applied: their set changed since the last apply, or the spec
/// lost one (a client-side `kubectl apply` replaces a changed list whole).
pub fn grants_due(bottle: &Bottle, review: &Review, hash: &str) -> bool {
    let applied = bottle.annotations().get(GRANTS_ANNOTATION);
    match applied {
        None => review.grants().next().is_some(),
        Some(h) => h != hash || !review.grants().all(|g| g.carried_by(&bottle.spec)),
    }
}

#[cfg(test)]
mod tests;
