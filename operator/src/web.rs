//! The migration's web view: one page, served on the metrics port and
//! reached through the API server's Service proxy
//! (`…/api/v1/namespaces/switchyard-system/services/switchyard-operator:http/proxy/`,
//! e.g. after `kubectl proxy`), so it needs no port of its own.
//!
//! The operator serves the page and nothing else: the page asks the API
//! server for the plans, the agents' pods and their flows (through the pod
//! proxy) with the viewer's own credentials, so a viewer sees what their
//! RBAC lets them see and the operator holds no right to read flows.

use switchyard_daemon::{Body, Response, html_page};

/// The page (`operator/web/index.html`).
const PAGE: &str = include_str!("../web/index.html");

/// The page, at the root (the Service proxy's path ends in `/`).
pub fn respond(path: &str) -> Option<Response<Body>> {
    matches!(path, "/" | "/index.html").then(|| html_page(PAGE))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serves_the_page_at_the_root_only() {
        assert!(respond("/").is_some());
        assert!(respond("/index.html").is_some());
        assert!(respond("/v1/flows").is_none());
    }

    /// The API server's proxy rewrites root-relative URLs in HTML
    /// attributes only; the page must name the API by paths its script
    /// computes from its own location, never by an absolute attribute.
    #[test]
    fn the_page_has_no_attribute_url_for_the_proxy_to_rewrite() {
        for attr in ["href=", "src=", "action="] {
            assert!(!PAGE.contains(attr), "{attr} in operator/web/index.html");
        }
    }
}
