//! Node selection and wave layout.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use switchyard_api::Strategy;

use super::PlanError;

/// Whether `labels` match `selector` (`None` matches everything).
pub fn selects(
    selector: Option<&LabelSelector>,
    labels: &BTreeMap<String, String>,
) -> Result<bool, PlanError> {
    let Some(sel) = selector else {
        return Ok(true);
    };
    for (k, v) in sel.match_labels.iter().flatten() {
        if labels.get(k) != Some(v) {
            return Ok(false);
        }
    }
    for e in sel.match_expressions.iter().flatten() {
        let value = labels.get(&e.key);
        let values = e.values.as_deref().unwrap_or_default();
        let ok = match e.operator.as_str() {
            "In" => value.is_some_and(|v| values.contains(v)),
            "NotIn" => value.is_none_or(|v| !values.contains(v)),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            other => return Err(PlanError::BadSelectorOperator(other.to_string())),
        };
        if !ok {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Nodes per wave after the canaries, for `total` selected nodes.
pub fn wave_size(size: &IntOrString, total: usize) -> Result<usize, PlanError> {
    let n = match size {
        IntOrString::Int(n) => usize::try_from(*n).unwrap_or(0),
        IntOrString::String(s) => {
            let pct: usize = s
                .strip_suffix('%')
                .and_then(|p| p.parse().ok())
                .filter(|p| (1..=100).contains(p))
                .ok_or_else(|| PlanError::BadWaveSize(s.clone()))?;
            (total * pct).div_ceil(100)
        }
    };
    Ok(n.max(1))
}

/// Lays out `selected` nodes in waves: the explicit order first, the rest
/// by name; the first `canary_nodes` alone in wave 0, then chunks of the
/// wave size.
pub fn compute(
    strategy: &Strategy,
    selected: &BTreeSet<String>,
) -> Result<Vec<Vec<String>>, PlanError> {
    let mut ordered: Vec<String> = Vec::with_capacity(selected.len());
    let mut seen = BTreeSet::new();
    for name in &strategy.node_order {
        if selected.contains(name) && seen.insert(name.clone()) {
            ordered.push(name.clone());
        }
    }
    ordered.extend(selected.iter().filter(|n| !seen.contains(*n)).cloned());

    let size = wave_size(&strategy.wave_size, ordered.len())?;
    let canaries = (strategy.canary_nodes as usize).min(ordered.len());
    let mut waves = Vec::new();
    if canaries > 0 {
        waves.push(ordered[..canaries].to_vec());
    }
    waves.extend(ordered[canaries..].chunks(size).map(<[String]>::to_vec));
    Ok(waves)
}

/// The largest number of nodes a wave of this plan may hold.
pub fn max_in_flight(strategy: &Strategy, total: usize) -> Result<usize, PlanError> {
    Ok(wave_size(&strategy.wave_size, total)?.max(strategy.canary_nodes as usize))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    fn names(n: usize) -> BTreeSet<String> {
        (0..n).map(|i| format!("node-{i:02}")).collect()
    }

    fn strategy(canary: u32, size: IntOrString) -> Strategy {
        Strategy {
            canary_nodes: canary,
            wave_size: size,
            ..Strategy::default()
        }
    }

    #[test]
    fn canary_wave_then_percentage_waves_rounded_up() {
        let w = compute(&strategy(1, IntOrString::String("25%".into())), &names(10)).unwrap();
        // 25% of 10 = 2.5 -> 3 per wave after the single canary.
        let sizes: Vec<_> = w.iter().map(Vec::len).collect();
        assert_eq!(sizes, vec![1, 3, 3, 3]);
        assert_eq!(w[0], vec!["node-00".to_string()]);
        assert_eq!(w.concat(), names(10).into_iter().collect::<Vec<_>>());
    }

    #[test]
    fn explicit_order_first_unknown_names_ignored() {
        let mut s = strategy(2, IntOrString::Int(5));
        s.node_order = vec![
            "node-03".into(),
            "ghost".into(),
            "node-01".into(),
            "node-03".into(),
        ];
        let w = compute(&s, &names(4)).unwrap();
        assert_eq!(
            w,
            vec![vec!["node-03", "node-01"], vec!["node-00", "node-02"]]
        );
    }

    #[test]
    fn no_canary_and_count_waves() {
        let w = compute(&strategy(0, IntOrString::Int(2)), &names(5)).unwrap();
        assert_eq!(w.iter().map(Vec::len).collect::<Vec<_>>(), vec![2, 2, 1]);
        assert!(
            compute(&strategy(3, IntOrString::Int(2)), &BTreeSet::new())
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn wave_size_bounds() {
        assert_eq!(wave_size(&IntOrString::String("1%".into()), 3).unwrap(), 1);
        assert_eq!(
            wave_size(&IntOrString::String("100%".into()), 7).unwrap(),
            7
        );
        assert_eq!(wave_size(&IntOrString::Int(0), 7).unwrap(), 1);
        assert!(matches!(
            wave_size(&IntOrString::String("150%".into()), 3),
            Err(PlanError::BadWaveSize(_))
        ));
        assert!(wave_size(&IntOrString::String("ten".into()), 3).is_err());
    }

    #[test]
    fn selector_semantics() {
        let labels: BTreeMap<String, String> = [("pool".to_string(), "a".to_string())]
            .into_iter()
            .collect();
        assert!(selects(None, &labels).unwrap());
        let req = |op: &str, vals: &[&str]| LabelSelector {
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "pool".into(),
                operator: op.into(),
                values: Some(vals.iter().map(|s| s.to_string()).collect()),
            }]),
            ..LabelSelector::default()
        };
        assert!(selects(Some(&req("In", &["a", "b"])), &labels).unwrap());
        assert!(!selects(Some(&req("NotIn", &["a"])), &labels).unwrap());
        assert!(selects(Some(&req("Exists", &[])), &labels).unwrap());
        assert!(!selects(Some(&req("DoesNotExist", &[])), &labels).unwrap());
        assert!(selects(Some(&req("Bogus", &[])), &labels).is_err());
        let ml = LabelSelector {
            match_labels: Some(
                [("pool".to_string(), "b".to_string())]
                    .into_iter()
                    .collect(),
            ),
            ..LabelSelector::default()
        };
        assert!(!selects(Some(&ml), &labels).unwrap());
    }
}
