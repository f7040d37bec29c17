//! One reconcile of one Bottle: validate everything first, then apply in dependency order
//! (CA, ConfigMap, NetworkPolicies, workspace, supervise identity, Pod), then report.
//! Nothing is applied for a spec that fails validation, so a bad edit leaves the running
//! bottle as it was. What exists is read from the watch stores ([`super::observed`]), never
//! fetched, and only what differs from it is written: a converged Bottle costs no API call.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Pod, Secret};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{DeleteParams, Preconditions};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::runtime::reflector::ObjectRef;
use kube::{Api, Resource, ResourceExt};

use super::access::{self, Prepared};
use super::apply::{apply, apply_if_changed, controlled_by, create_once};
use super::observed::{Known, owned, strip};
use super::{Context, Error, status};
use crate::contract::api::{Bottle, ShutdownPolicy};
use crate::contract::config::layout;
use crate::contract::model::{Policy, Reason};
use crate::operator::render::{self, ca, meta};

/// What happened to the Pod in this reconcile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PodChange {
    /// The Pod matches the desired template.
    Unchanged,
    /// A Pod was created.
    Created,
    /// The old Pod was deleted because its template changed; a new one follows.
    Replacing,
    /// The old Pod is still terminating.
    Terminating,
    /// Paused: the Pod was deleted in this pass.
    Pausing,
    /// Paused: the Pod is still terminating.
    Stopping,
    /// Paused, and no Pod is left.
    Stopped,
}

/// The result of a successful convergence.
#[derive(Debug, Clone)]
pub struct Converged {
    /// Hash of the applied sidecar configs.
    pub config_hash: String,
    /// Fingerprint of the bottle CA.
    pub ca_fingerprint: String,
    /// What happened to the Pod.
    pub pod: PodChange,
}

/// What to do about the bottle's Pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PodStep {
    /// No Pod: create it.
    Create,
    /// The Pod is terminating: wait for it to go before creating the next.
    WaitTerminating,
    /// The Pod runs the desired template: leave it alone.
    Keep,
    /// The Pod runs another template: delete it (the next pass creates the new one).
    Replace,
    /// The Bottle is paused and its Pod still runs: delete it.
    Stop,
    /// The Bottle is paused and has no Pod: nothing to do.
    StayStopped,
}

/// Decides from the Pod that exists (ours, or none), the desired template hash and whether
/// the Bottle is paused. A Pod without the hash annotation was made by an older operator and
/// counts as changed.
pub fn pod_step(existing: Option<&Pod>, desired_hash: &str, paused: bool) -> PodStep {
    match existing {
        None if paused => PodStep::StayStopped,
        None => PodStep::Create,
        Some(p) if paused && p.meta().deletion_timestamp.is_none() => PodStep::Stop,
        Some(p) if p.meta().deletion_timestamp.is_some() => PodStep::WaitTerminating,
        Some(p)
            if p.annotations()
                .get(meta::TEMPLATE_HASH_ANNOTATION)
                .map(String::as_str)
                == Some(desired_hash) =>
        {
            PodStep::Keep
        }
        Some(_) => PodStep::Replace,
    }
}

