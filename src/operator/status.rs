//! Status: what the Bottle reports. [`desired`] is pure (outcome + Pod → status); the
//! patch (server-side apply) is skipped when nothing changed, so status writes never wake the
//! controller in a loop.

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{Patch, PatchParams};
use kube::{Api, Client, ResourceExt};
use serde_json::json;

use super::Error;
use super::reconcile::{Converged, PodChange};
use crate::contract::api::{Bottle, BottleStatus};
use crate::contract::model::Reason;

/// Condition type: the Pod runs and is ready.
pub const READY: &str = "Ready";
/// Condition type: the current spec is rendered and applied.
pub const CONFIG_APPLIED: &str = "ConfigApplied";

fn pod_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Why a Pod is not ready, from container waiting reasons (ImagePullBackOff…) or its phase.
fn pod_not_ready_message(pod: &Pod) -> String {
    let status = pod.status.as_ref();
    let waiting: Vec<String> = status
        .into_iter()
        .flat_map(|s| {
            s.init_container_statuses
                .iter()
                .flatten()
                .chain(s.container_statuses.iter().flatten())
        })
        .filter_map(|cs| {
            let w = cs.state.as_ref()?.waiting.as_ref()?;
            Some(format!(
                "{}: {}",
                cs.name,
                w.reason.as_deref().unwrap_or("Waiting")
            ))
        })
        .collect();
    let phase = status
        .and_then(|s| s.phase.clone())
        .unwrap_or_else(|| "Pending".into());
    if waiting.is_empty() {
        let unscheduled = pod.spec.as_ref().is_none_or(|s| s.node_name.is_none());
        if unscheduled {
            format!("Pod is {phase} (not scheduled yet)")
        } else {
            format!("Pod is {phase}")
        }
    } else {
        format!("Pod is {phase}; {}", waiting.join(", "))
    }
}

fn condition(
    type_: &str,
    ok: bool,
    reason: Reason,
    message: String,
    generation: Option<i64>,
    now: &Time,
) -> Condition {
    Condition {
        type_: type_.into(),
        status: if ok { "True" } else { "False" }.into(),
        reason: reason.as_str().into(),
        message,
        observed_generation: generation,
        last_transition_time: now.clone(),
    }
}

