//! Evaluation of one expression over a [`ProfileTable`].
//!
//! Contract: [`Exec::run`] returns the rows of `mask` for which the row-wise evaluator is true. Exactness
//! comes from asking the row-wise evaluator itself for every outcome: once per distinct value class of
//! a column (a *probe* on a one-value profile), once per distinct aggregate value, or, for conditions
//! that are not vectorised, once per row on a profile rebuilt from the table.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::bitset::Bitset;
use super::column::{ABSENT, Column, FALSE, NONE, NULL, NUM, OTHER, STR, TRUE};
use super::events::PropStore;
use super::{MemberSet, ProfileTable};
use crate::ast::{Agg, AggFunc, ArithOp, Cond, EventQuery, Literal, Name, NameKind, Operand};
use crate::eval::{Evaluator, descend, parse_number};
use crate::{EventView, ProfileView};

/// The row-wise evaluator on one condition (never an `in_segment`, which the table answers itself).
fn holds(cond: &Cond, view: &ProfileView, now: DateTime<Utc>) -> bool {
    Evaluator {
        profile: view,
        now,
        in_segment: &|_| false,
    }
    .eval(cond)
}

// ----- and / or / not, shared by profile rows and event ordinals ----------------------------------------

trait Leaves {
    /// Lower is cheaper: `and` / `or` evaluate cheap children first.
    fn cost(&self, leaf: &Cond) -> u8;
    /// The positions of `mask` where `leaf` (not `and`, `or` or `not`) holds.
    fn leaf(&mut self, leaf: &Cond, mask: &Bitset) -> Bitset;
}

fn cost(leaves: &impl Leaves, cond: &Cond) -> u8 {
    match cond {
        Cond::And(items) | Cond::Or(items) => {
            items.iter().map(|c| cost(leaves, c)).max().unwrap_or(0)
        }
        Cond::Not(inner) => cost(leaves, inner),
        leaf => leaves.cost(leaf),
    }
}

fn combine(leaves: &mut impl Leaves, cond: &Cond, mask: &Bitset) -> Bitset {
    if mask.is_empty() {
        return Bitset::new();
    }
    match cond {
        Cond::And(items) | Cond::Or(items) => {
            let mut order: Vec<&Cond> = items.iter().collect();
            order.sort_by_key(|c| cost(leaves, c));
            if matches!(cond, Cond::And(_)) {
                let mut current = mask.clone();
                for item in order {
                    current = combine(leaves, item, &current);
                    if current.is_empty() {
                        break;
                    }
                }
                current
            } else {
                let mut remaining = mask.clone();
                let mut found = Bitset::new();
                for item in order {
                    let hits = combine(leaves, item, &remaining);
                    remaining.and_not(&hits);
                    found.or_with(&hits);
                    if remaining.is_empty() {
                        break;
                    }
                }
                found
            }
        }
        Cond::Not(inner) => {
            let hits = combine(leaves, inner, mask);
            let mut out = mask.clone();
            out.and_not(&hits);
            out
        }
        leaf => leaves.leaf(leaf, mask),
    }
}

// ----- what a leaf reads -------------------------------------------------------------------------------

fn operands(leaf: &Cond) -> Vec<&Operand> {
    match leaf {
        Cond::Compare { left, right, .. }
        | Cond::Contains {
            value: left,
            needle: right,
        }
        | Cond::StartsWith {
            value: left,
            prefix: right,
        } => vec![left, right],
        Cond::In { value, .. } | Cond::Exists { value, .. } | Cond::Truthy(value) => vec![value],
        _ => Vec::new(),
    }
}

fn operands_mut(leaf: &mut Cond) -> Vec<&mut Operand> {
    match leaf {
        Cond::Compare { left, right, .. }
        | Cond::Contains {
            value: left,
            needle: right,
        }
        | Cond::StartsWith {
            value: left,
            prefix: right,
        } => vec![left, right],
        Cond::In { value, .. } | Cond::Exists { value, .. } | Cond::Truthy(value) => vec![value],
        _ => Vec::new(),
    }
}

