//! The operations the server implements and the routing of a request to one of them.

use std::collections::BTreeMap;

/// An operation the server implements, named by the description's `operationId`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Operation {
    DropletsList,
    DropletsCreate,
    DropletsGet,
    DropletsDestroy,
    DropletActionsPost,
    DropletActionsGet,
    ActionsGet,
    TagsCreate,
    TagsGet,
    TagsDelete,
    TagsAssign,
    TagsUnassign,
    FirewallsList,
    FirewallsCreate,
    FirewallsGet,
    FirewallsUpdate,
    FirewallsDelete,
    FirewallsAddTags,
    FirewallsDeleteTags,
    ReservedIpsList,
    ReservedIpsCreate,
    ReservedIpsGet,
    ReservedIpsDelete,
    ReservedIpActionsPost,
    ReservedIpActionsGet,
    RegionsList,
    SizesList,
}

/// Method, path template and operation ID of every implemented operation.
pub const ROUTES: &[(&str, &str, Operation, &str)] = &[
    ("GET", "/v2/droplets", Operation::DropletsList, "droplets_list"),
    ("POST", "/v2/droplets", Operation::DropletsCreate, "droplets_create"),
    ("GET", "/v2/droplets/{droplet_id}", Operation::DropletsGet, "droplets_get"),
    ("DELETE", "/v2/droplets/{droplet_id}", Operation::DropletsDestroy, "droplets_destroy"),
    ("POST", "/v2/droplets/{droplet_id}/actions", Operation::DropletActionsPost, "dropletActions_post"),
    (
        "GET",
        "/v2/droplets/{droplet_id}/actions/{action_id}",
        Operation::DropletActionsGet,
        "dropletActions_get",
    ),
    ("GET", "/v2/actions/{action_id}", Operation::ActionsGet, "actions_get"),
    ("POST", "/v2/tags", Operation::TagsCreate, "tags_create"),
    ("GET", "/v2/tags/{tag_id}", Operation::TagsGet, "tags_get"),
    ("DELETE", "/v2/tags/{tag_id}", Operation::TagsDelete, "tags_delete"),
    ("POST", "/v2/tags/{tag_id}/resources", Operation::TagsAssign, "tags_assign_resources"),
    ("DELETE", "/v2/tags/{tag_id}/resources", Operation::TagsUnassign, "tags_unassign_resources"),
    ("GET", "/v2/firewalls", Operation::FirewallsList, "firewalls_list"),
    ("POST", "/v2/firewalls", Operation::FirewallsCreate, "firewalls_create"),
    ("GET", "/v2/firewalls/{firewall_id}", Operation::FirewallsGet, "firewalls_get"),
    ("PUT", "/v2/firewalls/{firewall_id}", Operation::FirewallsUpdate, "firewalls_update"),
    ("DELETE", "/v2/firewalls/{firewall_id}", Operation::FirewallsDelete, "firewalls_delete"),
    ("POST", "/v2/firewalls/{firewall_id}/tags", Operation::FirewallsAddTags, "firewalls_add_tags"),
    ("DELETE", "/v2/firewalls/{firewall_id}/tags", Operation::FirewallsDeleteTags, "firewalls_delete_tags"),
    ("GET", "/v2/reserved_ips", Operation::ReservedIpsList, "reservedIPs_list"),
    ("POST", "/v2/reserved_ips", Operation::ReservedIpsCreate, "reservedIPs_create"),
    ("GET", "/v2/reserved_ips/{reserved_ip}", Operation::ReservedIpsGet, "reservedIPs_get"),
    ("DELETE", "/v2/reserved_ips/{reserved_ip}", Operation::ReservedIpsDelete, "reservedIPs_delete"),
    (
        "POST",
        "/v2/reserved_ips/{reserved_ip}/actions",
        Operation::ReservedIpActionsPost,
        "reservedIPsActions_post",
    ),
    (
        "GET",
        "/v2/reserved_ips/{reserved_ip}/actions/{action_id}",
        Operation::ReservedIpActionsGet,
        "reservedIPsActions_get",
    ),
    ("GET", "/v2/regions", Operation::RegionsList, "regions_list"),
    ("GET", "/v2/sizes", Operation::SizesList, "sizes_list"),
];

/// Finds the route for a request: the operation, its ID and the path parameters by name.
pub fn route(method: &str, path: &str) -> Option<(Operation, &'static str, BTreeMap<&'static str, String>)> {
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let mut best: Option<(usize, Operation, &'static str, BTreeMap<&'static str, String>)> = None;
    for (m, template, op, id) in ROUTES {
        if *m != method {
            continue;
        }
        let tsegs: Vec<&'static str> = template.trim_start_matches('/').split('/').collect();
        if tsegs.len() != segs.len() {
            continue;
        }
        let mut params = BTreeMap::new();
        let mut literals = 0;
        let matched = tsegs.iter().zip(&segs).all(|(t, s)| {
            match t.strip_prefix('{').and_then(|t| t.strip_suffix('}')) {
                Some(name) => {
                    params.insert(name, (*s).to_string());
                    !s.is_empty()
                }
                None => {
                    literals += 1;
                    t == s
                }
            }
        });
        if matched && best.as_ref().is_none_or(|(l, ..)| literals > *l) {
            best = Some((literals, *op, *id, params));
        }
    }
    best.map(|(_, op, id, params)| (op, id, params))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_match_templates_and_extract_parameters() {
        let (op, id, params) =
            route("GET", "/v2/droplets/7/actions/9").unwrap_or((Operation::SizesList, "", BTreeMap::new()));
        assert_eq!((op, id), (Operation::DropletActionsGet, "dropletActions_get"));
        assert_eq!(params.get("droplet_id").map(String::as_str), Some("7"));
        assert_eq!(params.get("action_id").map(String::as_str), Some("9"));
        assert!(route("PATCH", "/v2/droplets/7").is_none());
        assert!(route("GET", "/v2/droplets/").is_none(), "an empty parameter is no match");
    }
}
