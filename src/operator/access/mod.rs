//! AccessRequests: reviewed with their Bottle's reconcile ([`review`]), written back as their
//! statuses and Events, and approved grants applied to the Bottle under a field manager of
//! their own, so the user's fields are never touched and taking a grant back removes exactly it.

pub mod review;

use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::runtime::events::{Event, EventType};
use kube::{Api, Resource, ResourceExt};
use serde_json::json;

use super::{Context, Error};
use crate::contract::api::{AccessPhase, AccessRequest, AccessRequestStatus, Bottle};
use crate::contract::model::Reason;
use review::{GRANTS_ANNOTATION, Review, grants_due, grants_patch};

/// The field manager of the grants in a Bottle's spec (and of request statuses): apart from
/// the operator's own objects, so nothing else it applies can take them back by omission.
pub const FIELD_MANAGER: &str = "bottle-operator-access";

/// The requests of a Bottle, reviewed; carried from before the Bottle converges to after.
pub struct Pending {
    requests: Vec<Arc<AccessRequest>>,
    review: Review,
}

impl Pending {
    /// The next moment a request or grant expires.
    pub fn wake_at(&self) -> Option<Timestamp> {
        self.review.wake_at
    }
}

/// What [`prepare`] did.
pub enum Prepared {
    /// The Bottle has no requests and never had a grant.
    Nothing,
    /// The grants in the spec changed: converge on the next pass, which the change triggers.
    SpecChanged(Pending),
    /// The spec carries every grant.
    Carried(Pending),
}

/// Reviews the Bottle's requests and applies their grants to it when they changed.
pub async fn prepare(bottle: &Bottle, ctx: &Context, now: Timestamp) -> Result<Prepared, Error> {
    let ns = bottle.namespace().unwrap_or_default();
    let name = bottle.name_any();
    let requests: Vec<Arc<AccessRequest>> = ctx
        .observed
        .access_requests
        .state()
        .into_iter()
        .filter(|r| r.namespace().as_deref() == Some(&ns) && r.spec.bottle == name)
        .filter_map(|r| ctx.observed.access_requests.get(&ns, &r.name_any()))
        .collect();
    if requests.is_empty() && !bottle.annotations().contains_key(GRANTS_ANNOTATION) {
        return Ok(Prepared::Nothing);
    }
    adopt(bottle, ctx, &requests).await?;
    let refs: Vec<&AccessRequest> = requests.iter().map(|r| &**r).collect();
    let review = review::review(bottle, &refs, ctx.access_limits, now);
    let (body, hash) = grants_patch(bottle, review.grants());
    let pending = Pending { requests, review };
    if !grants_due(bottle, &pending.review, &hash) {
        return Ok(Prepared::Carried(pending));
    }
    let api: Api<Bottle> = Api::namespaced(ctx.client.clone(), &ns);
    let params = PatchParams::apply(FIELD_MANAGER).force();
    // Not recorded as our write: its watch event must wake the Bottle to render it.
    api.patch(&name, &params, &Patch::Apply(&body)).await?;
    tracing::info!(bottle = %name, grants = pending.review.grants().count(), "applied access grants");
    Ok(Prepared::SpecChanged(pending))
}