/// The status a Bottle should have after a reconcile with `outcome`, given its Pod.
pub fn desired(
    bottle: &Bottle,
    outcome: &Result<Converged, Error>,
    pod: Option<&Pod>,
    now: k8s_openapi::jiff::Timestamp,
) -> BottleStatus {
    let now = Time(now);
    let generation = bottle.metadata.generation;
    let old = bottle.status.clone().unwrap_or_default();
    let pod_change = outcome.as_ref().ok().map(|c| c.pod);
    let replacing = matches!(
        pod_change,
        Some(PodChange::Replacing | PodChange::Terminating)
    );
    let ready = pod.is_some_and(pod_ready) && !replacing;
    let paused = matches!(
        pod_change,
        Some(PodChange::Pausing | PodChange::Stopping | PodChange::Stopped)
    );

    let (config_applied, phase) = match outcome {
        Ok(c) => (
            condition(
                CONFIG_APPLIED,
                true,
                Reason::Applied,
                format!("sidecar config {} applied", c.config_hash),
                generation,
                &now,
            ),
            if paused {
                "Paused"
            } else if ready {
                "Running"
            } else {
                "Pending"
            },
        ),
        Err(e) => (
            condition(
                CONFIG_APPLIED,
                false,
                e.reason(),
                e.to_string(),
                generation,
                &now,
            ),
            if pod.is_some() {
                "Degraded"
            } else if bottle.spec.stopped(now.0) {
                // A pause takes the Pod even from a spec that cannot be applied.
                "Paused"
            } else {
                "Failed"
            },
        ),
    };
    let ready_cond = match (outcome, pod) {
        _ if paused => {
            let gone = pod_change == Some(PodChange::Stopped);
            let (reason, message) = match bottle.spec.stopped_by_lifetime(now.0) {
                Some(at) => (
                    Reason::LifetimeEnded,
                    format!(
                        "stopped by spec.lifetime.shutdownTime {at}: {}; move or remove it to start again",
                        if gone {
                            "no Pod runs"
                        } else {
                            "the Pod is being deleted"
                        }
                    ),
                ),
                _ if gone && bottle.spec.shutdown_due(now.0).is_some() => (
                    Reason::Paused,
                    "paused: no Pod runs; set spec.paused to false and move spec.lifetime.shutdownTime (it has passed) to resume".into(),
                ),
                _ if gone => (
                    Reason::Paused,
                    "paused: no Pod runs; set spec.paused to false to resume".into(),
                ),
                _ => (Reason::Paused, "paused: the Pod is being deleted".into()),
            };
            condition(READY, false, reason, message, generation, &now)
        }
        _ if ready => condition(
            READY,
            true,
            Reason::PodReady,
            "all containers are ready".into(),
            generation,
            &now,
        ),
        _ if replacing => condition(
            READY,
            false,
            Reason::PodReplacing,
            "a new Pod is replacing the old one".into(),
            generation,
            &now,
        ),
        (Err(e), None) => condition(READY, false, e.reason(), e.to_string(), generation, &now),
        (_, Some(p)) => condition(
            READY,
            false,
            Reason::PodNotReady,
            pod_not_ready_message(p),
            generation,
            &now,
        ),
        (Ok(_), None) => condition(
            READY,
            false,
            Reason::PodCreating,
            "the Pod is being created".into(),
            generation,
            &now,
        ),
    };

    let conditions = [ready_cond, config_applied]
        .into_iter()
        .map(|mut c| {
            // lastTransitionTime moves only when the status flips.
            if let Some(prev) = old
                .conditions
                .iter()
                .find(|o| o.type_ == c.type_ && o.status == c.status)
            {
                c.last_transition_time = prev.last_transition_time.clone();
            }
            c
        })
        .collect();

    let (config_hash, ca_fingerprint) = match outcome {
        Ok(c) => (Some(c.config_hash.clone()), Some(c.ca_fingerprint.clone())),
        Err(_) => (old.config_hash.clone(), old.ca_fingerprint.clone()),
    };
    BottleStatus {
        phase: Some(phase.into()),
        observed_generation: generation,
        conditions,
        pod_name: pod.map(|p| p.name_any()).or_else(|| {
            outcome
                .as_ref()
                .ok()
                .filter(|_| !paused)
                .map(|_| bottle.name_any())
        }),
        ca_fingerprint,
        config_hash,
        stops_at: bottle
            .spec
            .lifetime
            .as_ref()
            .filter(|l| l.shutdown_time.0 > now.0)
            .map(|l| l.shutdown_time.clone()),
    }
}