/// The names and event functions under an operand; true when it holds arithmetic.
fn collect<'c>(operand: &'c Operand, names: &mut Vec<&'c Name>, aggs: &mut Vec<&'c Agg>) -> bool {
    match operand {
        Operand::Lit(_) | Operand::Dur(_) | Operand::List(_) | Operand::Now => false,
        Operand::Name(name) => {
            names.push(name);
            false
        }
        Operand::Agg(agg) => {
            aggs.push(agg);
            false
        }
        Operand::Arith { left, right, .. } => {
            collect(left, names, aggs);
            collect(right, names, aggs);
            true
        }
    }
}

struct Reads<'c> {
    names: Vec<&'c Name>,
    aggs: Vec<&'c Agg>,
    arith: bool,
}

fn reads(leaf: &Cond) -> Reads<'_> {
    let mut reads = Reads {
        names: Vec::new(),
        aggs: Vec::new(),
        arith: false,
    };
    for operand in operands(leaf) {
        reads.arith |= collect(operand, &mut reads.names, &mut reads.aggs);
    }
    reads
}

/// True when `cond` reads event properties only (what the parser allows inside `where`).
fn event_scope_only(cond: &Cond) -> bool {
    match cond {
        Cond::And(items) | Cond::Or(items) => items.iter().all(event_scope_only),
        Cond::Not(inner) => event_scope_only(inner),
        Cond::Did(_) | Cond::InSegment { .. } => false,
        leaf => {
            let reads = reads(leaf);
            reads.aggs.is_empty() && reads.names.iter().all(|n| n.kind == NameKind::Property)
        }
    }
}

fn filter_ok(query: &EventQuery) -> bool {
    query.filter.as_deref().is_none_or(event_scope_only)
}

