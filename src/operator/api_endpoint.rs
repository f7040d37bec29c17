//! Where bottle Pods reach the API server: an endpoint of the `default/kubernetes` Service,
//! read once at start. A real address (not the Service's virtual IP) needs no service proxy
//! in the node and is what an egress NetworkPolicy can name.

use std::net::{IpAddr, SocketAddr};

use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::ListParams;
use kube::{Api, Client};

/// The first ready endpoint of the `kubernetes` Service's slices, at its `https` port.
pub fn pick(slices: &[EndpointSlice]) -> Option<SocketAddr> {
    slices.iter().find_map(|s| {
        let port = s
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some("https"))
            .or_else(|| s.ports.iter().flatten().next())?
            .port?;
        let port = u16::try_from(port).ok()?;
        s.endpoints
            .iter()
            .filter(|e| e.conditions.as_ref().and_then(|c| c.ready) != Some(false))
            .flat_map(|e| &e.addresses)
            .find_map(|a| a.parse::<IpAddr>().ok())
            .map(|ip| SocketAddr::new(ip, port))
    })
}

/// Reads the `kubernetes` Service's endpoints; `None` (logged) when there are none or they
/// cannot be read, and supervised Bottles are then refused with a clear reason.
pub async fn discover(client: &Client) -> Option<SocketAddr> {
    let api: Api<EndpointSlice> = Api::namespaced(client.clone(), "default");
    let lp = ListParams::default().labels("kubernetes.io/service-name=kubernetes");
    match api.list(&lp).await {
        Ok(list) => {
            let found = pick(&list.items);
            match found {
                Some(a) => tracing::info!(api_server = %a, "bottle Pods reach the API server here"),
                None => tracing::warn!(
                    "the kubernetes Service has no ready endpoint: supervised Bottles are refused"
                ),
            }
            found
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the kubernetes Service's endpoints: supervised Bottles are refused");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn slice(v: serde_json::Value) -> EndpointSlice {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn the_ready_address_at_the_https_port_is_picked() {
        let s = slice(json!({
            "metadata": {"name": "kubernetes"}, "addressType": "IPv4",
            "ports": [{"name": "metrics", "port": 1}, {"name": "https", "port": 6443}],
            "endpoints": [
                {"addresses": ["10.1.1.1"], "conditions": {"ready": false}},
                {"addresses": ["10.1.1.2"], "conditions": {"ready": true}}
            ]
        }));
        assert_eq!(pick(&[s]), Some("10.1.1.2:6443".parse().unwrap()));
    }

    #[test]
    fn no_endpoint_or_no_port_is_none() {
        let empty = slice(json!({"metadata": {"name": "k"}, "addressType": "IPv4",
            "ports": [{"name": "https", "port": 6443}], "endpoints": []}));
        assert_eq!(pick(&[empty]), None);
        let portless = slice(json!({"metadata": {"name": "k"}, "addressType": "IPv4",
            "endpoints": [{"addresses": ["10.1.1.2"]}]}));
        assert_eq!(pick(&[portless]), None);
    }
}