/// Makes each request owned by its Bottle, so deleting the Bottle takes its requests along.
async fn adopt(
    bottle: &Bottle,
    ctx: &Context,
    requests: &[Arc<AccessRequest>],
) -> Result<(), Error> {
    let uid = bottle.uid().unwrap_or_default();
    for r in requests {
        if r.owner_references().iter().any(|o| o.uid == uid) {
            continue;
        }
        // A request that outlived an earlier Bottle of the name names that one: replace it.
        let mut owners: Vec<OwnerReference> = r
            .owner_references()
            .iter()
            .filter(|o| o.kind != "Bottle")
            .cloned()
            .collect();
        owners.push(OwnerReference {
            api_version: Bottle::api_version(&()).into(),
            kind: Bottle::kind(&()).into(),
            name: bottle.name_any(),
            uid: uid.clone(),
            controller: Some(true),
            block_owner_deletion: None,
        });
        let api: Api<AccessRequest> =
            Api::namespaced(ctx.client.clone(), &bottle.namespace().unwrap_or_default());
        let patch = json!({"metadata": {
            "ownerReferences": owners,
            "resourceVersion": r.resource_version(),
        }});
        match api
            .patch(
                &r.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
        {
            Ok(written) => {
                ctx.observed.access_requests.wrote(written);
            }
            // Changed meanwhile (or gone): its watch event brings the next pass.
            Err(kube::Error::Api(s)) if s.code == 409 || s.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Writes each request's status where it changed, with an Event on the request and on the
/// Bottle for every phase it enters. `config_hash` is the sidecar config version the Bottle
/// now runs when this pass converged with every grant carried.
pub async fn report(bottle: &Bottle, ctx: &Context, pending: Pending, config_hash: Option<&str>) {
    let ns = bottle.namespace().unwrap_or_default();
    let api: Api<AccessRequest> = Api::namespaced(ctx.client.clone(), &ns);
    let bottle_ref = bottle.object_ref(&());
    for reviewed in &pending.review.requests {
        let Some(old) = pending
            .requests
            .iter()
            .find(|r| r.name_any() == reviewed.name)
        else {
            continue;
        };
        let before = old.status.clone().unwrap_or_default();
        let mut status = reviewed.status.clone();
        if matches!(
            status.phase,
            Some(AccessPhase::Approved | AccessPhase::Applied)
        ) && status.config_version.is_none()
        {
            status.config_version = config_hash.map(str::to_string);
        }
        if status == before {
            continue;
        }
        let mut written = serde_json::to_value(&status).expect("statuses serialise");
        // supervise's field: not ours to own (its report stays when ours changes).
        if let Some(m) = written.as_object_mut() {
            m.remove("appliedAt");
        }
        let body = json!({
            "apiVersion": AccessRequest::api_version(&()),
            "kind": AccessRequest::kind(&()),
            "metadata": {"name": reviewed.name},
            "status": written,
        });
        let params = PatchParams::apply(FIELD_MANAGER).force();
        match api
            .patch_status(&reviewed.name, &params, &Patch::Apply(&body))
            .await
        {
            Ok(written) => {
                ctx.observed.access_requests.wrote(written);
            }
            Err(e) => {
                // The next pass (the resync at the latest) writes it again.
                tracing::warn!(request = %reviewed.name, error = %e, "could not write the access request status");
                continue;
            }
        }
        let request_ref = old.object_ref(&());
        for (reason, note) in events(bottle, old, &before, &status) {
            // Each names the other as related: Events on the Bottle stay one series per
            // request (the recorder merges Events of the same reason and related object).
            for (regarding, related) in [(&request_ref, &bottle_ref), (&bottle_ref, &request_ref)] {
                let ev = Event {
                    type_: if reason == Reason::AccessDenied || reason == Reason::AccessExpired {
                        EventType::Warning
                    } else {
                        EventType::Normal
                    },
                    reason: reason.as_str().into(),
                    note: Some(note.clone()),
                    action: "ReviewAccess".into(),
                    secondary: Some(related.clone()),
                };
                if let Err(e) = ctx.recorder.publish(&ev, regarding).await {
                    tracing::warn!(error = %e, "could not publish Event");
                }
            }
        }
    }
}

/// The Events a status change makes: one per phase entered, and one when the sidecar config
/// first carries an approval.
pub fn events(
    bottle: &Bottle,
    request: &AccessRequest,
    before: &AccessRequestStatus,
    after: &AccessRequestStatus,
) -> Vec<(Reason, String)> {
    let host = after.host.clone().unwrap_or_default();
    let by = after.decided_by.clone().unwrap_or_default();
    let why = after.message.clone().unwrap_or_default();
    let b = bottle.name_any();
    let asked = &request.spec.reason;
    let request = request.name_any();
    let mut out = Vec::new();
    if before.phase != after.phase {
        out.push(match after.phase.unwrap_or_default() {
            AccessPhase::Pending => (
                Reason::AccessRequested,
                format!("{request}: Bottle {b} asks for {host}: {asked}"),
            ),
            AccessPhase::Approved => (
                Reason::AccessApproved,
                format!("{request}: {by} approved {host} for Bottle {b}"),
            ),
            AccessPhase::Denied => (
                Reason::AccessDenied,
                format!("{request}: {host} for Bottle {b} denied by {by}: {why}"),
            ),
            AccessPhase::Expired => (
                Reason::AccessExpired,
                format!("{request}: {host} for Bottle {b}: {why}"),
            ),
            AccessPhase::Applied => (
                Reason::AccessApplied,
                format!(
                    "{request}: {host} is in force in Bottle {b}'s egress (its supervise sidecar saw it)"
                ),
            ),
        });
    }
    if before.config_version.is_none()
        && let Some(v) = &after.config_version
        && matches!(
            after.phase,
            Some(AccessPhase::Approved | AccessPhase::Applied)
        )
    {
        out.push((
            Reason::AccessCarried,
            format!("{request}: {host} is in Bottle {b}'s sidecar config {v}"),
        ));
    }
    out
}