/// Reconciles one Bottle.
pub async fn reconcile(bottle: Arc<Bottle>, ctx: Arc<Context>) -> Result<Action, Error> {
    ctx.observed.ready().await;
    // The controller hands over its store's copy; our own last status write may be newer.
    let ns = bottle.namespace().unwrap_or_default();
    let bottle = ctx
        .observed
        .bottles
        .get(&ns, &bottle.name_any())
        .unwrap_or(bottle);
    if bottle.meta().deletion_timestamp.is_some() {
        // Owner references hand the cleanup to the garbage collector.
        return Ok(Action::await_change());
    }
    // One clock for the whole pass: what converge decides and what status says agree.
    let now = k8s_openapi::jiff::Timestamp::now();
    if bottle.spec.shutdown_due(now) == Some(ShutdownPolicy::Delete) {
        return delete_at_end_of_life(&bottle, &ctx).await;
    }
    let started = std::time::Instant::now();
    // Access grants go into the spec first; a pass that changed them renders on the next
    // one, which that change triggers. Failing to review them must not hold the bottle back.
    let (access, access_error) = match access::prepare(&bottle, &ctx, now).await {
        Ok(Prepared::SpecChanged(pending)) => {
            access::report(&bottle, &ctx, pending, None).await;
            return Ok(Action::requeue(Duration::from_secs(1)));
        }
        Ok(Prepared::Carried(pending)) => (Some(pending), None),
        Ok(Prepared::Nothing) => (None, None),
        Err(e) => {
            tracing::warn!(bottle = %bottle.name_any(), error = %e, "could not review access requests");
            (None, Some(e))
        }
    };
    let outcome = converge(&bottle, &ctx, now).await;
    // The Pod as this pass left it; read it again only when the pass failed before looking.
    let (outcome, pod) = match outcome {
        Ok((c, pod)) => (Ok(c), pod),
        Err(e) => {
            let uid = bottle.uid().unwrap_or_default();
            let pod = ctx
                .observed
                .pods
                .get(&ns, &meta::pod_name(&bottle))
                .filter(|p| controlled_by(&**p, &uid));
            (Err(e), pod)
        }
    };

    let reference = bottle.object_ref(&());
    match &outcome {
        Ok(c) => {
            let old = bottle.status.as_ref();
            let old_hash = old.and_then(|s| s.config_hash.as_deref());
            if old_hash.is_some_and(|h| h != c.config_hash) && c.pod == PodChange::Unchanged {
                let note = format!(
                    "sidecar config {} applied; the Pod keeps running",
                    c.config_hash
                );
                publish(
                    &ctx,
                    &reference,
                    EventType::Normal,
                    Reason::ConfigUpdated,
                    "UpdateConfig",
                    note,
                )
                .await;
            }
            match c.pod {
                PodChange::Created => {
                    let note = format!("created Pod {}", meta::pod_name(&bottle));
                    publish(
                        &ctx,
                        &reference,
                        EventType::Normal,
                        Reason::PodCreated,
                        "CreatePod",
                        note,
                    )
                    .await;
                }
                PodChange::Replacing => {
                    let note = "the Pod template changed; deleting the old Pod to start a new one"
                        .to_string();
                    publish(
                        &ctx,
                        &reference,
                        EventType::Normal,
                        Reason::PodReplacing,
                        "ReplacePod",
                        note,
                    )
                    .await;
                }
                PodChange::Pausing => {
                    let (reason, why) = match bottle.spec.stopped_by_lifetime(now) {
                        Some(at) => (
                            Reason::LifetimeEnded,
                            format!("spec.lifetime.shutdownTime {at} passed"),
                        ),
                        None => (Reason::Paused, "paused".to_string()),
                    };
                    let note = format!(
                        "{why}: deleted Pod {}; the CA, config, workspace and NetworkPolicies are kept",
                        meta::pod_name(&bottle)
                    );
                    publish(
                        &ctx,
                        &reference,
                        EventType::Normal,
                        reason,
                        "PausePod",
                        note,
                    )
                    .await;
                }
                PodChange::Unchanged
                | PodChange::Terminating
                | PodChange::Stopping
                | PodChange::Stopped => {}
            }
        }
        Err(e) => {
            publish(
                &ctx,
                &reference,
                EventType::Warning,
                e.reason(),
                "Reconcile",
                e.to_string(),
            )
            .await;
        }
    }

    let new_status = status::desired(&bottle, &outcome, pod.as_deref(), now);
    if let Some(written) = status::patch_if_changed(&ctx.client, &bottle, new_status).await? {
        ctx.observed.bottles.wrote(written);
    }
    // After the Bottle's own status: a request never names a config version the Bottle does
    // not report yet.
    let wake_at = access.as_ref().and_then(|a| a.wake_at());
    if let Some(pending) = access {
        let carried = outcome.as_ref().ok().map(|c| c.config_hash.as_str());
        access::report(&bottle, &ctx, pending, carried).await;
    }

    ctx.telemetry.count(
        outcome
            .as_ref()
            .map(|_| "ok")
            .unwrap_or_else(|e| e.reason().as_str()),
        started.elapsed(),
    );
    let c = outcome?;
    if let Some(e) = access_error {
        return Err(e);
    }
    ctx.succeeded(&ObjectRef::from_obj(&*bottle));
    Ok(match c.pod {
        PodChange::Replacing
        | PodChange::Terminating
        | PodChange::Pausing
        | PodChange::Stopping => Action::requeue(Duration::from_secs(2)),
        // Periodic resync catches drift the watches cannot see; a shutdown time ahead
        // wakes the Bottle when it comes.
        PodChange::Created | PodChange::Unchanged | PodChange::Stopped => {
            let until = |t: k8s_openapi::jiff::Timestamp| {
                Duration::try_from(t.duration_since(now))
                    .ok()
                    .filter(|d| !d.is_zero())
            };
            let shutdown = bottle
                .spec
                .lifetime
                .as_ref()
                .and_then(|l| until(l.shutdown_time.0));
            // An access request or grant that expires wakes it too.
            let next = [shutdown, wake_at.and_then(until)]
                .into_iter()
                .flatten()
                .min();
            Action::requeue(next.map_or(ctx.resync, |d| {
                ctx.resync.min(d + Duration::from_millis(100))
            }))
        }
    })
}

