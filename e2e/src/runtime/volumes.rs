//! Materialising a pod's volumes and environment on the node: configMap,
//! secret, projected (ServiceAccount token, configMap, downward API) and
//! emptyDir volumes become files under the pod's directory; hostPath volumes
//! point at the host path. Each container mount becomes a bind mount
//! (source, mountPath) in the container's private mount namespace.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, KeyToPath, Pod, Secret, ServiceAccount, Volume,
};
use kube::api::{Api, PostParams};

use crate::error::{Error, Result};
use crate::topology::KUBERNETES_SERVICE_IP;

/// How host paths look from a lab node: the node's own cgroup subtree
/// stands in for the cgroup v2 root and a per-node bpffs directory for
/// `/sys/fs/bpf`, so an agent DaemonSet's hostPath mounts work as written
/// and nodes do not share pins.
#[derive(Debug, Clone, Default)]
pub struct NodeView {
    /// The host's cgroup v2 mount point.
    pub cgroup_root: PathBuf,
    /// The node's cgroup directory.
    pub node_cgroup: PathBuf,
    /// The node's bpffs directory (`None` if no bpffs is mounted).
    pub node_bpffs: Option<PathBuf>,
}

/// Maps a hostPath to where it lives for this node (pure).
pub fn host_path_on_node(path: &str, view: &NodeView) -> PathBuf {
    let p = Path::new(path);
    let under = |root: &Path| p.strip_prefix(root).ok().map(Path::to_path_buf);
    if let Some(rest) = under(&view.cgroup_root).or_else(|| under(Path::new("/sys/fs/cgroup"))) {
        return view.node_cgroup.join(rest);
    }
    if let (Some(bpf), Some(rest)) = (&view.node_bpffs, under(Path::new("/sys/fs/bpf"))) {
        return bpf.join(rest);
    }
    p.to_path_buf()
}

/// What a pod's files and environment need from the cluster and node.
pub struct PodContext<'a> {
    /// API client (the runtime's own identity).
    pub client: &'a kube::Client,
    /// The pod.
    pub pod: &'a Pod,
    /// The pod's directory on the node.
    pub dir: &'a Path,
    /// The pod IP.
    pub pod_ip: String,
    /// The node's IP.
    pub host_ip: String,
    /// Host path mapping for this node.
    pub view: &'a NodeView,
}

impl std::fmt::Debug for PodContext<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PodContext")
            .field("pod", &self.pod.metadata.name)
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl PodContext<'_> {
    fn ns(&self) -> String {
        self.pod
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into())
    }
    fn name(&self) -> String {
        self.pod.metadata.name.clone().unwrap_or_default()
    }
}

