//! Acting as a pod's ServiceAccount: the token the node runtime minted for
//! a pod (read from the file its containers read), the claims inside it,
//! and a client that authenticates with it against the lab's API server.

use std::path::Path;

use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use serde_json::json;

use crate::cluster::Cluster;
use crate::error::{Error, Result};
use crate::runtime::volumes::token_files;

/// The ServiceAccount token of pod `namespace/name` as its containers read
/// it: the first projected token source (the `kube-api-access-*` volume the
/// ServiceAccount admission plugin adds), from the file the lab's node
/// runtime wrote.
pub async fn pod_token(c: &Cluster, namespace: &str, name: &str) -> Result<String> {
    let pod = Api::<Pod>::namespaced(c.client(), namespace)
        .get(name)
        .await?;
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let dir = crate::startup::pods_dir(c.state_dir()).join(uid);
    let file = token_files(&pod, &dir).into_iter().next().ok_or_else(|| {
        Error::NotFound(format!(
            "a ServiceAccount token volume in pod {namespace}/{name}"
        ))
    })?;
    let token = std::fs::read_to_string(&file).map_err(Error::io("reading", &file))?;
    Ok(token.trim().to_string())
}

/// A client that authenticates with bearer `token`, dialing the server of
/// the cluster's admin kubeconfig and trusting its CA. Its User-Agent is
/// [`crate::audit::TEST_USER_AGENT`]: the RBAC check does not count the
/// test's requests as switchyard's.
pub async fn client_with_token(c: &Cluster, token: &str) -> Result<kube::Client> {
    let text = token_kubeconfig(c.kubeconfig(), token)?;
    let kc =
        kube::config::Kubeconfig::from_yaml(&text).map_err(|e| Error::Kubeconfig(e.to_string()))?;
    let mut config =
        kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
            .await
            .map_err(|e| Error::Kubeconfig(e.to_string()))?;
    // The RBAC check tells the test's requests from switchyard's by this.
    config.headers.push((
        http::header::USER_AGENT,
        http::HeaderValue::from_static(crate::audit::TEST_USER_AGENT),
    ));
    Ok(kube::Client::try_from(config)?)
}

/// The kubeconfig at `admin` with its user replaced by bearer `token`.
fn token_kubeconfig(admin: &Path, token: &str) -> Result<String> {
    let text = std::fs::read_to_string(admin).map_err(Error::io("reading", admin))?;
    let admin: serde_yaml::Value =
        serde_yaml::from_str(&text).map_err(|e| Error::Kubeconfig(e.to_string()))?;
    let kc = json!({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "lab", "cluster": admin["clusters"][0]["cluster"].clone()}],
        "users": [{"name": "token", "user": {"token": token}}],
        "contexts": [{"name": "token", "context": {"cluster": "lab", "user": "token"}}],
        "current-context": "token",
    });
    serde_yaml::to_string(&kc).map_err(|e| Error::Serde(e.to_string()))
}

/// The claims of a JWT (its payload, not verified: the API server is the
/// one that checks the signature).
pub fn jwt_claims(token: &str) -> Result<serde_json::Value> {
    let bad = |why: &str| Error::Serde(format!("not a JWT: {why}"));
    let payload = token.split('.').nth(1).ok_or_else(|| bad("no payload"))?;
    let bytes = base64url_decode(payload).ok_or_else(|| bad("payload is not base64url"))?;
    serde_json::from_slice(&bytes).map_err(|e| bad(&e.to_string()))
}

/// Decodes unpadded (or padded) base64url (RFC 4648 §5).
fn base64url_decode(s: &str) -> Option<Vec<u8>> {
    let value = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' => 62,
            b'_' => 63,
            _ => return None,
        } as u32)
    };
    let s = s.trim_end_matches('=').as_bytes();
    if s.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    for chunk in s.chunks(4) {
        let mut acc = 0u32;
        for &c in chunk {
            acc = (acc << 6) | value(c)?;
        }
        acc <<= 6 * (4 - chunk.len() as u32);
        let bytes = acc.to_be_bytes();
        out.extend_from_slice(&bytes[1..chunk.len()]);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64url_decodes_every_tail_length() {
        assert_eq!(base64url_decode("").unwrap(), b"");
        assert_eq!(base64url_decode("Zg").unwrap(), b"f");
        assert_eq!(base64url_decode("Zm8").unwrap(), b"fo");
        assert_eq!(base64url_decode("Zm9v").unwrap(), b"foo");
        assert_eq!(base64url_decode("Zm9vYg==").unwrap(), b"foob");
        assert_eq!(base64url_decode("-_8").unwrap(), [0xfb, 0xff]);
        assert_eq!(base64url_decode("Z"), None);
        assert_eq!(base64url_decode("Zm+v"), None, "standard alphabet");
    }

    #[test]
    fn jwt_claims_are_the_payload() {
        // {"alg":"none"} . {"sub":"system:serviceaccount:a:b"} . (no signature)
        let token = "eyJhbGciOiJub25lIn0.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6YTpiIn0.";
        assert_eq!(
            jwt_claims(token).unwrap()["sub"],
            "system:serviceaccount:a:b"
        );
        assert!(jwt_claims("no-dots").is_err());
    }

    #[test]
    fn the_token_kubeconfig_keeps_the_server_and_ca() {
        let dir = std::env::temp_dir().join(format!("sy-identity-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let admin = dir.join("admin.kubeconfig");
        let text = crate::pki::kubeconfig(
            "https://127.0.0.1:1234",
            Path::new("/ca.crt"),
            Path::new("/a.crt"),
            Path::new("/a.key"),
        );
        std::fs::write(&admin, text).unwrap();
        let out: serde_yaml::Value =
            serde_yaml::from_str(&token_kubeconfig(&admin, "t0k").unwrap()).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        let cluster = &out["clusters"][0]["cluster"];
        assert_eq!(cluster["server"].as_str(), Some("https://127.0.0.1:1234"));
        assert_eq!(cluster["certificate-authority"].as_str(), Some("/ca.crt"));
        assert_eq!(out["users"][0]["user"]["token"].as_str(), Some("t0k"));
        assert!(out["users"][0]["user"]["client-key"].is_null());
    }
}
