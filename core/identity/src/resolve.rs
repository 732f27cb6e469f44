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

use std::collections::{BTreeMap, HashMap};

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

/// One `(type, value)` that records share: a candidate link between all of them.
struct Group<'n> {
    /// The type's place in the canonical order (priority, then name).
    rule_order: usize,
    rule: &'n str,
    value: &'n str,
    /// Records holding it, in key order.
    members: Vec<usize>,
}

struct Forest {
    parent: Vec<usize>,
    /// For roots: the groups of limited types the tree holds, sorted (a group is one distinct value).
    held: Vec<Vec<u32>>,
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

    // Types, numbered in canonical order: by place in `priority` (unlisted last), then name.
    let mut names: Vec<&str> = nodes
        .iter()
        .flat_map(|n| n.links.iter().map(|(rule, _)| rule.as_str()))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let rank = |rule: &str| {
        rules
            .priority
            .iter()
            .position(|p| p == rule)
            .unwrap_or(rules.priority.len())
    };
    names.sort_by_key(|name| rank(name));
    let rule_order: HashMap<&str, usize> = names.iter().enumerate().map(|(i, n)| (*n, i)).collect();
    // The limit of each type by its order, where it has one.
    let limits: Vec<Option<usize>> = names
        .iter()
        .map(|n| rules.limits.get(*n).copied())
        .collect();

    // Identifier groups (each distinct `(type, value)` once), their records listed in key order.
    let mut groups: Vec<Group<'_>> = Vec::new();
    let mut group_of: HashMap<(&str, &str), u32> = HashMap::new();
    let mut held: Vec<Vec<u32>> = vec![Vec::new(); nodes.len()];
    for &index in &order {
        for (rule, value) in &nodes[index].links {
            let next = groups.len() as u32;
            let group = *group_of
                .entry((rule.as_str(), value.as_str()))
                .or_insert_with(|| {
                    groups.push(Group {
                        rule_order: rule_order[rule.as_str()],
                        rule,
                        value,
                        members: Vec::new(),
                    });
                    next
                });
            let members = &mut groups[group as usize].members;
            if members.last() != Some(&index) {
                members.push(index);
            }
            if limits[groups[group as usize].rule_order].is_some() {
                held[index].push(group);
            }
        }
    }
    drop(group_of);
    for values in &mut held {
        values.sort_unstable();
        values.dedup();
    }
    let mut forest = Forest {
        parent: (0..nodes.len()).collect(),
        held,
    };
    let mut canonical: Vec<u32> = (0..groups.len() as u32).collect();
    canonical.sort_unstable_by(|x, y| {
        let (x, y) = (&groups[*x as usize], &groups[*y as usize]);
        (x.rule_order, x.value).cmp(&(y.rule_order, y.value))
    });

    let mut links: Vec<(usize, usize, u32)> = Vec::new();
    let mut counts = vec![0usize; names.len()];
    let mut union: Vec<u32> = Vec::new();
    for group in canonical {
        let Some((&hub, rest)) = groups[group as usize].members.split_first() else {
            continue;
        };
        for &other in rest {
            let (a, b) = (forest.find(hub), forest.find(other));
            if a == b {
                continue;
            }
            // The distinct values of each limited type the merged profile would hold.
            union.clear();
            union.extend_from_slice(&forest.held[a]);
            union.extend_from_slice(&forest.held[b]);
            union.sort_unstable();
            union.dedup();
            counts.iter_mut().for_each(|c| *c = 0);
            for value in &union {
                counts[groups[*value as usize].rule_order] += 1;
            }
            let fits = counts
                .iter()
                .zip(&limits)
                .all(|(count, limit)| limit.is_none_or(|limit| *count <= limit));
            if !fits {
                continue;
            }
            let (root, child) = if a < b { (a, b) } else { (b, a) };
            forest.parent[child] = root;
            forest.held[child] = Vec::new();
            forest.held[root] = union.clone();
            links.push((hub, other, group));
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
    for (a, b, group) in links {
        let root = forest.find(a);
        if let Some(cluster) = clusters.get_mut(&root) {
            let group = &groups[group as usize];
            cluster.links.push(Link {
                rule: group.rule.to_owned(),
                value: group.value.to_owned(),
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
