//! Unpacking an OCI image layout into a root filesystem: the layers in
//! order, each one's whiteouts first (they remove what the layers below
//! hold), then its entries with their modes and owners. Unpacked roots are
//! cached by manifest digest, so a cluster's nodes and the next run share
//! one; a root is built in a temporary directory and renamed into place
//! whole, so a killed run leaves no half-unpacked cache entry.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use super::oci::{self, Compression, ImageConfig, LayerPath};
use crate::error::{Error, Result};

static UNPACKING: Mutex<()> = Mutex::new(());

/// An image ready to run.
#[derive(Debug, Clone)]
pub struct Unpacked {
    /// The manifest digest.
    pub digest: String,
    /// The unpacked root filesystem (shared: never written).
    pub rootfs: PathBuf,
    /// The image config.
    pub config: ImageConfig,
}

/// How many unpacked roots the cache keeps.
const KEEP: usize = 6;

fn invalid(layout: &Path) -> impl Fn(String) -> Error + '_ {
    move |why| Error::Config(format!("image {}: {why}", layout.display()))
}

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(Error::io("reading", path))
}

/// The image in the OCI layout `layout`, unpacked under `cache` (unless
/// it is already).
pub fn unpack(layout: &Path, cache: &Path) -> Result<Unpacked> {
    let bad = invalid(layout);
    let digest = oci::manifest_digest(&read(&layout.join("index.json"))?).map_err(&bad)?;
    let manifest =
        oci::manifest(&read(&oci::blob_path(layout, &digest).map_err(&bad)?)?).map_err(&bad)?;
    let config_blob = oci::blob_path(layout, &manifest.config.digest).map_err(&bad)?;
    let config = oci::image_config(&read(&config_blob)?).map_err(&bad)?;
    let key = digest.replace(':', "-");
    let dir = cache.join(&key);
    let rootfs = dir.join("rootfs");
    // One unpack at a time in this process: the nodes' pods start at once,
    // and their tasks would share the temporary directory below.
    let _one = UNPACKING.lock().unwrap_or_else(PoisonError::into_inner);
    if !dir.join("complete").exists() {
        std::fs::create_dir_all(cache).map_err(Error::io("creating", cache))?;
        let tmp = cache.join(format!("{key}.tmp.{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        let root = tmp.join("rootfs");
        std::fs::create_dir_all(&root).map_err(Error::io("creating", &root))?;
        for layer in &manifest.layers {
            let blob = oci::blob_path(layout, &layer.digest).map_err(&bad)?;
            let compression = oci::compression(&layer.media_type).map_err(&bad)?;
            apply_layer(&blob, compression, &root).map_err(&bad)?;
        }
        std::fs::write(tmp.join("complete"), &digest).map_err(Error::io("writing", &tmp))?;
        // Another run of the lab may have finished the same image first.
        if std::fs::rename(&tmp, &dir).is_err() {
            let _ = std::fs::remove_dir_all(&tmp);
            if !dir.join("complete").exists() {
                return Err(bad(format!("cannot move the rootfs to {}", dir.display())));
            }
        }
        prune(cache, &dir);
    }
    Ok(Unpacked {
        digest,
        rootfs,
        config,
    })
}

fn archive(
    blob: &Path,
    compression: Compression,
) -> std::result::Result<tar::Archive<Box<dyn Read>>, String> {
    let file = File::open(blob).map_err(|e| format!("{}: {e}", blob.display()))?;
    let reader: Box<dyn Read> = match compression {
        Compression::None => Box::new(std::io::BufReader::new(file)),
        Compression::Gzip => Box::new(flate2::read::GzDecoder::new(std::io::BufReader::new(file))),
    };
    let mut a = tar::Archive::new(reader);
    a.set_preserve_permissions(true);
    a.set_preserve_ownerships(true);
    a.set_overwrite(true);
    a.set_unpack_xattrs(false);
    Ok(a)
}

/// Applies one layer to `root`: its whiteouts, then its entries.
fn apply_layer(
    blob: &Path,
    compression: Compression,
    root: &Path,
) -> std::result::Result<(), String> {
    let what = |e: std::io::Error| format!("layer {}: {e:?}", blob.display());
    let mut whiteouts = Vec::new();
    let mut first = archive(blob, compression)?;
    for entry in first.entries().map_err(what)? {
        let entry = entry.map_err(what)?;
        match oci::layer_path(&entry.path().map_err(what)?)? {
            LayerPath::Entry(_) => {}
            w => whiteouts.push(w),
        }
    }
    for w in &whiteouts {
        remove(root, w).map_err(what)?;
    }
    let mut second = archive(blob, compression)?;
    for entry in second.entries().map_err(what)? {
        let mut entry = entry.map_err(what)?;
        if let LayerPath::Entry(_) = oci::layer_path(&entry.path().map_err(what)?)? {
            entry.unpack_in(root).map_err(what)?;
        }
    }
    Ok(())
}

/// Removes what a whiteout hides in the layers below.
fn remove(root: &Path, w: &LayerPath) -> std::io::Result<()> {
    let gone = |r: std::io::Result<()>| match r {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        other => other,
    };
    match w {
        LayerPath::Entry(_) => Ok(()),
        LayerPath::Remove(p) => {
            let path = root.join(p);
            match std::fs::symlink_metadata(&path) {
                Ok(m) if m.is_dir() => gone(std::fs::remove_dir_all(&path)),
                Ok(_) => gone(std::fs::remove_file(&path)),
                Err(_) => Ok(()),
            }
        }
        LayerPath::Opaque(d) => {
            let Ok(entries) = std::fs::read_dir(root.join(d)) else {
                return Ok(());
            };
            for e in entries.flatten() {
                remove(root, &LayerPath::Remove(d.join(e.file_name())))?;
            }
            Ok(())
        }
    }
}

/// Keeps the newest [`KEEP`] unpacked roots (and `current`).
fn prune(cache: &Path, current: &Path) {
    let Ok(entries) = std::fs::read_dir(cache) else {
        return;
    };
    let mut roots: Vec<(std::time::SystemTime, PathBuf)> = entries
        .flatten()
        .filter(|e| e.path().join("complete").exists())
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .collect();
    roots.sort();
    roots.reverse();
    for (_, old) in roots.into_iter().skip(KEEP) {
        if old != current {
            let _ = std::fs::remove_dir_all(old);
        }
    }
}

/// Where unpacked roots are cached: `$SWITCHYARD_CACHE/images/rootfs`
/// (default `~/.cache/switchyard`).
pub fn cache_dir() -> PathBuf {
    let base = std::env::var_os("SWITCHYARD_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/switchyard")))
        .unwrap_or_else(|| PathBuf::from("/var/cache/switchyard"));
    base.join("images/rootfs")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_with(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, data) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(0);
            h.set_cksum();
            b.append_data(&mut h, name, *data).expect("append");
        }
        b.into_inner().expect("tar")
    }

    /// Two plain-tar layers: the second removes a file and empties a
    /// directory of the first, and adds to it.
    #[test]
    fn later_layers_remove_what_their_whiteouts_name() {
        let tmp = std::env::temp_dir().join(format!("sy-unpack-{}", std::process::id()));
        let root = tmp.join("root");
        std::fs::create_dir_all(&root).expect("mkdir");
        let lower = tmp.join("lower.tar");
        let upper = tmp.join("upper.tar");
        let lower_entries: [(&str, &[u8]); 3] =
            [("usr/sbin/nft", b"nft"), ("etc/a", b"a"), ("etc/b", b"b")];
        std::fs::write(&lower, tar_with(&lower_entries)).expect("write");
        let upper_entries: [(&str, &[u8]); 3] = [
            ("etc/c", b"c"),
            ("etc/.wh..wh..opq", b""),
            ("usr/sbin/.wh.nft", b""),
        ];
        std::fs::write(&upper, tar_with(&upper_entries)).expect("write");
        apply_layer(&lower, Compression::None, &root).expect("lower");
        apply_layer(&upper, Compression::None, &root).expect("upper");
        assert!(!root.join("usr/sbin/nft").exists());
        assert!(root.join("usr/sbin").is_dir());
        assert!(!root.join("etc/a").exists() && !root.join("etc/b").exists());
        assert_eq!(std::fs::read(root.join("etc/c")).expect("c"), b"c");
        assert!(!root.join("etc/.wh..wh..opq").exists());
        let _ = std::fs::remove_dir_all(&tmp);
    }
}
