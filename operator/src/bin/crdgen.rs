//! Writes the CRDs generated from `switchyard-api` into a directory
//! (default `crds/`), one `<plural>.<group>.yaml` per resource.

use std::path::PathBuf;

fn main() -> anyhow::Result<()> {
    let dir = PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "crds".into()));
    std::fs::create_dir_all(&dir)?;
    for crd in switchyard_api::crds() {
        let path = dir.join(switchyard_api::crd_file_name(&crd));
        std::fs::write(&path, switchyard_api::crd_yaml(&crd)?)?;
        println!("wrote {}", path.display());
    }
    let path = dir.join("kustomization.yaml");
    std::fs::write(&path, switchyard_api::crds_kustomization())?;
    println!("wrote {}", path.display());
    Ok(())
}