/// Writes every volume and returns volume name → host path.
pub async fn materialize(ctx: &PodContext<'_>) -> Result<BTreeMap<String, PathBuf>> {
    let mut out = BTreeMap::new();
    let volumes: &[Volume] = ctx
        .pod
        .spec
        .as_ref()
        .and_then(|s| s.volumes.as_deref())
        .unwrap_or(&[]);
    for v in volumes {
        let dir = ctx.dir.join("volumes").join(&v.name);
        let path = if let Some(hp) = &v.host_path {
            let p = host_path_on_node(&hp.path, ctx.view);
            match hp.type_.as_deref() {
                Some("FileOrCreate") if !p.exists() => {
                    std::fs::write(&p, b"").map_err(Error::io("creating hostPath file", &p))?
                }
                Some("DirectoryOrCreate") => {
                    std::fs::create_dir_all(&p).map_err(Error::io("creating", &p))?
                }
                _ => {}
            }
            p
        } else {
            std::fs::create_dir_all(&dir).map_err(Error::io("creating volume", &dir))?;
            if let Some(cm) = &v.config_map {
                let data = match config_map(ctx, &cm.name).await {
                    // As the kubelet: an optional ConfigMap that does not
                    // exist (yet) is an empty volume.
                    Err(Error::Kube(kube::Error::Api(e)))
                        if cm.optional == Some(true) && e.code == 404 =>
                    {
                        BTreeMap::new()
                    }
                    r => r?,
                };
                write_items(&dir, &data, cm.items.as_deref())?;
            } else if let Some(s) = &v.secret {
                let data = secret(ctx, s.secret_name.as_deref().unwrap_or_default()).await?;
                write_items(&dir, &data, s.items.as_deref())?;
            } else if let Some(p) = &v.projected {
                for src in p.sources.as_deref().unwrap_or(&[]) {
                    if let Some(t) = &src.service_account_token {
                        let token = token(ctx, t.audience.clone(), t.expiration_seconds).await?;
                        write_file(&dir.join(&t.path), token.as_bytes())?;
                    }
                    if let Some(cm) = &src.config_map {
                        let data = config_map(ctx, &cm.name).await?;
                        write_items(&dir, &data, cm.items.as_deref())?;
                    }
                    if let Some(s) = &src.secret {
                        let data = secret(ctx, &s.name).await?;
                        write_items(&dir, &data, s.items.as_deref())?;
                    }
                    if let Some(d) = &src.downward_api {
                        for item in d.items.as_deref().unwrap_or(&[]) {
                            if let Some(f) = &item.field_ref {
                                let value = field(ctx, &f.field_path).unwrap_or_default();
                                write_file(&dir.join(&item.path), value.as_bytes())?;
                            }
                        }
                    }
                }
            } else if v.empty_dir.is_none() {
                return Err(Error::Config(format!(
                    "volume {} has a type the lab runtime does not support",
                    v.name
                )));
            }
            dir
        };
        out.insert(v.name.clone(), path);
    }
    Ok(out)
}

/// Where [`materialize`] writes the pod's ServiceAccount tokens (each
/// projected `serviceAccountToken` source), under the pod's directory
/// `pod_dir` (pure).
pub fn token_files(pod: &Pod, pod_dir: &Path) -> Vec<PathBuf> {
    let volumes = pod.spec.as_ref().and_then(|s| s.volumes.as_deref());
    volumes
        .unwrap_or(&[])
        .iter()
        .filter_map(|v| Some((v, v.projected.as_ref()?)))
        .flat_map(|(v, p)| {
            let dir = pod_dir.join("volumes").join(&v.name);
            p.sources
                .iter()
                .flatten()
                .filter_map(move |src| Some(dir.join(&src.service_account_token.as_ref()?.path)))
        })
        .collect()
}

/// Bind mounts (source, target) for one container; identical paths (a
/// hostPath mounted at its own path) need no mount.
pub fn mounts(
    container: &Container,
    volumes: &BTreeMap<String, PathBuf>,
) -> Result<Vec<(PathBuf, PathBuf)>> {
    let mut out = Vec::new();
    for m in container.volume_mounts.as_deref().unwrap_or(&[]) {
        let base = volumes
            .get(&m.name)
            .ok_or_else(|| Error::Config(format!("volumeMount {} names no volume", m.name)))?;
        let src = match m.sub_path.as_deref() {
            Some(sp) if !sp.is_empty() => base.join(sp),
            _ => base.clone(),
        };
        let dst = PathBuf::from(&m.mount_path);
        if src != dst {
            out.push((src, dst));
        }
    }
    Ok(out)
}

