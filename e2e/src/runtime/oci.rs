//! OCI images as the runtime reads them (pure): an image layout's index and
//! manifest, the image config, layer whiteouts, and the process a container
//! runs from the image config and the container's `command` and `args`.

use std::path::{Component, Path, PathBuf};

use serde::Deserialize;

/// An error in an image's metadata, with what was being read.
pub type Invalid = String;

/// `index.json` of an image layout, or a manifest's descriptors.
#[derive(Debug, Deserialize)]
struct Index {
    manifests: Vec<Descriptor>,
}

/// A content descriptor.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Descriptor {
    /// `mediaType`.
    #[serde(rename = "mediaType", default)]
    pub media_type: String,
    /// `sha256:<hex>`.
    pub digest: String,
}

/// An image manifest: the config and the layers, bottom first.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Manifest {
    /// The config blob.
    pub config: Descriptor,
    /// The layer blobs, in the order they apply.
    pub layers: Vec<Descriptor>,
}

/// The part of an image config a runtime uses.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
pub struct ImageConfig {
    /// `config.Entrypoint`.
    #[serde(rename = "Entrypoint", default)]
    pub entrypoint: Option<Vec<String>>,
    /// `config.Cmd`.
    #[serde(rename = "Cmd", default)]
    pub cmd: Option<Vec<String>>,
    /// `config.Env` (`NAME=value`).
    #[serde(rename = "Env", default)]
    pub env: Option<Vec<String>>,
    /// `config.User`.
    #[serde(rename = "User", default)]
    pub user: Option<String>,
    /// `config.WorkingDir`.
    #[serde(rename = "WorkingDir", default)]
    pub working_dir: Option<String>,
}

#[derive(Debug, Deserialize)]
struct ConfigFile {
    #[serde(default)]
    config: ImageConfig,
}

/// The manifest digest `index.json` names (its first manifest: the
/// layouts the lab runs hold one image).
pub fn manifest_digest(index_json: &[u8]) -> Result<String, Invalid> {
    let index: Index =
        serde_json::from_slice(index_json).map_err(|e| format!("index.json: {e}"))?;
    index
        .manifests
        .first()
        .map(|d| d.digest.clone())
        .ok_or_else(|| "index.json names no manifest".into())
}

/// Parses a manifest blob.
pub fn manifest(json: &[u8]) -> Result<Manifest, Invalid> {
    serde_json::from_slice(json).map_err(|e| format!("manifest: {e}"))
}

/// Parses a config blob.
pub fn image_config(json: &[u8]) -> Result<ImageConfig, Invalid> {
    serde_json::from_slice::<ConfigFile>(json)
        .map(|c| c.config)
        .map_err(|e| format!("image config: {e}"))
}

/// Where a blob lives in a layout: `blobs/<algorithm>/<hex>`; a digest
/// that could name another path is refused.
pub fn blob_path(layout: &Path, digest: &str) -> Result<PathBuf, Invalid> {
    let (algorithm, hex) = digest
        .split_once(':')
        .ok_or_else(|| format!("digest {digest:?} has no algorithm"))?;
    let plain = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric());
    if !plain(algorithm) || !plain(hex) {
        return Err(format!("digest {digest:?} is malformed"));
    }
    Ok(layout.join("blobs").join(algorithm).join(hex))
}

/// How a layer blob is compressed, from its media type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// A plain tar.
    None,
    /// gzip.
    Gzip,
}

/// The compression of a layer with this media type.
pub fn compression(media_type: &str) -> Result<Compression, Invalid> {
    if media_type.ends_with(".tar") || media_type.ends_with("tar.layer") {
        Ok(Compression::None)
    } else if media_type.ends_with("tar+gzip") || media_type.ends_with("tar.gzip") {
        Ok(Compression::Gzip)
    } else {
        Err(format!("layer media type {media_type:?} is not supported"))
    }
}

/// What a layer entry's name means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LayerPath {
    /// A file, directory or link at this path (relative, clean).
    Entry(PathBuf),
    /// `.wh.NAME`: the lower layers' `NAME` is removed.
    Remove(PathBuf),
    /// `.wh..wh..opq` in a directory: the lower layers' contents of that
    /// directory are removed.
    Opaque(PathBuf),
}

