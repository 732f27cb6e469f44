use std::collections::{BTreeSet, HashMap};

use proptest::prelude::*;

use super::*;

fn node(key: u32, links: &[(&str, &str)]) -> Node<u32> {
    Node {
        key,
        links: links
            .iter()
            .map(|(r, v)| ((*r).to_owned(), (*v).to_owned()))
            .collect(),
    }
}

fn rules(limits: &[(&str, usize)]) -> Rules {
    Rules {
        priority: vec!["user_id".into(), "email".into(), "phone".into()],
        limits: limits.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect(),
    }
}

fn partition(clusters: &[Cluster<u32>]) -> Vec<Vec<u32>> {
    clusters.iter().map(|c| c.members.clone()).collect()
}

#[test]
fn a_chain_merges_into_one_profile() {
    let nodes = vec![
        node(1, &[("email", "a@x.io")]),
        node(2, &[("email", "a@x.io"), ("phone", "+331")]),
        node(3, &[("phone", "+331")]),
    ];
    let clusters = resolve(&nodes, &rules(&[]));
    assert_eq!(partition(&clusters), vec![vec![1, 2, 3]]);
    let evidence: Vec<(&str, &str, u32, u32)> = clusters[0]
        .links
        .iter()
        .map(|l| (l.rule.as_str(), l.value.as_str(), l.a, l.b))
        .collect();
    assert_eq!(
        evidence,
        vec![("email", "a@x.io", 1, 2), ("phone", "+331", 2, 3)]
    );
}

#[test]
fn a_merge_that_breaks_a_limit_is_dropped_and_priority_decides() {
    // 1 and 2 are different users sharing a family phone; 3 shares 1's email.
    let nodes = vec![
        node(
            1,
            &[
                ("user_id", "u1"),
                ("email", "ann@x.io"),
                ("phone", "+33100"),
            ],
        ),
        node(2, &[("user_id", "u2"), ("phone", "+33100")]),
        node(3, &[("email", "ann@x.io"), ("phone", "+33100")]),
    ];
    let clusters = resolve(&nodes, &rules(&[("user_id", 1)]));
    assert_eq!(partition(&clusters), vec![vec![1, 3], vec![2]]);
    // Without the limit the phone joins everyone.
    assert_eq!(
        partition(&resolve(&nodes, &rules(&[]))),
        vec![vec![1, 2, 3]]
    );
}

#[test]
fn records_without_links_stay_alone() {
    let nodes = vec![node(2, &[]), node(1, &[("email", "x@x.io")])];
    assert_eq!(
        partition(&resolve(&nodes, &rules(&[]))),
        vec![vec![1], vec![2]]
    );
}

fn arb_nodes() -> impl Strategy<Value = Vec<Node<u32>>> {
    let link = (0usize..4, 0u8..6).prop_map(|(kind, value)| {
        let kind = ["user_id", "email", "phone", "crm_id"][kind];
        (kind.to_owned(), format!("{kind}-{value}"))
    });
    prop::collection::vec(prop::collection::vec(link, 0..4), 1..40).prop_map(|all| {
        all.into_iter()
            .enumerate()
            .map(|(i, links)| Node {
                key: i as u32,
                links,
            })
            .collect()
    })
}

/// Connected components of the link graph, ignoring limits.
fn components(nodes: &[Node<u32>]) -> Vec<Vec<Node<u32>>> {
    let mut parent: Vec<usize> = (0..nodes.len()).collect();
    fn find(p: &mut [usize], x: usize) -> usize {
        if p[x] == x {
            x
        } else {
            let r = find(p, p[x]);
            p[x] = r;
            r
        }
    }
    let mut first: HashMap<&(String, String), usize> = HashMap::new();
    for (i, n) in nodes.iter().enumerate() {
        for l in &n.links {
            if let Some(&j) = first.get(l) {
                let (a, b) = (find(&mut parent, i), find(&mut parent, j));
                parent[a] = b;
            } else {
                first.insert(l, i);
            }
        }
    }
    let mut groups: HashMap<usize, Vec<Node<u32>>> = HashMap::new();
    for (i, n) in nodes.iter().enumerate() {
        let r = find(&mut parent, i);
        groups.entry(r).or_default().push(n.clone());
    }
    groups.into_values().collect()
}

proptest! {
    #[test]
    fn the_result_does_not_depend_on_arrival_order(nodes in arb_nodes(), seed in any::<u64>()) {
        let rules = rules(&[("user_id", 1), ("email", 2)]);
        let mut shuffled = nodes.clone();
        let mut state = seed | 1;
        for i in (1..shuffled.len()).rev() {
            state ^= state << 13; state ^= state >> 7; state ^= state << 17;
            shuffled.swap(i, (state % (i as u64 + 1)) as usize);
        }
        prop_assert_eq!(resolve(&nodes, &rules), resolve(&shuffled, &rules));
    }

    #[test]
    fn resolving_components_apart_equals_resolving_everything(nodes in arb_nodes()) {
        let rules = rules(&[("user_id", 1), ("email", 2)]);
        let whole: BTreeSet<Vec<u32>> = partition(&resolve(&nodes, &rules)).into_iter().collect();
        let mut pieces = BTreeSet::new();
        for component in components(&nodes) {
            pieces.extend(partition(&resolve(&component, &rules)));
        }
        prop_assert_eq!(whole, pieces);
    }

    #[test]
    fn limits_are_never_exceeded_by_a_merge(nodes in arb_nodes()) {
        let limits = [("user_id", 1usize), ("email", 2)];
        let clusters = resolve(&nodes, &rules(&limits));
        let by_key: HashMap<u32, &Node<u32>> = nodes.iter().map(|n| (n.key, n)).collect();
        for cluster in clusters.iter().filter(|c| c.members.len() > 1) {
            for (kind, limit) in limits {
                let values: BTreeSet<&String> = cluster.members.iter()
                    .flat_map(|k| by_key[k].links.iter().filter(|(r, _)| r == kind).map(|(_, v)| v))
                    .collect();
                prop_assert!(values.len() <= limit, "{} holds {} values of {}", cluster.members.len(), values.len(), kind);
            }
        }
    }

    #[test]
    fn every_link_joins_records_that_share_the_value(nodes in arb_nodes()) {
        let clusters = resolve(&nodes, &rules(&[("user_id", 1)]));
        let by_key: HashMap<u32, &Node<u32>> = nodes.iter().map(|n| (n.key, n)).collect();
        for cluster in &clusters {
            prop_assert_eq!(cluster.links.len(), cluster.members.len() - 1, "a cluster is a tree of links");
            for link in &cluster.links {
                let pair = (link.rule.clone(), link.value.clone());
                prop_assert!(by_key[&link.a].links.contains(&pair) && by_key[&link.b].links.contains(&pair));
            }
        }
    }
}
