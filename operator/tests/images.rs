//! `config/images/`: each Dockerfile builds the image `make images`
//! (`build.sh`) builds: the same entrypoint, user, PATH and working
//! directory, and the same list of paths handed to `collect.sh` (which
//! copies them with their libraries in both builds).

use std::path::PathBuf;

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn images_dir() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from)
        .join("../config/images")
}

/// What an image is, as one of the two builds states it.
#[derive(Debug, PartialEq, Eq)]
struct ImageSpec {
    entrypoint: String,
    user: String,
    path: String,
    workdir: String,
    collected: Vec<String>,
}

/// Shell words with their quotes removed.
fn words(text: &str) -> Vec<String> {
    text.split_whitespace()
        .map(|w| w.trim_matches(|c| c == '\'' || c == '"'))
        .filter(|w| !w.is_empty() && *w != "\\")
        .map(str::to_string)
        .collect()
}

/// The elements of the bash array `NAME=(...)` (one or more lines).
fn shell_array(script: &str, name: &str) -> Option<Vec<String>> {
    let open = format!("{name}=(");
    let mut lines = script.lines().skip_while(|l| !l.starts_with(&open));
    let mut text = lines.next()?.strip_prefix(&open)?.to_string();
    while !text.contains(')') {
        let line = lines.next()?;
        if !line.trim_start().starts_with('#') {
            text.push(' ');
            text.push_str(line);
        }
    }
    Some(words(text.split(')').next()?))
}

/// The words after `start` of the Dockerfile instruction beginning with
/// it, its continuation lines included.
fn instruction_words(dockerfile: &str, start: &str) -> Option<Vec<String>> {
    let mut lines = dockerfile.lines().skip_while(|l| !l.starts_with(start));
    let mut line = lines.next()?.strip_prefix(start)?;
    let mut text = String::new();
    loop {
        text.push(' ');
        text.push_str(line);
        if !line.trim_end().ends_with('\\') {
            break;
        }
        line = lines.next()?;
    }
    Some(words(&text))
}

fn shell_var(script: &str, name: &str) -> Option<String> {
    script
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name}=")))
        .map(str::to_string)
}

fn from_script(script: &str, image: &str) -> Option<ImageSpec> {
    let upper = image.to_ascii_uppercase();
    let mut collected = vec![format!("=/usr/local/bin/switchyard-{image}")];
    collected.extend(shell_array(script, &format!("{upper}_TOOLS"))?);
    Some(ImageSpec {
        entrypoint: shell_var(script, &format!("{upper}_ENTRYPOINT"))?,
        user: shell_var(script, &format!("{upper}_USER"))?,
        path: shell_var(script, "IMAGE_PATH")?,
        workdir: "/".into(),
        collected,
    })
}

fn instruction(dockerfile: &str, name: &str) -> Option<String> {
    dockerfile
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .map(str::to_string)
}

fn from_dockerfile(dockerfile: &str) -> Option<ImageSpec> {
    let entrypoint: Vec<String> =
        serde_json::from_str(&instruction(dockerfile, "ENTRYPOINT")?).ok()?;
    let mut collected = instruction_words(dockerfile, "RUN /collect.sh /rootfs")?;
    // The binary's source differs (the build stage's file, the host's
    // build); its place in the image must not.
    let first = collected.first_mut()?;
    *first = first.find('=').map(|i| first[i..].to_string())?;
    Some(ImageSpec {
        entrypoint: entrypoint.first()?.clone(),
        user: instruction(dockerfile, "USER")?,
        path: instruction(dockerfile, "ENV")?
            .strip_prefix("PATH=")?
            .to_string(),
        workdir: instruction(dockerfile, "WORKDIR")?,
        collected,
    })
}

#[test]
fn each_dockerfile_builds_what_the_image_script_builds() -> TestResult {
    let script = std::fs::read_to_string(images_dir().join("build.sh"))?;
    for image in ["operator", "agent"] {
        let dockerfile = std::fs::read_to_string(images_dir().join(format!("{image}.Dockerfile")))?;
        let want = from_script(&script, image).ok_or("build.sh: unreadable image settings")?;
        let got = from_dockerfile(&dockerfile).ok_or("Dockerfile: unreadable")?;
        assert_eq!(got, want, "{image}");
    }
    Ok(())
}

#[test]
fn the_agent_image_holds_every_program_the_agent_runs() -> TestResult {
    let script = std::fs::read_to_string(images_dir().join("build.sh"))?;
    let spec = from_script(&script, "agent").ok_or("build.sh: unreadable")?;
    for program in [
        "iptables-nft-save",
        "iptables-nft-restore",
        "iptables-legacy-save",
        "iptables-legacy-restore",
        "ip6tables-nft-save",
        "ip6tables-legacy-restore",
        "nft",
        "ipset",
        "ip",
        "ipvsadm?",
    ] {
        assert!(spec.collected.iter().any(|c| c == program), "{program}");
    }
    Ok(())
}