/// `spec.lifetime` with `shutdownPolicy: Delete` has come: an Event (it outlives the Bottle),
/// then the Bottle is deleted; owner references take everything it owns with it.
async fn delete_at_end_of_life(bottle: &Bottle, ctx: &Context) -> Result<Action, Error> {
    let when = bottle
        .spec
        .lifetime
        .as_ref()
        .map(|l| l.shutdown_time.0.to_string())
        .unwrap_or_default();
    let note = format!(
        "spec.lifetime.shutdownTime {when} passed (shutdownPolicy Delete): deleting the Bottle and everything it owns"
    );
    let reference = bottle.object_ref(&());
    publish(
        ctx,
        &reference,
        EventType::Normal,
        Reason::LifetimeEnded,
        "DeleteBottle",
        note,
    )
    .await;
    let api: Api<Bottle> =
        Api::namespaced(ctx.client.clone(), &bottle.namespace().unwrap_or_default());
    let dp = DeleteParams {
        preconditions: Some(Preconditions {
            uid: bottle.uid(),
            resource_version: None,
        }),
        ..Default::default()
    };
    match api.delete(&bottle.name_any(), &dp).await {
        Ok(_) => Ok(Action::await_change()),
        // Gone already, or a new Bottle of that name: nothing of this one is left to delete.
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(Action::await_change()),
        Err(e) => Err(e.into()),
    }
}

