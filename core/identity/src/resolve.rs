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
//!
//! [`resolve`] runs over numbers: each distinct `(type, value)` is numbered once, and the records holding a
//! value, the limited values a merged profile holds and the clusters are kept as lists of numbers end to
//! end, so that a million records resolve without a million small allocations (the engine calls this core,
//! `resolve_values`, directly with what it has already numbered).

use std::collections::HashMap;
use std::hash::BuildHasher;

use rayon::slice::ParallelSliceMut;

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

/// Distinct `(type, value)` pairs, numbered in the order they were first seen, their text end to end in one
/// buffer: a million records' links cost a handful of large allocations rather than millions of small ones.
#[derive(Debug, Default)]
pub(crate) struct Values {
    text: String,
    /// Per value: its type's number and where its text ends in `text` (it starts where the previous ends).
    entries: Vec<(u32, usize)>,
    rules: Vec<String>,
    /// foldhash rather than the standard SipHash: a million values are numbered in a full pass, and
    /// SipHash took a tenth of that (seeded per process, so crafted values cannot aim at one bucket).
    hasher: foldhash::quality::RandomState,
    /// Values by the hash of `(type number, text)`; the rare second value with the same hash goes to
    /// `collisions`.
    by_hash: HashMap<u64, u32, foldhash::fast::RandomState>,
    collisions: HashMap<(u32, String), u32>,
}

impl Values {
    /// The number of `(rule, value)`, given on first sight.
    pub(crate) fn intern(&mut self, rule: &str, value: &str) -> u32 {
        // Types are few (those configured to link, and compound rules): a scan beats hashing the name.
        let rule_id = match self.rules.iter().position(|known| known == rule) {
            Some(id) => id as u32,
            None => {
                self.rules.push(rule.to_owned());
                (self.rules.len() - 1) as u32
            }
        };
        let hash = self.hasher.hash_one((rule_id, value));
        match self.by_hash.get(&hash) {
            Some(&id) if self.entries[id as usize].0 == rule_id && self.value(id) == value => id,
            Some(_) => {
                if let Some(id) = self.collisions.get(&(rule_id, value.to_owned())) {
                    return *id;
                }
                let id = self.push(rule_id, value);
                self.collisions.insert((rule_id, value.to_owned()), id);
                id
            }
            None => {
                let id = self.push(rule_id, value);
                self.by_hash.insert(hash, id);
                id
            }
        }
    }

    /// Makes room for `values` more values of `bytes` bytes of text in all.
    pub(crate) fn reserve(&mut self, values: usize, bytes: usize) {
        self.text.reserve(bytes);
        self.entries.reserve(values);
        self.by_hash.reserve(values);
    }

    fn push(&mut self, rule: u32, value: &str) -> u32 {
        self.text.push_str(value);
        self.entries.push((rule, self.text.len()));
        (self.entries.len() - 1) as u32
    }

    /// How many values there are.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// The type of value `id`.
    pub(crate) fn rule(&self, id: u32) -> &str {
        &self.rules[self.entries[id as usize].0 as usize]
    }

    /// The number of value `id`'s type, its place in [`rule_names`](Self::rule_names).
    pub(crate) fn rule_number(&self, id: u32) -> u32 {
        self.entries[id as usize].0
    }

    /// The types' names, by number.
    pub(crate) fn rule_names(&self) -> &[String] {
        &self.rules
    }

    /// The text of value `id`.
    pub(crate) fn value(&self, id: u32) -> &str {
        let start = (id as usize)
            .checked_sub(1)
            .map_or(0, |previous| self.entries[previous].1);
        &self.text[start..self.entries[id as usize].1]
    }
}

/// Lists end to end: list `i` is `items[starts[i]..starts[i + 1]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Lists<T> {
    starts: Vec<usize>,
    items: Vec<T>,
}

impl<T> Default for Lists<T> {
    fn default() -> Self {
        Self {
            starts: vec![0],
            items: Vec::new(),
        }
    }
}

impl<T> Lists<T> {
    /// Makes room for `lists` more lists of `items` items in all.
    pub(crate) fn reserve(&mut self, lists: usize, items: usize) {
        self.starts.reserve(lists);
        self.items.reserve(items);
    }

    /// Ends the list being filled with `items`.
    pub(crate) fn push(&mut self, items: impl IntoIterator<Item = T>) {
        self.items.extend(items);
        self.starts.push(self.items.len());
    }

    /// How many lists there are.
    pub(crate) fn len(&self) -> usize {
        self.starts.len() - 1
    }

    /// List `i`.
    pub(crate) fn get(&self, i: usize) -> &[T] {
        &self.items[self.starts[i]..self.starts[i + 1]]
    }

    /// Every list, in order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &[T]> {
        (0..self.len()).map(|i| self.get(i))
    }
}

/// Clusters of records by index: members in key order (clusters ordered by their first member), and the
/// links taken inside each, `(a, b, value)`.
#[derive(Debug, Default)]
pub(crate) struct Resolution {
    pub members: Lists<usize>,
    pub links: Lists<(usize, usize, u32)>,
}

struct Forest {
    parent: Vec<usize>,
    /// For merged roots: the limited values the tree holds, sorted (`None`: a root never merged, which
    /// holds its own record's).
    held: Vec<Option<Vec<u32>>>,
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
    let mut values = Values::default();
    let mut links = Lists::default();
    for node in nodes {
        let mut ids: Vec<u32> = node
            .links
            .iter()
            .map(|(rule, value)| values.intern(rule, value))
            .collect();
        ids.sort_unstable();
        ids.dedup();
        links.push(ids);
    }
    let resolution = resolve_values(&order, &links, &values, rules);
    resolution
        .members
        .iter()
        .zip(resolution.links.iter())
        .map(|(members, taken)| Cluster {
            members: members.iter().map(|m| nodes[*m].key.clone()).collect(),
            links: taken
                .iter()
                .map(|(a, b, value)| Link {
                    rule: values.rule(*value).to_owned(),
                    value: values.value(*value).to_owned(),
                    a: nodes[*a].key.clone(),
                    b: nodes[*b].key.clone(),
                })
                .collect(),
        })
        .collect()
}