/// Writes `status` unless the Bottle already has it; returns the Bottle as written.
pub async fn patch_if_changed(
    client: &Client,
    bottle: &Bottle,
    status: BottleStatus,
) -> Result<Option<Bottle>, Error> {
    if bottle.status.as_ref() == Some(&status) {
        return Ok(None);
    }
    let api: Api<Bottle> = Api::namespaced(client.clone(), &bottle.namespace().unwrap_or_default());
    // Server-side apply of the whole status under the operator's field manager: a field left
    // out (no Pod any more, no conditions) is removed because we owned it, so the stored
    // status comes to equal the desired one and the next reconcile sends nothing.
    let patch = json!({
        "apiVersion": <Bottle as kube::Resource>::api_version(&()),
        "kind": <Bottle as kube::Resource>::kind(&()),
        "status": status,
    });
    match api
        .patch_status(
            &bottle.name_any(),
            &PatchParams::apply(crate::operator::render::meta::FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await
    {
        Ok(mut written) => {
            super::observed::strip(&mut written);
            Ok(Some(written))
        }
        // Deleted meanwhile: nothing to report on.
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(None),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{
        ContainerState, ContainerStateWaiting, ContainerStatus, PodCondition, PodSpec, PodStatus,
    };

    use super::*;
    use crate::contract::model::InvalidSpec;

    fn bottle(status: Option<BottleStatus>) -> Bottle {
        let mut b = Bottle::new("b", Default::default());
        b.metadata.generation = Some(4);
        b.status = status;
        b
    }

    fn ok(pod: PodChange) -> Result<Converged, Error> {
        Ok(Converged {
            config_hash: "cfg1".into(),
            ca_fingerprint: "AA".into(),
            pod,
        })
    }

    fn pod(ready: bool, waiting: Option<&str>) -> Pod {
        Pod {
            metadata: Default::default(),
            spec: Some(PodSpec {
                node_name: Some("n1".into()),
                ..Default::default()
            }),
            status: Some(PodStatus {
                phase: Some(if ready { "Running" } else { "Pending" }.into()),
                conditions: Some(vec![PodCondition {
                    type_: "Ready".into(),
                    status: if ready { "True" } else { "False" }.into(),
                    ..Default::default()
                }]),
                container_statuses: waiting.map(|w| {
                    vec![ContainerStatus {
                        name: "agent".into(),
                        state: Some(ContainerState {
                            waiting: Some(ContainerStateWaiting {
                                reason: Some(w.into()),
                                ..Default::default()
                            }),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }]
                }),
                ..Default::default()
            }),
        }
    }

    fn cond<'a>(s: &'a BottleStatus, t: &str) -> &'a Condition {
        s.conditions.iter().find(|c| c.type_ == t).unwrap()
    }

    fn t(secs: i64) -> k8s_openapi::jiff::Timestamp {
        k8s_openapi::jiff::Timestamp::from_second(secs).unwrap()
    }

    #[test]
    fn ready_pod_means_running() {
        let s = desired(
            &bottle(None),
            &ok(PodChange::Unchanged),
            Some(&pod(true, None)),
            t(100),
        );
        assert_eq!(s.phase.as_deref(), Some("Running"));
        assert_eq!(
            (
                cond(&s, READY).status.as_str(),
                cond(&s, READY).reason.as_str()
            ),
            ("True", "PodReady")
        );
        assert_eq!(cond(&s, CONFIG_APPLIED).observed_generation, Some(4));
        assert_eq!(
            (s.config_hash.as_deref(), s.ca_fingerprint.as_deref()),
            (Some("cfg1"), Some("AA"))
        );
    }

    #[test]
    fn a_paused_bottle_reads_paused_while_its_pod_goes_and_after() {
        // The Pod still terminating (and still Ready): paused, not ready, not running.
        let s = desired(
            &bottle(None),
            &ok(PodChange::Pausing),
            Some(&pod(true, None)),
            t(100),
        );
        assert_eq!(s.phase.as_deref(), Some("Paused"));
        assert_eq!(
            (
                cond(&s, READY).status.as_str(),
                cond(&s, READY).reason.as_str()
            ),
            ("False", "Paused")
        );
        // Gone: no Pod named, the config still reported applied.
        let s = desired(&bottle(Some(s)), &ok(PodChange::Stopped), None, t(110));
        assert_eq!(s.phase.as_deref(), Some("Paused"));
        assert_eq!(s.pod_name, None);
        assert!(cond(&s, READY).message.contains("spec.paused"));
        assert_eq!(cond(&s, CONFIG_APPLIED).status, "True");
        // Ready went False at the pause and stays put while paused.
        assert_eq!(cond(&s, READY).last_transition_time.0, t(100));
    }

    #[test]
    fn a_shutdown_time_ahead_is_shown_and_once_passed_says_why_the_bottle_stopped() {
        use crate::contract::api::{LifetimeSpec, ShutdownPolicy};
        let mut b = bottle(None);
        b.spec.lifetime = Some(LifetimeSpec {
            shutdown_time: Time(t(200)),
            shutdown_policy: ShutdownPolicy::Pause,
        });
        assert!(!b.spec.stopped(t(199)) && b.spec.stopped(t(200)));
        assert_eq!(b.spec.shutdown_due(t(199)), None);
        let s = desired(
            &b,
            &ok(PodChange::Unchanged),
            Some(&pod(true, None)),
            t(100),
        );
        assert_eq!(s.stops_at, Some(Time(t(200))));
        assert_eq!(s.phase.as_deref(), Some("Running"));
        let s = desired(&b, &ok(PodChange::Stopped), None, t(201));
        assert_eq!(s.stops_at, None, "nothing ahead once it has passed");
        assert_eq!(s.phase.as_deref(), Some("Paused"));
        assert_eq!(cond(&s, READY).reason, "LifetimeEnded");
        assert!(cond(&s, READY).message.contains("move or remove it"));
        // Paused by hand as well: resuming needs both undone, and the message says so.
        b.spec.paused = true;
        let s = desired(&b, &ok(PodChange::Stopped), None, t(201));
        assert_eq!(cond(&s, READY).reason, "Paused");
        assert!(
            cond(&s, READY)
                .message
                .contains("spec.paused to false and move")
        );
        b.spec.paused = false;
        b.spec.lifetime.as_mut().unwrap().shutdown_policy = ShutdownPolicy::Delete;
        assert!(!b.spec.stopped(t(300)), "Delete never pauses");
        assert_eq!(b.spec.shutdown_due(t(300)), Some(ShutdownPolicy::Delete));
    }

    #[test]
    fn waiting_containers_are_named_in_the_ready_message() {
        let s = desired(
            &bottle(None),
            &ok(PodChange::Unchanged),
            Some(&pod(false, Some("ImagePullBackOff"))),
            t(100),
        );
        assert_eq!(s.phase.as_deref(), Some("Pending"));
        let r = cond(&s, READY);
        assert_eq!(r.reason, "PodNotReady");
        assert!(
            r.message.contains("agent: ImagePullBackOff"),
            "{}",
            r.message
        );
    }

    #[test]
    fn errors_degrade_a_running_bottle_and_fail_a_new_one_keeping_what_was_known() {
        let err = || {
            Err(Error::InvalidSpec(InvalidSpec {
                reason: Reason::InvalidHost,
                message: "bad host".into(),
            }))
        };
        let before = desired(
            &bottle(None),
            &ok(PodChange::Unchanged),
            Some(&pod(true, None)),
            t(100),
        );
        let s = desired(
            &bottle(Some(before.clone())),
            &err(),
            Some(&pod(true, None)),
            t(200),
        );
        assert_eq!(s.phase.as_deref(), Some("Degraded"));
        assert_eq!(
            (
                cond(&s, CONFIG_APPLIED).status.as_str(),
                cond(&s, CONFIG_APPLIED).reason.as_str()
            ),
            ("False", "InvalidHost")
        );
        assert_eq!(
            cond(&s, READY).status,
            "True",
            "the running Pod is still ready"
        );
        assert_eq!(
            s.config_hash.as_deref(),
            Some("cfg1"),
            "the applied config is still the old one"
        );
        // Ready did not flip, so its transition time stays; ConfigApplied flipped.
        assert_eq!(
            cond(&s, READY).last_transition_time,
            cond(&before, READY).last_transition_time
        );
        assert_ne!(
            cond(&s, CONFIG_APPLIED).last_transition_time,
            cond(&before, CONFIG_APPLIED).last_transition_time
        );

        let s = desired(&bottle(None), &err(), None, t(100));
        assert_eq!(s.phase.as_deref(), Some("Failed"));
        assert_eq!(cond(&s, READY).reason, "InvalidHost");
        assert_eq!(s.pod_name, None);
    }

    #[test]
    fn replacing_is_not_ready_and_an_unchanged_outcome_is_an_unchanged_status() {
        let s = desired(
            &bottle(None),
            &ok(PodChange::Replacing),
            Some(&pod(true, None)),
            t(100),
        );
        assert_eq!(cond(&s, READY).reason, "PodReplacing");
        let again = desired(
            &bottle(Some(s.clone())),
            &ok(PodChange::Replacing),
            Some(&pod(true, None)),
            t(500),
        );
        assert_eq!(
            again, s,
            "same outcome later: identical status, so no patch and no wake-up"
        );
    }
}
