#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use switchyard_abi::Counter;

use super::*;
use crate::flows::{PodName, Verdict};
use crate::observer::convert::tests::sample;

fn filters(white: Vec<pb::FlowFilter>, black: Vec<pb::FlowFilter>) -> Filters {
    Filters::new(&white, &black).unwrap()
}

#[test]
fn whitelists_match_any_filter_and_every_field_of_one() {
    let fwd = sample(Verdict::Forwarded, ("default", "web"));
    let drop = sample(Verdict::Dropped(Counter::DropNoBackend), ("shop", "cart"));
    let dropped = pb::FlowFilter {
        verdict: vec![pb::Verdict::Dropped as i32],
        ..Default::default()
    };
    let f = filters(vec![dropped.clone()], vec![]);
    assert!(!f.matches(&fwd) && f.matches(&drop));
    // Two fields of one filter: both must match.
    let both = pb::FlowFilter {
        destination_service: vec!["default/".into()],
        ..dropped.clone()
    };
    assert!(!filters(vec![both.clone()], vec![]).matches(&drop));
    // Two filters: either may match.
    let web = pb::FlowFilter {
        destination_service: vec!["default/we".into()],
        ..Default::default()
    };
    let f = filters(vec![both, web.clone()], vec![]);
    assert!(f.matches(&fwd) && !f.matches(&drop));
    // A name prefix without a namespace matches in any namespace.
    let cart = pb::FlowFilter {
        destination_service: vec!["car".into()],
        ..Default::default()
    };
    assert!(filters(vec![cart], vec![]).matches(&drop));
    // No whitelist: everything; a blacklist takes its matches out.
    let f = filters(vec![], vec![web]);
    assert!(!f.matches(&fwd) && f.matches(&drop));
}

#[test]
fn destination_networks_ports_and_protocols() {
    let fwd = sample(Verdict::Forwarded, ("default", "web"));
    let only = |f: pb::FlowFilter| filters(vec![f], vec![]).matches(&fwd);
    let ip = |s: &str| pb::FlowFilter {
        destination_ip: vec![s.into()],
        ..Default::default()
    };
    assert!(only(ip("10.244.0.0/16")) && only(ip("10.244.1.7")));
    assert!(!only(ip("10.96.0.10")) && !only(ip("10.245.0.0/16")));
    assert!(only(ip("0.0.0.0/0")));
    let port = |p: &str| pb::FlowFilter {
        destination_port: vec![p.into()],
        protocol: vec!["TCP".into()],
        ..Default::default()
    };
    assert!(only(port("8080")) && !only(port("80")));
}

#[test]
fn filters_it_cannot_evaluate_or_parse_are_refused() {
    let bad = [
        pb::FlowFilter {
            destination_pod: vec!["default/web".into()],
            ..Default::default()
        },
        pb::FlowFilter {
            source_ip: vec!["10.0.0.1".into()],
            ..Default::default()
        },
        pb::FlowFilter {
            destination_ip: vec!["10.0.0.0/33".into()],
            ..Default::default()
        },
        pb::FlowFilter {
            protocol: vec!["icmp".into()],
            ..Default::default()
        },
        pb::FlowFilter {
            destination_port: vec!["http".into()],
            ..Default::default()
        },
    ];
    for f in bad {
        assert!(
            Filters::new(&[], std::slice::from_ref(&f)).is_err(),
            "{f:?}"
        );
    }
}

#[test]
fn source_pods_match_by_namespace_and_name_prefix() {
    let mut drop = sample(Verdict::Dropped(Counter::DropNoBackend), ("shop", "cart"));
    let from = |p: &str| pb::FlowFilter {
        source_pod: vec![p.into()],
        ..Default::default()
    };
    // A flow whose client pod is unknown matches no pod filter.
    assert!(!filters(vec![from("app/")], vec![]).matches(&drop));
    drop.source = Some(PodName {
        namespace: Arc::from("app"),
        name: Arc::from("client-7d9"),
    });
    for (pattern, hit) in [
        ("app/", true),
        ("app/client", true),
        ("client", true),
        ("app/server", false),
        ("other/", false),
        ("other/client", false),
    ] {
        assert_eq!(
            filters(vec![from(pattern)], vec![]).matches(&drop),
            hit,
            "{pattern}"
        );
    }
}

#[test]
fn since_leaves_out_older_flows() {
    let fwd = sample(Verdict::Forwarded, ("default", "web"));
    let f = |since| filters(vec![], vec![]).since(Some(since));
    assert!(f(fwd.time).matches(&fwd));
    assert!(f(fwd.time - Duration::from_secs(1)).matches(&fwd));
    assert!(!f(fwd.time + Duration::from_nanos(1)).matches(&fwd));
}
