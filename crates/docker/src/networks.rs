//! Docker networks found by label, and the one shared network, `<network>-internet`, that stands for
//! the internet between a peer network's local nodes.
//!
//! Both the local machine provider (which removes the internet network with the last node) and the
//! engine (which makes it when the first container joins it) use these; keeping them here lets each
//! of those depend on this module instead of on the other.

use std::collections::HashMap;

use bollard::Docker;
use bollard::models::{Network as ListedNetwork, NetworkCreateRequest, NetworkInspect};
use bollard::query_parameters::ListNetworksOptionsBuilder;
use peerfleet_core::provider::ProviderError;

use crate::error::engine_error;
use crate::labels;

/// What peerfleet needs of a network, whether it came from a list or an inspect call.
#[derive(Debug, Clone, Default)]
pub(crate) struct DockerNetwork {
    pub(crate) id: Option<String>,
    pub(crate) labels: HashMap<String, String>,
}

impl From<ListedNetwork> for DockerNetwork {
    fn from(n: ListedNetwork) -> Self {
        DockerNetwork { id: n.id, labels: n.labels.unwrap_or_default() }
    }
}

impl From<NetworkInspect> for DockerNetwork {
    fn from(n: NetworkInspect) -> Self {
        DockerNetwork { id: n.id, labels: n.labels.unwrap_or_default() }
    }
}

/// The value of label `key` on `n`.
pub(crate) fn label<'a>(n: &'a DockerNetwork, key: &str) -> Option<&'a str> {
    n.labels.get(key).map(String::as_str)
}

/// Networks carrying all of `labels` (`key=value`), in one list call.
pub(crate) async fn list_networks(
    docker: &Docker,
    filter: &[(&str, &str)],
) -> Result<Vec<DockerNetwork>, ProviderError> {
    let values: Vec<String> = filter.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let filters = HashMap::from([("label", values)]);
    let options = ListNetworksOptionsBuilder::default().filters(&filters).build();
    let found = docker.list_networks(Some(options)).await.map_err(|e| engine_error(e, "listing networks"))?;
    Ok(found.into_iter().map(DockerNetwork::from).collect())
}

/// `network`'s internet networks (normally one), in a stable order.
pub(crate) async fn internet_networks(
    docker: &Docker,
    network: &str,
) -> Result<Vec<DockerNetwork>, ProviderError> {
    let mut found = list_networks(docker, &[(labels::NETWORK, network), (labels::INTERNET, "1")]).await?;
    // Oldest ID order is not available; any stable order keeps every caller on the same network.
    found.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(found)
}

/// The ID of `network`'s internet network, made when missing. Callers serialise calls per engine
/// (see [`crate::DockerEngine`]), because the engine at API 1.41 would accept a second network of the name.
pub(crate) async fn ensure_internet(docker: &Docker, network: &str) -> Result<String, ProviderError> {
    if let Some(id) = internet_networks(docker, network).await?.into_iter().find_map(|n| n.id) {
        return Ok(id);
    }
    let request = NetworkCreateRequest {
        name: format!("{network}-internet"),
        driver: Some("bridge".into()),
        labels: Some(HashMap::from([
            (labels::NETWORK.to_string(), network.to_string()),
            (labels::INTERNET.to_string(), "1".to_string()),
        ])),
        ..Default::default()
    };
    let created = docker
        .create_network(request)
        .await
        .map_err(|e| engine_error(e, format!("creating the internet network of {network}")))?;
    Ok(created.id)
}
