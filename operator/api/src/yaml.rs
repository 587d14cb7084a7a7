//! YAML that YAML 1.1 readers (kubectl, go-yaml v2, many GitOps tools) read
//! as we meant it. `serde_yaml` writes YAML 1.2, where `Off`, `on`, `yes`
//! and `y` are plain strings; a YAML 1.1 parser turns them into booleans, and
//! the API server then rejects the CRD (`default: Off`, `enum: [Active,
//! Off]` become `false`). [`quote_yaml11_booleans`] double-quotes such
//! plain scalars; block scalars (descriptions) are left as they are.

/// Plain scalars YAML 1.1 reads as booleans but YAML 1.2 reads as strings
/// (`true`/`false` are booleans in both, and serde_yaml already quotes the
/// strings "true"/"false").
const YAML11_ONLY_BOOLEANS: [&str; 16] = [
    "y", "Y", "yes", "Yes", "YES", "n", "N", "no", "No", "NO", "on", "On", "ON", "off", "Off",
    "OFF",
];

/// Double-quotes every plain mapping value or sequence item that is a YAML
/// 1.1-only boolean, outside block scalars.
pub fn quote_yaml11_booleans(yaml: &str) -> String {
    let mut out = String::with_capacity(yaml.len());
    // Indentation of the line that opened the block scalar we are in.
    let mut block: Option<usize> = None;
    for line in yaml.lines() {
        let indent = line.len() - line.trim_start().len();
        if let Some(opener) = block {
            if line.trim().is_empty() || indent > opener {
                out.push_str(line);
                out.push('\n');
                continue;
            }
            block = None;
        }
        let (prefix, value) = split_value(line);
        if YAML11_ONLY_BOOLEANS.contains(&value) {
            out.push_str(prefix);
            out.push('"');
            out.push_str(value);
            out.push('"');
        } else {
            out.push_str(line);
        }
        out.push('\n');
        if is_block_indicator(value) {
            block = Some(indent);
        }
    }
    out
}

/// Splits `key: value` or `- value` (possibly `- key: value`) into the part
/// before the scalar and the scalar.
fn split_value(line: &str) -> (&str, &str) {
    if let Some(at) = line.find(": ") {
        return (&line[..at + 2], &line[at + 2..]);
    }
    let trimmed = line.trim_start();
    if let Some(rest) = trimmed.strip_prefix("- ") {
        let at = line.len() - rest.len();
        return (&line[..at], rest);
    }
    (line, "")
}

fn is_block_indicator(value: &str) -> bool {
    let v = value.trim_end();
    v.starts_with('|') || v.starts_with('>')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_yaml11_booleans_in_values_and_items_only() {
        let yaml = "default: Off\nenum:\n- Active\n- Off\nname: on-call\nflag: true\n- key: yes\n";
        assert_eq!(
            quote_yaml11_booleans(yaml),
            "default: \"Off\"\nenum:\n- Active\n- \"Off\"\nname: on-call\nflag: true\n- key: \"yes\"\n"
        );
    }

    #[test]
    fn leaves_block_scalars_alone() {
        let yaml = "description: |-\n  Mode:\n  - Off\n  key: No\nnext: Off\n";
        assert_eq!(
            quote_yaml11_booleans(yaml),
            "description: |-\n  Mode:\n  - Off\n  key: No\nnext: \"Off\"\n"
        );
    }

    #[test]
    fn the_generated_crds_read_the_same_and_keep_no_yaml11_boolean() {
        for crd in crate::crds() {
            let text = crate::crd_yaml(&crd).unwrap();
            let back: k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition =
                serde_yaml::from_str(&text).unwrap();
            assert_eq!(back, crd, "quoting changed the meaning");
            for line in text.lines() {
                let (_, value) = split_value(line);
                assert!(
                    !YAML11_ONLY_BOOLEANS.contains(&value),
                    "unquoted YAML 1.1 boolean: {line}"
                );
            }
        }
    }
}
