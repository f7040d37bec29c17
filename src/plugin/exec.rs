//! Running a `bottle-sidecar` command in a bottle's container and reading its JSON: how
//! `kubectl bottle status` and the dashboard learn what only the Pod knows (the config a
//! sidecar runs, the hosts egress refused).

use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::AttachParams;
use serde::de::DeserializeOwned;
use tokio::io::AsyncReadExt;

/// Runs `command` in `container` of `pod` and parses what it prints; the error says which
/// step failed, in words for a person.
pub async fn json<T: DeserializeOwned>(
    pods: &Api<Pod>,
    pod: &str,
    container: &str,
    command: &[&str],
) -> Result<T, String> {
    let ap = AttachParams::default()
        .container(container)
        .stdin(false)
        .stdout(true)
        .stderr(true);
    let what = command.get(1).copied().unwrap_or("command");
    let mut p = pods
        .exec(pod, command.iter().copied(), &ap)
        .await
        .map_err(|e| format!("exec into {container}: {e}"))?;
    let (mut out, mut err) = (String::new(), String::new());
    let (mut so, mut se) = (p.stdout().expect("stdout"), p.stderr().expect("stderr"));
    let status = p.take_status().expect("status");
    let (r1, r2, status) = tokio::join!(
        so.read_to_string(&mut out),
        se.read_to_string(&mut err),
        status
    );
    r1.and(r2)
        .map_err(|e| format!("reading from {container}: {e}"))?;
    if let Some(st) = status.filter(|st| st.status.as_deref() != Some("Success")) {
        let why = if err.trim().is_empty() {
            st.message.unwrap_or_default()
        } else {
            err.trim().to_string()
        };
        return Err(format!("{what} in {container}: {why}"));
    }
    serde_json::from_str(&out).map_err(|e| format!("{what} in {container} printed no report: {e}"))
}