/// [`resolve`] over records by index: `order` lists them in key order, `links` gives each one's distinct
/// linking values, numbered in `values`.
pub(crate) fn resolve_values(
    order: &[usize],
    links: &Lists<u32>,
    values: &Values,
    rules: &Rules,
) -> Resolution {
    let records = links.len();
    // Types in canonical order: by place in `priority` (unlisted last), then name.
    let rank = |rule: &str| {
        rules
            .priority
            .iter()
            .position(|p| p == rule)
            .unwrap_or(rules.priority.len())
    };
    let mut names: Vec<(usize, &str, u32)> = values
        .rules
        .iter()
        .enumerate()
        .map(|(id, name)| (rank(name), name.as_str(), id as u32))
        .collect();
    names.sort_unstable();
    let mut rule_order = vec![0; names.len()];
    for (position, (_, _, id)) in names.iter().enumerate() {
        rule_order[*id as usize] = position;
    }
    // The limit of each type by its number, where it has one.
    let limits: Vec<Option<usize>> = values
        .rules
        .iter()
        .map(|name| rules.limits.get(name).copied())
        .collect();
    let limited = |value: &u32| limits[values.entries[*value as usize].0 as usize].is_some();

    // The records holding each value, in key order.
    let mut counts = vec![0usize; values.len() + 1];
    for ids in links.iter() {
        for id in ids {
            counts[*id as usize + 1] += 1;
        }
    }
    for i in 1..counts.len() {
        counts[i] += counts[i - 1];
    }
    let mut holders = vec![0usize; counts[values.len()]];
    let mut next = counts.clone();
    for &record in order {
        for id in links.get(record) {
            holders[next[*id as usize]] = record;
            next[*id as usize] += 1;
        }
    }
    drop(next);
    let mut canonical: Vec<u32> = (0..values.len() as u32).collect();
    canonical.par_sort_unstable_by(|x, y| {
        let key = |id: u32| {
            (
                rule_order[values.entries[id as usize].0 as usize],
                values.value(id),
            )
        };
        key(*x).cmp(&key(*y))
    });

    let mut forest = Forest {
        parent: (0..records).collect(),
        held: vec![None; records],
    };
    let mut taken: Vec<(usize, usize, u32)> = Vec::new();
    let mut per_rule = vec![0usize; values.rules.len()];
    let mut union: Vec<u32> = Vec::new();
    for value in canonical {
        let group = &holders[counts[value as usize]..counts[value as usize + 1]];
        let Some((&hub, rest)) = group.split_first() else {
            continue;
        };
        for &other in rest {
            let (a, b) = (forest.find(hub), forest.find(other));
            if a == b {
                continue;
            }
            // The distinct values of each limited type the merged profile would hold.
            union.clear();
            for root in [a, b] {
                match &forest.held[root] {
                    Some(held) => union.extend_from_slice(held),
                    None => union.extend(links.get(root).iter().copied().filter(limited)),
                }
            }
            union.sort_unstable();
            union.dedup();
            per_rule.iter_mut().for_each(|n| *n = 0);
            for held in &union {
                per_rule[values.entries[*held as usize].0 as usize] += 1;
            }
            let fits = per_rule
                .iter()
                .zip(&limits)
                .all(|(n, limit)| limit.is_none_or(|limit| *n <= limit));
            if !fits {
                continue;
            }
            let (root, child) = if a < b { (a, b) } else { (b, a) };
            forest.parent[child] = root;
            forest.held[child] = None;
            forest.held[root] = Some(std::mem::take(&mut union));
            taken.push((hub, other, value));
        }
    }
    drop(holders);

    // Clusters numbered by their first member in key order.
    let mut cluster_of_root = vec![usize::MAX; records];
    let mut cluster_of = vec![0usize; records];
    let mut sizes: Vec<usize> = Vec::new();
    for &record in order {
        let root = forest.find(record);
        if cluster_of_root[root] == usize::MAX {
            cluster_of_root[root] = sizes.len();
            sizes.push(0);
        }
        cluster_of[record] = cluster_of_root[root];
        sizes[cluster_of_root[root]] += 1;
    }
    drop(cluster_of_root);
    let members = group_by(order.iter().copied(), sizes.len(), |r| cluster_of[*r]);
    let links = group_by(taken.iter().copied(), sizes.len(), |(a, _, _)| {
        cluster_of[*a]
    });
    Resolution { members, links }
}

/// `items` grouped into `groups` lists by `group_of`, keeping their order within each list.
fn group_by<T: Copy + Default>(
    items: impl IntoIterator<Item = T> + Clone,
    groups: usize,
    group_of: impl Fn(&T) -> usize,
) -> Lists<T> {
    let mut starts = vec![0usize; groups + 1];
    for item in items.clone() {
        starts[group_of(&item) + 1] += 1;
    }
    for i in 1..starts.len() {
        starts[i] += starts[i - 1];
    }
    let mut out = vec![T::default(); starts[groups]];
    let mut next = starts.clone();
    for item in items {
        let group = group_of(&item);
        out[next[group]] = item;
        next[group] += 1;
    }
    Lists { starts, items: out }
}

#[cfg(test)]
mod tests;