/// The container's environment: the `kubernetes` Service variables (as
/// the kubelet sets them), then `envFrom` (ConfigMaps and Secrets, with
/// their prefix), then `env` entries (value, fieldRef, configMapKeyRef,
/// secretKeyRef), in order so later ones see and override earlier ones.
/// An image's own environment (`image_env`) comes first, its `PATH`
/// replacing the default one.
pub async fn environment(
    ctx: &PodContext<'_>,
    container: &Container,
    image_env: &[(String, String)],
) -> Result<Vec<(String, String)>> {
    let defaults = [
        (
            "KUBERNETES_SERVICE_HOST".to_string(),
            KUBERNETES_SERVICE_IP.to_string(),
        ),
        ("KUBERNETES_SERVICE_PORT".to_string(), "443".to_string()),
        (
            "KUBERNETES_SERVICE_PORT_HTTPS".to_string(),
            "443".to_string(),
        ),
        (
            "KUBERNETES_PORT".to_string(),
            format!("tcp://{KUBERNETES_SERVICE_IP}:443"),
        ),
        ("HOSTNAME".to_string(), ctx.name()),
        (
            "PATH".to_string(),
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_string(),
        ),
    ];
    let mut env = image_env.to_vec();
    for (k, v) in defaults {
        if !(k == "PATH" && env.iter().any(|(n, _)| n == "PATH")) {
            set(&mut env, k, v);
        }
    }
    for from in container.env_from.as_deref().unwrap_or(&[]) {
        let prefix = from.prefix.clone().unwrap_or_default();
        let data = if let Some(cm) = &from.config_map_ref {
            config_map(ctx, &cm.name).await?
        } else if let Some(sec) = &from.secret_ref {
            secret(ctx, &sec.name).await?
        } else {
            BTreeMap::new()
        };
        for (k, v) in data {
            set(&mut env, format!("{prefix}{k}"), lossy(v));
        }
    }
    for e in container.env.as_deref().unwrap_or(&[]) {
        let value = if let Some(v) = &e.value {
            super::images::expand(v, &env)
        } else if let Some(src) = &e.value_from {
            if let Some(f) = &src.field_ref {
                field(ctx, &f.field_path).unwrap_or_default()
            } else if let Some(k) = &src.config_map_key_ref {
                config_map(ctx, &k.name)
                    .await?
                    .remove(&k.key)
                    .map(lossy)
                    .unwrap_or_default()
            } else if let Some(k) = &src.secret_key_ref {
                secret(ctx, &k.name)
                    .await?
                    .remove(&k.key)
                    .map(lossy)
                    .unwrap_or_default()
            } else {
                String::new()
            }
        } else {
            String::new()
        };
        set(&mut env, e.name.clone(), value);
    }
    Ok(env)
}

/// Sets `name` (replacing an earlier value, as the kubelet does).
fn set(env: &mut Vec<(String, String)>, name: String, value: String) {
    match env.iter_mut().find(|(k, _)| *k == name) {
        Some(slot) => slot.1 = value,
        None => env.push((name, value)),
    }
}

fn lossy(b: Vec<u8>) -> String {
    String::from_utf8_lossy(&b).into_owned()
}

fn field(ctx: &PodContext<'_>, path: &str) -> Option<String> {
    let spec = ctx.pod.spec.as_ref();
    Some(match path {
        "metadata.name" => ctx.name(),
        "metadata.namespace" => ctx.ns(),
        "metadata.uid" => ctx.pod.metadata.uid.clone()?,
        "spec.nodeName" => spec?.node_name.clone()?,
        "spec.serviceAccountName" => spec?.service_account_name.clone()?,
        "status.podIP" => ctx.pod_ip.clone(),
        "status.hostIP" => ctx.host_ip.clone(),
        _ => return None,
    })
}

async fn config_map(ctx: &PodContext<'_>, name: &str) -> Result<BTreeMap<String, Vec<u8>>> {
    let cm = Api::<ConfigMap>::namespaced(ctx.client.clone(), &ctx.ns())
        .get(name)
        .await?;
    let mut out: BTreeMap<String, Vec<u8>> = cm
        .data
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.into_bytes()))
        .collect();
    out.extend(
        cm.binary_data
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, v.0)),
    );
    Ok(out)
}

async fn secret(ctx: &PodContext<'_>, name: &str) -> Result<BTreeMap<String, Vec<u8>>> {
    let s = Api::<Secret>::namespaced(ctx.client.clone(), &ctx.ns())
        .get(name)
        .await?;
    Ok(s.data
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.0))
        .collect())
}

