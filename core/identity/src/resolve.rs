//! Deterministic resolution: which records are one customer.
//!
//! Records are nodes; two records sharing a normalised identifier of a linking type (or agreeing on every field
//! of a compound rule) may link. Links are considered in one canonical order: by the identifier type's place in
//! `priority`, then type name, then value; within one identifier, each record is linked to the first record
//! (by key) holding it. A link is taken unless the merged profile would hold more distinct values of a type
//! than its limit; then it is dropped, so a higher-priority link always wins over a lower one.
//!
//! The outcome depends only on the set of records, never on the order they arrived in, and a component of
//! records can be resolved on its own: resolving the records touched by a change together with everything
//! linked to them gives exactly what a full rebuild gives.

use std::collections::{BTreeMap, HashMap, HashSet};

/// One record as resolution sees it: its position and the `(type, normalised value)` pairs that may link it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node<K> {
    /// The record's key; its order decides ties.
    pub key: K,
    /// Linking identifiers (blocked values already removed) and compound keys.
    pub links: Vec<(String, String)>,
}

/// A link that was taken: `a` and `b` are one customer because both hold `value` of `rule`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Link<K> {
    /// The identifier type (`email`) or `compound:<rule>`.
    pub rule: String,
    /// The shared value.
    pub value: String,
    /// The first record holding it.
    pub a: K,
    /// The record linked to it.
    pub b: K,
}

/// A resolved customer: member records (sorted) and the links that joined them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cluster<K> {
    /// Member keys, sorted.
    pub members: Vec<K>,
    /// The links taken inside this cluster.
    pub links: Vec<Link<K>>,
}

/// The rules resolution applies.
#[derive(Debug, Clone, Default)]
pub struct Rules {
    /// Identifier types by strength, strongest first.
    pub priority: Vec<String>,
    /// Most distinct values of a type one profile may hold.
    pub limits: HashMap<String, usize>,
}

struct Forest {
    parent: Vec<usize>,
    /// For roots: the distinct values of each limited type in the tree.
    held: Vec<HashMap<String, HashSet<String>>>,
}

impl Forest {
    fn find(&mut self, mut x: usize) -> usize {
        while self.parent[x] != x {
            self.parent[x] = self.parent[self.parent[x]];
            x = self.parent[x];
        }
        x
    }
}

/// Resolves `nodes` into clusters, in canonical order (see the module doc).
pub fn resolve<K: Ord + Clone>(nodes: &[Node<K>], rules: &Rules) -> Vec<Cluster<K>> {
    let mut order: Vec<usize> = (0..nodes.len()).collect();
    order.sort_by(|a, b| nodes[*a].key.cmp(&nodes[*b].key));
    let rank = |rule: &str| {
        rules
            .priority
            .iter()
            .position(|p| p == rule)
            .unwrap_or(rules.priority.len())
    };

    // Identifier groups, each listing its records in key order.
    let mut groups: BTreeMap<(usize, &str, &str), Vec<usize>> = BTreeMap::new();
    let mut forest = Forest {
        parent: (0..nodes.len()).collect(),
        held: Vec::with_capacity(nodes.len()),
    };
    for node in nodes {
        let mut held: HashMap<String, HashSet<String>> = HashMap::new();
        for (rule, value) in &node.links {
            if rules.limits.contains_key(rule) {
                held.entry(rule.clone()).or_default().insert(value.clone());
            }
        }
        forest.held.push(held);
    }
    for &index in &order {
        for (rule, value) in &nodes[index].links {
            let members = groups
                .entry((rank(rule), rule.as_str(), value.as_str()))
                .or_default();
            if members.last() != Some(&index) {
                members.push(index);
            }
        }
    }

    let mut links: Vec<(usize, usize, String, String)> = Vec::new();
    for ((_, rule, value), members) in &groups {
        let Some((&hub, rest)) = members.split_first() else {
            continue;
        };
        for &other in rest {
            let (a, b) = (forest.find(hub), forest.find(other));
            if a == b {
                continue;
            }
            let fits = rules.limits.iter().all(|(kind, limit)| {
                let (left, right) = (forest.held[a].get(kind), forest.held[b].get(kind));
                let union = match (left, right) {
                    (Some(l), Some(r)) => l.len() + r.iter().filter(|v| !l.contains(*v)).count(),
                    (Some(one), None) | (None, Some(one)) => one.len(),
                    (None, None) => 0,
                };
                union <= *limit
            });
            if !fits {
                continue;
            }
            let (root, child) = if a < b { (a, b) } else { (b, a) };
            forest.parent[child] = root;
            let moved = std::mem::take(&mut forest.held[child]);
            for (kind, values) in moved {
                forest.held[root].entry(kind).or_default().extend(values);
            }
            links.push((hub, other, (*rule).to_owned(), (*value).to_owned()));
        }
    }

    let mut clusters: BTreeMap<usize, Cluster<K>> = BTreeMap::new();
    for &index in &order {
        let root = forest.find(index);
        clusters
            .entry(root)
            .or_insert_with(|| Cluster {
                members: Vec::new(),
                links: Vec::new(),
            })
            .members
            .push(nodes[index].key.clone());
    }
    for (a, b, rule, value) in links {
        let root = forest.find(a);
        if let Some(cluster) = clusters.get_mut(&root) {
            cluster.links.push(Link {
                rule,
                value,
                a: nodes[a].key.clone(),
                b: nodes[b].key.clone(),
            });
        }
    }
    let mut out: Vec<Cluster<K>> = clusters.into_values().collect();
    out.sort_by(|x, y| x.members[0].cmp(&y.members[0]));
    out
}

#[cfg(test)]
mod tests;