/// Deletes the Pod `p` (that one: a uid precondition). Already gone, or replaced by someone
/// else, is no error: the next pass sorts it out.
async fn delete_pod(pods: &Api<Pod>, p: &Pod) -> Result<(), Error> {
    let dp = DeleteParams {
        preconditions: Some(Preconditions {
            uid: p.uid(),
            resource_version: None,
        }),
        ..Default::default()
    };
    match pods.delete(&p.name_any(), &dp).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Backoff per Bottle; the error was already reported by `reconcile`.
pub fn error_policy(bottle: Arc<Bottle>, err: &Error, ctx: Arc<Context>) -> Action {
    let delay = ctx.backoff(&ObjectRef::from_obj(&*bottle));
    tracing::warn!(bottle = %bottle.name_any(), reason = err.reason().as_str(), error = %err, retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

async fn publish(
    ctx: &Context,
    reference: &k8s_openapi::api::core::v1::ObjectReference,
    type_: EventType,
    reason: Reason,
    action: &str,
    note: String,
) {
    let ev = Event {
        type_,
        reason: reason.as_str().into(),
        note: Some(note),
        action: action.into(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&ev, reference).await {
        tracing::warn!(error = %e, "could not publish Event");
    }
}

/// Checks every referenced Secret key exists, before anything is applied.
fn check_secrets(secrets: &Known<Secret>, ns: &str, policy: &Policy) -> Result<(), Error> {
    for k in policy.secret_keys() {
        let Some(s) = secrets.get(ns, &k.secret) else {
            return Err(Error::SecretNotFound {
                namespace: ns.into(),
                name: k.secret,
            });
        };
        let has = s.data.as_ref().is_some_and(|d| d.contains_key(&k.key))
            || s.string_data
                .as_ref()
                .is_some_and(|d| d.contains_key(&k.key));
        if !has {
            return Err(Error::SecretKeyMissing {
                name: k.secret,
                key: k.key,
            });
        }
    }
    Ok(())
}

/// The fingerprint of the CA in Secret `name`, or why it is unusable.
fn fingerprint_of(name: &str, secret: &Secret) -> Result<String, Error> {
    let invalid = |why: String| Error::CaInvalid {
        name: name.to_string(),
        why,
    };
    let data = secret.data.as_ref();
    if !data.is_some_and(|d| d.contains_key(layout::CA_KEY_FILE)) {
        return Err(invalid(format!("no {} key", layout::CA_KEY_FILE)));
    }
    let cert = data
        .and_then(|d| d.get(layout::CA_CERT_FILE))
        .map(|b| String::from_utf8_lossy(&b.0).into_owned())
        .ok_or_else(|| invalid(format!("no {} key", layout::CA_CERT_FILE)))?;
    ca::fingerprint(&cert).map_err(|e| invalid(e.to_string()))
}

/// Creates the CA Secret from `material`; returns the CA Secret as stored, which is someone
/// else's CA when another creator (a replica, a restarted operator) won the race.
async fn create_ca(
    api: &Api<Secret>,
    known: &Known<Secret>,
    bottle: &Bottle,
    uid: &str,
    material: &ca::CaMaterial,
) -> Result<Arc<Secret>, Error> {
    let (mut s, _) = create_once(api, &ca::secret(bottle, material)).await?;
    if !controlled_by(&s, uid) {
        return Err(Error::NameConflict {
            kind: "Secret",
            name: meta::ca_secret_name(bottle),
        });
    }
    strip(&mut s);
    Ok(known.wrote(s))
}

/// Applies what differs from the stores; returns what happened and the Pod as it now stands.
async fn converge(
    bottle: &Bottle,
    ctx: &Context,
    now: k8s_openapi::jiff::Timestamp,
) -> Result<(Converged, Option<Arc<Pod>>), Error> {
    let client = &ctx.client;
    let o = &ctx.observed;
    let ns = bottle.namespace().unwrap_or_default();
    let uid = bottle.uid().unwrap_or_default();

    // 1. Validate everything that needs no writes: nothing at all is written for a spec
    //    that fails here (not even the CA); only a pause still takes the Pod away, as it
    //    needs nothing of the spec.
    let policy = match render::validate(bottle, &ctx.settings) {
        Ok(p) => p,
        Err(e) => {
            if bottle.spec.stopped(now) {
                let pod = owned(&o.pods, None, &ns, &meta::pod_name(bottle), &uid)?;
                if let Some(p) = pod.filter(|p| p.meta().deletion_timestamp.is_none()) {
                    delete_pod(&Api::namespaced(client.clone(), &ns), &p).await?;
                }
            }
            return Err(e.into());
        }
    };
    check_secrets(&o.secrets, &ns, &policy)?;
    let stored_config = owned(
        &o.config_maps,
        Some(&o.other_config_maps),
        &ns,
        &meta::config_map_name(bottle),
        &uid,
    )?;
    let mut stored_policies = Vec::new();
    for name in [
        meta::internal_policy_name(bottle),
        meta::egress_policy_name(bottle),
    ] {
        let stored = owned(
            &o.network_policies,
            Some(&o.other_network_policies),
            &ns,
            &name,
            &uid,
        )?;
        stored_policies.push((name, stored));
    }
    let existing_claim = match &bottle.spec.agent.workspace {
        Some(_) => owned(
            &o.claims,
            Some(&o.other_claims),
            &ns,
            &meta::workspace_name(bottle),
            &uid,
        )?,
        None => None,
    };
    let existing_pod = owned(
        &o.pods,
        Some(&o.other_pods),
        &ns,
        &meta::pod_name(bottle),
        &uid,
    )?;

    // 2. The Pod's template hash includes the CA's fingerprint: read it, or make the CA
    //    here (it is written with the config below).
    let ca_name = meta::ca_secret_name(bottle);
    let stored_ca = owned(&o.secrets, None, &ns, &ca_name, &uid)?;
    let new_ca = match &stored_ca {
        Some(_) => None,
        None => Some(ca::generate(&ns, &bottle.name_any())?),
    };
    let mut ca_fingerprint = match (&stored_ca, &new_ca) {
        (Some(s), _) => fingerprint_of(&ca_name, s)?,
        (None, Some(m)) => fingerprint_of(&ca_name, &ca::secret(bottle, m))?,
        (None, None) => unreachable!("a CA is either stored or made"),
    };
    let mut desired = render::desired(bottle, policy, &ctx.settings, &ca_fingerprint);

    // 3. The CA, config and fences side by side (none needs another), all before the Pod
    //    that mounts them.
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    let policies: Api<NetworkPolicy> = Api::namespaced(client.clone(), &ns);
    let make_ca = async {
        match &new_ca {
            Some(m) => create_ca(&secrets, &o.secrets, bottle, &uid, m)
                .await
                .map(Some),
            None => Ok(None),
        }
    };
    let config = apply_if_changed(
        &config_maps,
        &o.config_maps,
        stored_config.as_ref(),
        desired.config_map.clone(),
    );
    let fences = futures::future::try_join_all(desired.network_policies.iter().map(|np| {
        let stored = stored_policies
            .iter()
            .find(|(name, _)| *name == np.name_any())
            .and_then(|(_, s)| s.as_ref());
        apply_if_changed(&policies, &o.network_policies, stored, np.clone())
    }));
    let (made_ca, _, _) = futures::try_join!(make_ca, config, fences)?;
    if let Some(s) = made_ca {
        // Someone else made it first: the Pod must trust their CA, not the one made here.
        let theirs = fingerprint_of(&ca_name, &s)?;
        if theirs != ca_fingerprint {
            ca_fingerprint = theirs;
            desired = render::desired(
                bottle,
                desired.policy.clone(),
                &ctx.settings,
                &ca_fingerprint,
            );
        }
    }
    if let (Some(claim), None) = (&desired.workspace, existing_claim) {
        // Claims are immutable once bound; made once, never rewritten.
        let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &ns);
        let (mut made, _) = create_once(&claims, claim).await?;
        strip(&mut made);
        o.claims.wrote(made);
    }

    // 4. A supervised Bottle's ServiceAccount and its rights, before the Pod running as it.
    super::identity::converge(bottle, ctx, desired.identity.as_ref()).await?;

    // 5. The Pod: created when missing, replaced when its template changed.
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let stopped = bottle.spec.stopped(now);
    let step = pod_step(existing_pod.as_deref(), &desired.template_hash, stopped);
    let (pod, pod_object) = match step {
        PodStep::Create => {
            let mut made = apply(&pods, &desired.pod).await?;
            strip(&mut made);
            (PodChange::Created, Some(o.pods.wrote(made)))
        }
        PodStep::WaitTerminating if stopped => (PodChange::Stopping, existing_pod),
        PodStep::WaitTerminating => (PodChange::Terminating, existing_pod),
        PodStep::Keep => (PodChange::Unchanged, existing_pod),
        PodStep::StayStopped => (PodChange::Stopped, None),
        PodStep::Replace | PodStep::Stop => {
            let p = existing_pod.expect("replace and stop need a Pod");
            delete_pod(&pods, &p).await?;
            let change = if step == PodStep::Stop {
                PodChange::Pausing
            } else {
                PodChange::Replacing
            };
            (change, Some(p))
        }
    };
    Ok((
        Converged {
            config_hash: desired.config_hash,
            ca_fingerprint,
            pod,
        },
        pod_object,
    ))
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    use super::*;

    fn pod(hash: Option<&str>, terminating: bool) -> Pod {
        let mut p = Pod::default();
        p.metadata.annotations =
            hash.map(|h| [(meta::TEMPLATE_HASH_ANNOTATION.to_string(), h.to_string())].into());
        p.metadata.deletion_timestamp =
            terminating.then(|| Time(k8s_openapi::jiff::Timestamp::now()));
        p
    }

    #[test]
    fn the_pod_is_kept_only_while_it_runs_the_desired_template() {
        assert_eq!(pod_step(None, "h1", false), PodStep::Create);
        assert_eq!(
            pod_step(Some(&pod(Some("h1"), false)), "h1", false),
            PodStep::Keep
        );
        assert_eq!(
            pod_step(Some(&pod(Some("h0"), false)), "h1", false),
            PodStep::Replace
        );
        // From an operator that wrote no hash: replaced, never kept by accident.
        assert_eq!(
            pod_step(Some(&pod(None, false)), "h1", false),
            PodStep::Replace
        );
        // Terminating wins over a matching or stale hash: never delete twice or create beside it.
        assert_eq!(
            pod_step(Some(&pod(Some("h1"), true)), "h1", false),
            PodStep::WaitTerminating
        );
        assert_eq!(
            pod_step(Some(&pod(Some("h0"), true)), "h1", false),
            PodStep::WaitTerminating
        );
    }

    #[test]
    fn a_paused_bottle_has_its_pod_deleted_once_and_none_created() {
        assert_eq!(pod_step(None, "h1", true), PodStep::StayStopped);
        // Whatever template it runs, a live Pod of a paused Bottle goes.
        assert_eq!(
            pod_step(Some(&pod(Some("h1"), false)), "h1", true),
            PodStep::Stop
        );
        assert_eq!(
            pod_step(Some(&pod(Some("h0"), false)), "h1", true),
            PodStep::Stop
        );
        // A terminating one is waited for, never deleted again.
        assert_eq!(
            pod_step(Some(&pod(Some("h1"), true)), "h1", true),
            PodStep::WaitTerminating
        );
    }
}
