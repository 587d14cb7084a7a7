use super::*;

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// The agent image's config as `make images` writes it.
const AGENT_CONFIG: &str = r#"{"architecture":"amd64","created":"0001-01-01T00:00:00Z",
  "os":"linux","rootfs":{"type":"layers","diff_ids":["sha256:d0"]},
  "config":{"Entrypoint":["/usr/local/bin/switchyard-agent"],
  "Env":["PATH=/usr/sbin:/usr/bin"],"User":"0:0","WorkingDir":"/"}}"#;

#[test]
fn an_image_config_becomes_the_process_the_kubelet_would_start() {
    let config = image_config(AGENT_CONFIG.as_bytes()).unwrap();
    let p = process(&config, &[], &strings(&["--bpffs=/sys/fs/bpf"])).unwrap();
    assert_eq!(
        p.argv,
        ["/usr/local/bin/switchyard-agent", "--bpffs=/sys/fs/bpf"]
    );
    assert_eq!(
        p.env,
        [("PATH".to_string(), "/usr/sbin:/usr/bin".to_string())]
    );
    assert_eq!(p.user, Some((0, 0)));
    assert_eq!(p.workdir, "/");
}

#[test]
fn command_replaces_entrypoint_and_cmd_args_replace_cmd() {
    let config = ImageConfig {
        entrypoint: Some(strings(&["/e"])),
        cmd: Some(strings(&["c1", "c2"])),
        user: Some("65532".into()),
        ..Default::default()
    };
    let run = |command: &[&str], args: &[&str]| {
        process(&config, &strings(command), &strings(args))
            .unwrap()
            .argv
    };
    assert_eq!(run(&[], &[]), ["/e", "c1", "c2"]);
    assert_eq!(run(&[], &["a"]), ["/e", "a"]);
    assert_eq!(run(&["/x"], &[]), ["/x"]);
    assert_eq!(run(&["/x"], &["a"]), ["/x", "a"]);
    let p = process(&config, &[], &[]).unwrap();
    assert_eq!(p.user, Some((65532, 65532)));
    assert_eq!(p.workdir, "/");
}

#[test]
fn an_image_without_a_program_or_with_a_named_user_is_refused() {
    assert!(process(&ImageConfig::default(), &[], &[]).is_err());
    let named = ImageConfig {
        entrypoint: Some(strings(&["/e"])),
        user: Some("nobody".into()),
        ..Default::default()
    };
    assert!(process(&named, &[], &[]).is_err());
    assert!(image_config(b"{not json").is_err());
}

#[test]
fn whiteouts_remove_lower_entries_and_paths_stay_inside_the_root() {
    assert_eq!(
        layer_path(Path::new("./usr/sbin/nft")).unwrap(),
        LayerPath::Entry(PathBuf::from("usr/sbin/nft"))
    );
    assert_eq!(
        layer_path(Path::new("usr/sbin/.wh.nft")).unwrap(),
        LayerPath::Remove(PathBuf::from("usr/sbin/nft"))
    );
    assert_eq!(
        layer_path(Path::new("etc/.wh..wh..opq")).unwrap(),
        LayerPath::Opaque(PathBuf::from("etc"))
    );
    assert_eq!(
        layer_path(Path::new("/.wh..wh..opq")).unwrap(),
        LayerPath::Opaque(PathBuf::new())
    );
    assert!(layer_path(Path::new("usr/../../etc/passwd")).is_err());
}

#[test]
fn a_layout_names_its_manifest_and_blobs_by_digest() {
    let index = br#"{"schemaVersion":2,"manifests":[{"mediaType":
      "application/vnd.oci.image.manifest.v1+json","size":406,"digest":"sha256:ab12"}]}"#;
    assert_eq!(manifest_digest(index).unwrap(), "sha256:ab12");
    assert!(manifest_digest(br#"{"manifests":[]}"#).is_err());
    let m = manifest(
        br#"{"schemaVersion":2,"config":{"mediaType":"application/vnd.oci.image.config.v1+json",
        "digest":"sha256:c0"},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip",
        "digest":"sha256:l1"}]}"#,
    )
    .unwrap();
    assert_eq!(m.layers.len(), 1);
    assert_eq!(
        compression(&m.layers[0].media_type).unwrap(),
        Compression::Gzip
    );
    assert_eq!(
        compression("application/vnd.oci.image.layer.v1.tar").unwrap(),
        Compression::None
    );
    assert!(compression("application/vnd.oci.image.layer.v1.tar+zstd").is_err());
    assert_eq!(
        blob_path(Path::new("/l"), "sha256:c0").unwrap(),
        PathBuf::from("/l/blobs/sha256/c0")
    );
    assert!(blob_path(Path::new("/l"), "sha256:../../x").is_err());
    assert!(blob_path(Path::new("/l"), "c0").is_err());
}

#[test]
fn a_relative_program_is_found_on_the_image_path() {
    let env = vec![("PATH".to_string(), "/usr/sbin:/bin".to_string())];
    let found = resolve_program("nft", &env, |p| p == "/usr/sbin/nft");
    assert_eq!(found.as_deref(), Some("/usr/sbin/nft"));
    assert_eq!(
        resolve_program("/x", &env, |_| false).as_deref(),
        Some("/x")
    );
    assert_eq!(resolve_program("nope", &env, |_| false), None);
}