/// Classifies a layer entry's path, refusing one that leaves the root.
pub fn layer_path(raw: &Path) -> Result<LayerPath, Invalid> {
    let mut clean = PathBuf::new();
    for c in raw.components() {
        match c {
            Component::Normal(part) => clean.push(part),
            Component::CurDir | Component::RootDir => {}
            Component::ParentDir | Component::Prefix(_) => {
                return Err(format!("layer entry {} leaves the root", raw.display()));
            }
        }
    }
    let name = clean
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let dir = clean.parent().map(Path::to_path_buf).unwrap_or_default();
    Ok(if name == ".wh..wh..opq" {
        LayerPath::Opaque(dir)
    } else if let Some(hidden) = name.strip_prefix(".wh.") {
        LayerPath::Remove(dir.join(hidden))
    } else {
        LayerPath::Entry(clean)
    })
}

/// A container's process as the image and the pod define it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessSpec {
    /// The program (absolute, inside the image) and its arguments.
    pub argv: Vec<String>,
    /// The image's environment, in order.
    pub env: Vec<(String, String)>,
    /// The image's user and group, if numeric ones are set.
    pub user: Option<(u32, u32)>,
    /// The working directory.
    pub workdir: String,
}

/// The process of a container with `command` and `args` (already
/// expanded) in an image with `config`, as the kubelet combines them:
/// `command` replaces the entrypoint (and drops the image's cmd), `args`
/// replaces the cmd.
pub fn process(
    config: &ImageConfig,
    command: &[String],
    args: &[String],
) -> Result<ProcessSpec, Invalid> {
    let entrypoint = config.entrypoint.clone().unwrap_or_default();
    let cmd = config.cmd.clone().unwrap_or_default();
    let argv: Vec<String> = match (command.is_empty(), args.is_empty()) {
        (false, _) => command.iter().chain(args).cloned().collect(),
        (true, false) => entrypoint.into_iter().chain(args.iter().cloned()).collect(),
        (true, true) => entrypoint.into_iter().chain(cmd).collect(),
    };
    if argv.is_empty() {
        return Err("the image has no entrypoint or cmd and the container no command".into());
    }
    Ok(ProcessSpec {
        argv,
        env: image_env(config),
        user: image_user(config)?,
        workdir: config
            .working_dir
            .clone()
            .filter(|w| !w.is_empty())
            .unwrap_or_else(|| "/".into()),
    })
}

/// The image's environment (`NAME=value` entries), in order.
pub fn image_env(config: &ImageConfig) -> Vec<(String, String)> {
    config
        .env
        .iter()
        .flatten()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The image's user: a numeric `uid[:gid]` (the group defaults to the
/// uid, as for images without a group database); none is root.
pub fn image_user(config: &ImageConfig) -> Result<Option<(u32, u32)>, Invalid> {
    let spec = config.user.as_deref().unwrap_or_default();
    if spec.is_empty() {
        return Ok(None);
    }
    let number = |s: &str| {
        s.parse::<u32>().map_err(|_| {
            format!("image user {spec:?} is not numeric (the lab has no user database)")
        })
    };
    let (uid, gid) = match spec.split_once(':') {
        Some((u, g)) => (number(u)?, number(g)?),
        None => {
            let u = number(spec)?;
            (u, u)
        }
    };
    Ok(Some((uid, gid)))
}

/// The program of `argv[0]` inside the image: itself when absolute, else
/// the first directory of the image's `PATH` holding it (`exists` tells).
pub fn resolve_program(
    program: &str,
    env: &[(String, String)],
    exists: impl Fn(&str) -> bool,
) -> Option<String> {
    if program.starts_with('/') {
        return Some(program.to_string());
    }
    let path = env.iter().rev().find(|(k, _)| k == "PATH").map_or(
        "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        |(_, v)| v,
    );
    path.split(':')
        .filter(|d| d.starts_with('/'))
        .map(|d| format!("{}/{program}", d.trim_end_matches('/')))
        .find(|p| exists(p))
}

#[cfg(test)]
mod tests;