#[derive(Clone, Copy)]
enum EventRef<'c> {
    Did(&'c EventQuery),
    Agg(&'c Agg),
}

enum Shape<'c> {
    /// The same outcome for every row.
    Const,
    Segment(&'c str),
    /// One trait, computed trait, identifier type or consent purpose against constants.
    Name(&'c Name),
    /// One event function against constants.
    Event(EventRef<'c>),
    /// Row by row.
    Rows,
}

fn shape(leaf: &Cond) -> Shape<'_> {
    match leaf {
        Cond::InSegment { id, .. } => return Shape::Segment(id),
        Cond::Did(query) if filter_ok(query) => return Shape::Event(EventRef::Did(query)),
        Cond::Did(_) => return Shape::Rows,
        _ => {}
    }
    let reads = reads(leaf);
    match (reads.names.as_slice(), reads.aggs.as_slice()) {
        ([], []) => Shape::Const,
        // A property name outside `where` is always `null`.
        ([name], []) if name.kind == NameKind::Property => Shape::Const,
        ([name], []) => Shape::Name(name),
        ([], [agg]) if filter_ok(&agg.query) => Shape::Event(EventRef::Agg(agg)),
        _ => Shape::Rows,
    }
}

/// The numbers a leaf mentions: between two consecutive ones, a number compares the same way to all of
/// the leaf's constants (when there is no arithmetic).
fn numeric_points(leaf: &Cond) -> Vec<f64> {
    fn literal(l: &Literal, out: &mut Vec<f64>) {
        match l {
            Literal::Num(n) => out.push(*n),
            Literal::Str(s) => out.extend(parse_number(s)),
            _ => {}
        }
    }
    let mut points = Vec::new();
    if let Cond::In { list, .. } = leaf {
        list.iter().for_each(|l| literal(l, &mut points));
    }
    for operand in operands(leaf) {
        match operand {
            Operand::Lit(l) => literal(l, &mut points),
            Operand::List(items) => items.iter().for_each(|l| literal(l, &mut points)),
            _ => {}
        }
    }
    points.retain(|p| p.is_finite());
    points.sort_by(f64::total_cmp);
    points.dedup_by(|a, b| a == b);
    points
}

/// The value of a constant time operand (`now()`, `now() - 30d`, ...), computed as the evaluator
/// does; `None` for anything else, or when it would not be a time.
fn const_time(operand: &Operand, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    match operand {
        Operand::Now => Some(now),
        Operand::Arith { op, left, right } => match (&**left, &**right) {
            (left, Operand::Dur(d)) if !matches!(left, Operand::Dur(_)) => {
                let (t, d) = (const_time(left, now)?, d.to_delta()?);
                match op {
                    ArithOp::Add => t.checked_add_signed(d),
                    ArithOp::Sub => t.checked_sub_signed(d),
                }
            }
            _ => None,
        },
        _ => None,
    }
}

/// For `first(e ...) op T` / `last(e ...) op T` with `T` a constant time (either side): `T`. The
/// outcome then depends only on how the event time compares with `T`.
fn time_pivot(leaf: &Cond, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    match leaf {
        Cond::Compare { left, right, .. } => match (left, right) {
            (Operand::Agg(_), other) | (other, Operand::Agg(_)) => const_time(other, now),
            _ => None,
        },
        _ => None,
    }
}

/// `leaf` with its event function replaced by a literal.
fn substitute(leaf: &Cond, value: Literal) -> Cond {
    fn replace(operand: &mut Operand, value: &mut Option<Literal>) {
        match operand {
            Operand::Agg(_) => {
                if let Some(value) = value.take() {
                    *operand = Operand::Lit(value);
                }
            }
            Operand::Arith { left, right, .. } => {
                replace(left, value);
                replace(right, value);
            }
            _ => {}
        }
    }
    let mut out = leaf.clone();
    let mut value = Some(value);
    for operand in operands_mut(&mut out) {
        replace(operand, &mut value);
    }
    out
}

/// What a leaf reads of a profile, so that a row-by-row fallback rebuilds only that.
#[derive(Debug, Default)]
pub(crate) struct Needs<'c> {
    pub traits: Vec<&'c str>,
    pub computed: Vec<&'c str>,
    pub identifiers: Vec<&'c str>,
    pub consent: Vec<&'c str>,
    /// Event names (with all their properties).
    pub events: Vec<&'c str>,
}

/// `None` when the leaf reads something unexpected (then the whole profile is rebuilt).
fn needs(leaf: &Cond) -> Option<Needs<'_>> {
    let mut needs = Needs::default();
    match leaf {
        Cond::Did(q) => {
            if !filter_ok(q) {
                return None;
            }
            needs.events.push(&q.event);
        }
        Cond::And(_) | Cond::Or(_) | Cond::Not(_) | Cond::InSegment { .. } => return None,
        _ => {}
    }
    let reads = reads(leaf);
    for agg in reads.aggs {
        if !filter_ok(&agg.query) {
            return None;
        }
        needs.events.push(&agg.query.event);
    }
    for name in reads.names {
        let head = name.path[0].as_str();
        match name.kind {
            NameKind::Auto => {
                needs.traits.push(head);
                needs.computed.push(head);
            }
            NameKind::Trait => needs.traits.push(head),
            NameKind::Computed => needs.computed.push(head),
            NameKind::Identifier => needs.identifiers.push(head),
            NameKind::Consent => needs.consent.push(head),
            NameKind::Property => {}
        }
    }
    Some(needs)
}

// ----- probes: the evaluator on a one-value profile ------------------------------------------------------

