//! Filling the benchmarks' Markdown templates: the prose of a report lives
//! in a `.md` file beside the code that measures it, with `{name}`
//! placeholders for the figures; the code formats the figures and tables.

/// `template` with every `{name}` of `values` replaced by its value.
/// Placeholders without a value, and other braces, stay as they are.
pub fn fill(template: &str, values: &[(&str, String)]) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let tail = &rest[open..];
        let value = tail.find('}').and_then(|close| {
            let name = &tail[1..close];
            let (_, v) = values.iter().find(|(n, _)| *n == name)?;
            Some((v, close))
        });
        match value {
            Some((v, close)) => {
                out.push_str(v);
                rest = &tail[close + 1..];
            }
            None => {
                out.push('{');
                rest = &tail[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fills_named_placeholders_and_leaves_other_braces() {
        let t = "N ∈ {1, 10}; `{cmd}` took {secs} s{missing}";
        let got = fill(t, &[("cmd", "make x".into()), ("secs", "1.5".into())]);
        assert_eq!(got, "N ∈ {1, 10}; `make x` took 1.5 s{missing}");
        assert_eq!(fill("{a}{a}", &[("a", "{a}".into())]), "{a}{a}");
        assert_eq!(fill("no braces", &[]), "no braces");
        assert_eq!(fill("open { only", &[]), "open { only");
    }
}