/// A ServiceAccount token bound to the pod, requested as the kubelet does
/// (`pkg/volume/projected`): the TokenRequest API for the pod's
/// ServiceAccount, bound to the pod (kind, name, uid), the source's
/// audience (none: the API server's own) and expiration. The API server adds
/// the pod's node to the claims, so requests made with it carry
/// `authentication.kubernetes.io/node-name`.
async fn token(
    ctx: &PodContext<'_>,
    audience: Option<String>,
    expiration: Option<i64>,
) -> Result<String> {
    let sa = ctx
        .pod
        .spec
        .as_ref()
        .and_then(|s| s.service_account_name.clone())
        .unwrap_or_else(|| "default".into());
    let req = TokenRequest {
        spec: TokenRequestSpec {
            audiences: audience.into_iter().filter(|a| !a.is_empty()).collect(),
            expiration_seconds: expiration,
            bound_object_ref: Some(BoundObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: Some(ctx.name()),
                uid: ctx.pod.metadata.uid.clone(),
            }),
        },
        ..Default::default()
    };
    let api = Api::<ServiceAccount>::namespaced(ctx.client.clone(), &ctx.ns());
    let out = api
        .create_token_request(&sa, &PostParams::default(), &req)
        .await?;
    out.status
        .map(|s| s.token)
        .ok_or_else(|| Error::Config(format!("TokenRequest for {sa} returned no token")))
}

fn write_items(
    dir: &Path,
    data: &BTreeMap<String, Vec<u8>>,
    items: Option<&[KeyToPath]>,
) -> Result<()> {
    match items {
        Some(items) => {
            for it in items {
                if let Some(v) = data.get(&it.key) {
                    write_file(&dir.join(&it.path), v)?;
                }
            }
        }
        None => {
            for (k, v) in data {
                write_file(&dir.join(k), v)?;
            }
        }
    }
    Ok(())
}

fn write_file(path: &Path, data: &[u8]) -> Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(Error::io("creating", parent))?;
    }
    std::fs::write(path, data).map_err(Error::io("writing", path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_files_are_the_projected_token_sources() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p"},
            "spec": {"containers": [], "volumes": [
                {"name": "data", "emptyDir": {}},
                {"name": "kube-api-access-x", "projected": {"sources": [
                    {"serviceAccountToken": {"path": "token", "expirationSeconds": 3607}},
                    {"configMap": {"name": "kube-root-ca.crt"}}]}},
                {"name": "vault", "projected": {"sources": [
                    {"serviceAccountToken": {"path": "t/vault", "audience": "vault"}}]}}]}
        }))
        .unwrap();
        assert_eq!(
            token_files(&pod, Path::new("/pods/u")),
            [
                PathBuf::from("/pods/u/volumes/kube-api-access-x/token"),
                PathBuf::from("/pods/u/volumes/vault/t/vault")
            ]
        );
    }

    #[test]
    fn cgroup_and_bpffs_host_paths_map_to_the_node() {
        let view = NodeView {
            cgroup_root: PathBuf::from("/sys/fs/cgroup/unified"),
            node_cgroup: PathBuf::from("/sys/fs/cgroup/unified/switchyard-lab/c/node1"),
            node_bpffs: Some(PathBuf::from("/sys/fs/bpf/switchyard-lab/c/node1")),
        };
        assert_eq!(host_path_on_node("/sys/fs/cgroup", &view), view.node_cgroup);
        assert_eq!(
            host_path_on_node("/sys/fs/cgroup/unified", &view),
            view.node_cgroup
        );
        assert_eq!(
            host_path_on_node("/sys/fs/bpf/switchyard", &view),
            PathBuf::from("/sys/fs/bpf/switchyard-lab/c/node1/switchyard")
        );
        assert_eq!(
            host_path_on_node("/run/xtables.lock", &view),
            PathBuf::from("/run/xtables.lock")
        );
        let no_bpf = NodeView {
            node_bpffs: None,
            ..view
        };
        assert_eq!(
            host_path_on_node("/sys/fs/bpf", &no_bpf),
            PathBuf::from("/sys/fs/bpf")
        );
    }
}