#[derive(Clone, Copy)]
enum Slot<'c> {
    Trait(&'c str),
    Computed(&'c str),
    Identifier(&'c str),
    Consent(&'c str),
    /// An event property: the leaf is evaluated inside `where` on a one-event timeline.
    Property(&'c str),
}

struct Probe<'c> {
    cond: Cow<'c, Cond>,
    slot: Slot<'c>,
    now: DateTime<Utc>,
    view: ProfileView,
}

fn put(map: &mut BTreeMap<String, Value>, key: &str, value: Option<Value>) {
    match (map.get_mut(key), value) {
        (Some(slot), Some(value)) => *slot = value,
        (None, Some(value)) => {
            map.insert(key.to_owned(), value);
        }
        (_, None) => {
            map.remove(key);
        }
    }
}

impl<'c> Probe<'c> {
    fn new(leaf: &'c Cond, slot: Slot<'c>, now: DateTime<Utc>) -> Self {
        let mut view = ProfileView::default();
        let cond = match slot {
            Slot::Property(_) => {
                view.events.push(EventView {
                    name: String::new(),
                    occurred_at: now,
                    properties: BTreeMap::new(),
                });
                Cow::Owned(Cond::Did(EventQuery {
                    event: String::new(),
                    filter: Some(Box::new(leaf.clone())),
                    within: None,
                }))
            }
            _ => Cow::Borrowed(leaf),
        };
        Probe {
            cond,
            slot,
            now,
            view,
        }
    }

    fn holds(&self) -> bool {
        holds(&self.cond, &self.view, self.now)
    }

    fn value(&mut self, value: Option<Value>) -> bool {
        match self.slot {
            Slot::Trait(key) => put(&mut self.view.traits, key, value),
            Slot::Computed(key) => put(&mut self.view.computed, key, value),
            Slot::Property(key) => {
                if let Some(event) = self.view.events.first_mut() {
                    put(&mut event.properties, key, value);
                }
            }
            Slot::Consent(key) => {
                self.view.consent.clear();
                if let Some(Value::Bool(granted)) = value {
                    self.view.consent.insert(key.to_owned(), granted);
                }
            }
            Slot::Identifier(key) => {
                self.view.identifiers.clear();
                if let Some(Value::String(s)) = value {
                    self.view.identifiers.push((key.to_owned(), s));
                }
            }
        }
        self.holds()
    }

    fn identifiers(&mut self, values: &[&str]) -> bool {
        if let Slot::Identifier(key) = self.slot {
            self.view.identifiers = values
                .iter()
                .map(|v| (key.to_owned(), (*v).to_owned()))
                .collect();
        }
        self.holds()
    }

    fn properties(&mut self, properties: BTreeMap<String, Value>) -> bool {
        if let Some(event) = self.view.events.first_mut() {
            event.properties = properties;
        }
        self.holds()
    }
}

/// Outcomes for numbers: per interval between the leaf's numeric constants (see [`numeric_points`]),
/// or memoised per value when the leaf holds arithmetic.
enum Nums {
    Points {
        points: Vec<f64>,
        at: Vec<bool>,
        between: Vec<bool>,
    },
    Memo(HashMap<u64, bool>),
}

impl Nums {
    /// `probe(n)`: the leaf's outcome when the value is the number `n`.
    fn new(leaf: &Cond, mut probe: impl FnMut(f64) -> bool) -> Nums {
        if reads(leaf).arith {
            return Nums::Memo(HashMap::new());
        }
        let points = numeric_points(leaf);
        let at = points.iter().map(|p| probe(*p)).collect();
        let between = (0..=points.len())
            .map(|i| {
                let inside = match (i.checked_sub(1).map(|j| points[j]), points.get(i)) {
                    (None, None) => Some(0.0),
                    (None, Some(hi)) => Some(hi.next_down()),
                    (Some(lo), hi) => Some(lo.next_up()).filter(|x| hi.is_none_or(|hi| x < hi)),
                };
                inside.filter(|x| x.is_finite()).is_some_and(&mut probe)
            })
            .collect();
        Nums::Points {
            points,
            at,
            between,
        }
    }

    fn get(&mut self, n: f64, probe: impl FnOnce(f64) -> bool) -> bool {
        match self {
            Nums::Points {
                points,
                at,
                between,
            } => {
                let i = points.partition_point(|p| *p < n);
                if points.get(i) == Some(&n) {
                    at[i]
                } else {
                    between[i]
                }
            }
            Nums::Memo(memo) => *memo.entry(n.to_bits()).or_insert_with(|| probe(n)),
        }
    }
}

/// A leaf over one column, outcome by value class.
struct ColumnScan<'c> {
    probe: Probe<'c>,
    column: Option<&'c Column>,
    deep: bool,
    absent: bool,
    null: bool,
    no: bool,
    yes: bool,
    nums: Nums,
    /// Per string code: 0 unknown, 1 false, 2 true.
    strs: Vec<u8>,
}

impl<'c> ColumnScan<'c> {
    fn new(
        leaf: &'c Cond,
        name: &Name,
        column: Option<&'c Column>,
        slot: Slot<'c>,
        now: DateTime<Utc>,
    ) -> Self {
        let mut probe = Probe::new(leaf, slot, now);
        let absent = probe.value(None);
        let null = probe.value(Some(Value::Null));
        let no = probe.value(Some(Value::Bool(false)));
        let yes = probe.value(Some(Value::Bool(true)));
        let deep = name.path.len() > 1;
        let nums = if deep {
            Nums::Memo(HashMap::new())
        } else {
            Nums::new(leaf, |n| probe.value(Some(Value::from(n))))
        };
        ColumnScan {
            probe,
            column,
            deep,
            absent,
            null,
            no,
            yes,
            nums,
            strs: vec![0; column.map_or(0, |c| c.dict.len())],
        }
    }

    #[inline]
    fn test(&mut self, slot: usize) -> bool {
        let Some(column) = self.column else {
            return self.absent;
        };
        match column.tag(slot) {
            ABSENT => self.absent,
            NULL => self.null,
            FALSE => self.no,
            TRUE => self.yes,
            NUM | STR if self.deep => self.absent,
            NUM => {
                let n = column.num(slot);
                match &self.nums {
                    // The common case, one constant: `x > 500`.
                    Nums::Points {
                        points,
                        at,
                        between,
                    } if points.len() == 1 => {
                        if n < points[0] {
                            between[0]
                        } else if n == points[0] {
                            at[0]
                        } else {
                            between[1]
                        }
                    }
                    _ => self.number(n),
                }
            }
            STR => match self.strs[column.code(slot) as usize] {
                0 => self.string(column, column.code(slot)),
                known => known == 2,
            },
            _ => self.other(column, slot),
        }
    }

    #[inline(never)]
    fn number(&mut self, n: f64) -> bool {
        let probe = &mut self.probe;
        self.nums.get(n, |n| probe.value(Some(Value::from(n))))
    }

    #[cold]
    fn string(&mut self, column: &Column, code: u32) -> bool {
        let text = column.dict.get(code).to_owned();
        let outcome = self.probe.value(Some(Value::String(text)));
        self.strs[code as usize] = 1 + u8::from(outcome);
        outcome
    }

    #[cold]
    fn other(&mut self, column: &Column, slot: usize) -> bool {
        self.probe.value(column.other(slot).cloned())
    }
}

// ----- profile rows -----------------------------------------------------------------------------------

pub(crate) struct Exec<'t, 's> {
    table: &'t ProfileTable,
    now: DateTime<Utc>,
    in_segment: &'t dyn Fn(&str) -> Option<&'s MemberSet>,
}

impl<'t, 's> Exec<'t, 's> {
    pub fn new(
        table: &'t ProfileTable,
        now: DateTime<Utc>,
        in_segment: &'t dyn Fn(&str) -> Option<&'s MemberSet>,
    ) -> Self {
        Exec {
            table,
            now,
            in_segment,
        }
    }

    pub fn run(mut self, cond: &Cond, mask: &Bitset) -> Bitset {
        combine(&mut self, cond, mask)
    }

    fn constant(&self, outcome: bool, mask: &Bitset) -> Bitset {
        if outcome { mask.clone() } else { Bitset::new() }
    }

    fn rows(&self, leaf: &Cond, mask: &Bitset) -> Bitset {
        let needs = needs(leaf);
        Bitset::filter(mask, |row| {
            holds(
                leaf,
                &self.table.row_view_for(row, needs.as_ref()),
                self.now,
            )
        })
    }

    fn name_leaf(&self, leaf: &Cond, name: &Name, mask: &Bitset) -> Bitset {
        let table = self.table;
        let key = name.path[0].as_str();
        match name.kind {
            NameKind::Trait | NameKind::Computed => {
                let (columns, slot) = if name.kind == NameKind::Trait {
                    (&table.traits, Slot::Trait(key))
                } else {
                    (&table.computed, Slot::Computed(key))
                };
                let mut scan = ColumnScan::new(leaf, name, columns.get(key), slot, self.now);
                Bitset::filter(mask, |row| scan.test(row))
            }
            NameKind::Auto => {
                // A computed trait wins when the profile has one by that name (even `null`).
                let computed = table.computed.get(key);
                let mut over_computed =
                    ColumnScan::new(leaf, name, computed, Slot::Computed(key), self.now);
                let mut over_traits = ColumnScan::new(
                    leaf,
                    name,
                    table.traits.get(key),
                    Slot::Computed(key),
                    self.now,
                );
                Bitset::filter(mask, |row| {
                    if computed.is_some_and(|c| c.tag(row) != ABSENT) {
                        over_computed.test(row)
                    } else {
                        over_traits.test(row)
                    }
                })
            }
            NameKind::Consent => {
                let mut probe = Probe::new(leaf, Slot::Consent(key), self.now);
                let yes = probe.value(Some(Value::Bool(true)));
                let no = probe.value(Some(Value::Bool(false)));
                let granted = table.consent.get(key);
                Bitset::filter(mask, |row| {
                    if granted.is_some_and(|g| g.get(row)) {
                        yes
                    } else {
                        no
                    }
                })
            }
            NameKind::Identifier => {
                let mut probe = Probe::new(leaf, Slot::Identifier(key), self.now);
                let none = probe.identifiers(&[]);
                let Some(column) = table.identifiers.get(key) else {
                    return self.constant(none, mask);
                };
                let mut memo = vec![0u8; column.dict.len()];
                Bitset::filter(mask, |row| match column.codes(row) {
                    (NONE, _) => none,
                    (_, Some(_)) => probe.identifiers(&column.values(row)),
                    (first, None) => match memo[first as usize] {
                        0 => {
                            let outcome = probe.identifiers(&[column.dict.get(first)]);
                            memo[first as usize] = 1 + u8::from(outcome);
                            outcome
                        }
                        known => known == 2,
                    },
                })
            }
            NameKind::Property => {
                self.constant(holds(leaf, &ProfileView::default(), self.now), mask)
            }
        }
    }

    /// The `where` filter over the ordinals of one event name's properties, and its outcome for an
    /// event without properties.
    fn filter_bits(&self, filter: &Cond, store: &PropStore) -> (Bitset, bool) {
        let mut leaves = PropLeaves {
            store,
            now: self.now,
        };
        let bits = combine(&mut leaves, filter, &Bitset::full(store.len));
        let bare = Probe::new(filter, Slot::Property(""), self.now).value(None);
        (bits, bare)
    }

    fn event_leaf(&self, leaf: &Cond, event: EventRef<'_>, mask: &Bitset) -> Bitset {
        let events = &self.table.events;
        let now = self.now;
        let query = match event {
            EventRef::Did(query) => query,
            EventRef::Agg(agg) => &agg.query,
        };
        let nothing = holds(leaf, &ProfileView::default(), now);
        let Some(code) = events.names.find(&query.event) else {
            return self.constant(nothing, mask);
        };
        let Some(upper) = now.timestamp_nanos_opt() else {
            return self.rows(leaf, mask);
        };
        let lower = query
            .within
            .and_then(|d| d.to_delta())
            .and_then(|d| now.checked_sub_signed(d))
            .map_or(i64::MIN, |from| {
                from.timestamp_nanos_opt().unwrap_or(i64::MIN)
            });
        let store = &events.props[code as usize];
        let filter = query.filter.as_deref().map(|f| self.filter_bits(f, store));
        let selected = |i: usize| {
            events.name[i] == code
                && (lower..=upper).contains(&events.at[i])
                && filter
                    .as_ref()
                    .is_none_or(|(bits, bare)| match events.ord[i] {
                        NONE => *bare,
                        ord => bits.get(ord as usize),
                    })
        };
        let exotic = |row: usize| events.exotic.get(row);
        let needs = needs(leaf);
        let fallback = |row: usize| holds(leaf, &self.table.row_view_for(row, needs.as_ref()), now);

        let agg = match event {
            EventRef::Did(_) => {
                return Bitset::filter(mask, |row| {
                    if exotic(row) {
                        fallback(row)
                    } else {
                        events.range(row).any(selected)
                    }
                });
            }
            EventRef::Agg(agg) => agg,
        };
        let empty = ProfileView::default();
        let substituted = |n: f64| holds(&substitute(leaf, Literal::Num(n)), &empty, now);
        let mut nums = Nums::new(leaf, substituted);
        let mut number_outcome = |n: f64| nums.get(n, substituted);
        // The numeric value of the aggregated property of event `i`, as the evaluator reads it.
        let path = agg.property.as_deref().unwrap_or_default();
        let column = path.first().and_then(|head| store.columns.get(head));
        let number = |i: usize| -> Option<f64> {
            let column = column?;
            let ord = events.ord[i];
            if ord == NONE {
                return None;
            }
            let ord = ord as usize;
            match column.tag(ord) {
                NUM if path.len() == 1 => Some(column.num(ord)),
                STR if path.len() == 1 => parse_number(column.dict.get(column.code(ord))),
                OTHER => column
                    .other(ord)
                    .and_then(|v| descend(v, &path[1..]))
                    .and_then(|v| match v {
                        Value::Number(n) => n.as_f64(),
                        Value::String(s) => parse_number(s),
                        _ => None,
                    }),
                _ => None,
            }
        };
        match agg.func {
            AggFunc::Count => Bitset::filter(mask, |row| {
                if exotic(row) {
                    return fallback(row);
                }
                number_outcome(events.range(row).filter(|&i| selected(i)).count() as f64)
            }),
            AggFunc::Sum => Bitset::filter(mask, |row| {
                if exotic(row) {
                    return fallback(row);
                }
                let sum: f64 = events
                    .range(row)
                    .filter(|&i| selected(i))
                    .filter_map(number)
                    .sum();
                number_outcome(sum)
            }),
            AggFunc::Min | AggFunc::Max => Bitset::filter(mask, |row| {
                if exotic(row) {
                    return fallback(row);
                }
                let numbers = events
                    .range(row)
                    .filter(|&i| selected(i))
                    .filter_map(number);
                let value = if agg.func == AggFunc::Min {
                    numbers.min_by(f64::total_cmp)
                } else {
                    numbers.max_by(f64::total_cmp)
                };
                value.map_or(nothing, &mut number_outcome)
            }),
            AggFunc::First | AggFunc::Last => {
                let first = agg.func == AggFunc::First;
                let mut memo: HashMap<(u8, u64), bool> = HashMap::new();
                let pivot = if path.is_empty() {
                    time_pivot(leaf, now)
                } else {
                    None
                };
                let mut bare = (path.is_empty() && query.filter.is_none()).then(|| ProfileView {
                    events: vec![EventView {
                        name: query.event.clone(),
                        occurred_at: now,
                        properties: BTreeMap::new(),
                    }],
                    ..ProfileView::default()
                });
                Bitset::filter(mask, |row| {
                    if exotic(row) {
                        return fallback(row);
                    }
                    // Ties on time: the earliest in the timeline for `first`, the latest for `last`.
                    let mut chosen: Option<usize> = None;
                    for i in events.range(row).filter(|&i| selected(i)) {
                        let better = chosen.is_none_or(|c| {
                            if first {
                                events.at[i] < events.at[c]
                            } else {
                                events.at[i] >= events.at[c]
                            }
                        });
                        if better {
                            chosen = Some(i);
                        }
                    }
                    let Some(i) = chosen else {
                        return nothing;
                    };
                    // The outcome depends on the time alone, or on the property value alone.
                    let key = if let Some(pivot) = pivot {
                        Some((u8::MAX - 1, events.time(i).cmp(&pivot) as i8 as u64))
                    } else if path.is_empty() {
                        Some((u8::MAX, events.at[i] as u64))
                    } else {
                        let ord = events.ord[i];
                        match column {
                            _ if ord == NONE => Some((ABSENT, 0)),
                            None => Some((ABSENT, 0)),
                            Some(column) => {
                                let ord = ord as usize;
                                match column.tag(ord) {
                                    OTHER => None,
                                    NUM | STR if path.len() > 1 => Some((ABSENT, 0)),
                                    NUM => Some((NUM, column.num(ord).to_bits())),
                                    STR => Some((STR, u64::from(column.code(ord)))),
                                    tag => Some((tag, 0)),
                                }
                            }
                        }
                    };
                    // The probe: the leaf on a timeline of that one event (its properties only matter
                    // to `where` and to a property read).
                    let mut probe = || match bare.as_mut() {
                        Some(view) => {
                            view.events[0].occurred_at = events.time(i);
                            holds(leaf, view, now)
                        }
                        None => {
                            let view = ProfileView {
                                events: vec![events.event(i)],
                                ..ProfileView::default()
                            };
                            holds(leaf, &view, now)
                        }
                    };
                    match key {
                        Some(key) => *memo.entry(key).or_insert_with(probe),
                        None => probe(),
                    }
                })
            }
        }
    }
}

impl Leaves for Exec<'_, '_> {
    fn cost(&self, leaf: &Cond) -> u8 {
        match shape(leaf) {
            Shape::Const | Shape::Segment(_) => 0,
            Shape::Name(_) => 1,
            Shape::Event(_) => 2,
            Shape::Rows => 3,
        }
    }

    fn leaf(&mut self, leaf: &Cond, mask: &Bitset) -> Bitset {
        match shape(leaf) {
            Shape::Const => self.constant(holds(leaf, &ProfileView::default(), self.now), mask),
            Shape::Segment(id) => match (self.in_segment)(id) {
                Some(members) => {
                    let mut out = mask.clone();
                    out.and_with(&members.rows);
                    out
                }
                None => Bitset::new(),
            },
            Shape::Name(name) => self.name_leaf(leaf, name, mask),
            Shape::Event(event) => self.event_leaf(leaf, event, mask),
            Shape::Rows => self.rows(leaf, mask),
        }
    }
}

// ----- event ordinals (inside `where`) -------------------------------------------------------------------

struct PropLeaves<'a> {
    store: &'a PropStore,
    now: DateTime<Utc>,
}

impl Leaves for PropLeaves<'_> {
    fn cost(&self, leaf: &Cond) -> u8 {
        match reads(leaf).names.len() {
            0 => 0,
            1 => 1,
            _ => 3,
        }
    }

    fn leaf(&mut self, leaf: &Cond, mask: &Bitset) -> Bitset {
        let names = reads(leaf).names;
        match names.as_slice() {
            [] => {
                if Probe::new(leaf, Slot::Property(""), self.now).value(None) {
                    mask.clone()
                } else {
                    Bitset::new()
                }
            }
            [name] => {
                let key = name.path[0].as_str();
                let mut scan = ColumnScan::new(
                    leaf,
                    name,
                    self.store.columns.get(key),
                    Slot::Property(key),
                    self.now,
                );
                Bitset::filter(mask, |ord| scan.test(ord))
            }
            _ => {
                let mut probe = Probe::new(leaf, Slot::Property(""), self.now);
                Bitset::filter(mask, |ord| {
                    probe.properties(self.store.properties(u32::try_from(ord).unwrap_or(NONE)))
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Shape, shape};
    use crate::ast::Cond;
    use crate::parse;

    /// How each leaf of `text` is evaluated: `n` a column scan, `e` an event scan, `c` a constant,
    /// `s` a segment, `r` row by row.
    fn shapes(text: &str) -> String {
        fn walk(cond: &Cond, out: &mut String) {
            match cond {
                Cond::And(items) | Cond::Or(items) => items.iter().for_each(|c| walk(c, out)),
                Cond::Not(inner) => walk(inner, out),
                leaf => out.push(match shape(leaf) {
                    Shape::Const => 'c',
                    Shape::Segment(_) => 's',
                    Shape::Name(_) => 'n',
                    Shape::Event(_) => 'e',
                    Shape::Rows => 'r',
                }),
            }
        }
        let mut out = String::new();
        walk(&parse(text).unwrap().root, &mut out);
        out
    }

    #[test]
    fn the_benchmark_shapes_are_vectorised() {
        for (text, expected) in [
            ("country = \"FR\" and total_spent > 500", "nn"),
            (
                "country in [\"FR\", \"DE\"] and tier != \"bronze\" and age >= 25 and count(order_completed within 30d) >= 3",
                "nnne",
            ),
            (
                "did(cart_abandoned within 7d) and not did(order_completed within 7d)",
                "ee",
            ),
            (
                "sum(order_completed.amount where currency = \"EUR\") > 1000",
                "e",
            ),
            ("last(order_completed) < now() - 60d", "e"),
            (
                "signup_at > now() - 90d or identifiers.email contains \"@x\"",
                "nn",
            ),
            ("consent.email and not in_segment(\"vip\") and true", "nsc"),
            ("total_spent - refunds > 5 or count(x) > age", "rr"),
        ] {
            assert_eq!(shapes(text), expected, "{text}");
        }
    }
}
