//! An in-memory columnar table of profiles that evaluates a segment expression over all of them at once.
//!
//! # Contract
//!
//! - [`ProfileTable::evaluate`] gives exactly the set of profiles for which the row-wise
//!   [`crate::evaluate`] is true, for any expression, time and segment memberships. Every construct is
//!   covered: nulls and absent values, `not`, `in`, `contains`, `starts_with`, `exists`, relative dates,
//!   identifiers, consent, computed traits, events and `in_segment(...)`.
//! - Storage: traits and computed traits as typed columns per name (see `column`), identifiers per type
//!   as dictionary codes, consent as one bitset per purpose, timelines in a CSR layout with event
//!   properties in a side store per event name (see `events`).
//! - Rows are positions: a profile keeps its row for as long as it is in the table; a removed profile's
//!   row is never reused, so a [`MemberSet`] stays meaningful across later upserts (it does not follow
//!   them: re-evaluate). Dictionaries of strings only grow.
//! - Evaluation: `and`/`or`/`not` are bitset operations, and each child is evaluated only for the rows
//!   that can still change the result (`and` narrows, `or` skips rows already in). A condition over one
//!   trait, computed trait, identifier type or consent purpose compared with constants is a column
//!   scan: its outcome is computed once per distinct string, once per interval between the numbers the
//!   condition mentions, and once for each of absent, `null`, `true` and `false` (by running the
//!   row-wise evaluator on a one-value profile, so the semantics stay the evaluator's own). A condition
//!   on one event function (`count`, `did`, `sum`, `min`, `max`, `first`, `last`, with `where` and
//!   `within`) compared with constants scans each row's events once, the `where` filter itself being
//!   evaluated column-wise over the event properties. Anything else (two names in one comparison,
//!   arithmetic between a trait and an event function, ...) is evaluated row by row, for the rows that
//!   still matter, on a profile rebuilt from the table.

mod bitset;
mod column;
mod events;
mod exec;

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};

use crate::{Expr, ProfileView};
use bitset::Bitset;
use column::{Column, IdentColumn};
use events::Events;

/// A set of profiles of one [`ProfileTable`], as a bitset over its rows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemberSet {
    rows: Bitset,
}

impl MemberSet {
    /// How many profiles.
    pub fn len(&self) -> usize {
        self.rows.count()
    }

    /// True when there is none.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Whether profile `id` of `table` is in the set.
    pub fn contains(&self, table: &ProfileTable, id: i64) -> bool {
        table
            .rows
            .get(&id)
            .is_some_and(|&row| self.rows.get(row as usize))
    }

    /// The profile ids, in row order (the order profiles were first inserted).
    pub fn ids<'a>(&'a self, table: &'a ProfileTable) -> impl Iterator<Item = i64> + 'a {
        self.rows
            .iter()
            .filter_map(|row| table.ids.get(row).copied())
    }

    /// The set of the given ids of `table` (ids not in the table are skipped).
    pub fn from_ids(table: &ProfileTable, ids: impl IntoIterator<Item = i64>) -> MemberSet {
        let mut rows = Bitset::new();
        for id in ids {
            if let Some(&row) = table.rows.get(&id) {
                rows.set(row as usize);
            }
        }
        MemberSet { rows }
    }
}

/// Profiles in columns. See the module documentation for the contract.
#[derive(Debug, Default)]
pub struct ProfileTable {
    /// Row to id (removed rows keep their old id but are not live).
    ids: Vec<i64>,
    rows: HashMap<i64, u32>,
    live: Bitset,
    traits: HashMap<String, Column>,
    computed: HashMap<String, Column>,
    identifiers: HashMap<String, IdentColumn>,
    consent: HashMap<String, Bitset>,
    events: Events,
}

impl ProfileTable {
    /// An empty table.
    pub fn new() -> Self {
        ProfileTable::default()
    }

    /// How many profiles.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// True when there is no profile.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Whether profile `id` is in the table.
    pub fn contains(&self, id: i64) -> bool {
        self.rows.contains_key(&id)
    }

    /// Inserts profile `id`, or replaces everything the table holds about it.
    pub fn upsert(&mut self, id: i64, view: &ProfileView) {
        let row = match self.rows.get(&id) {
            Some(&row) => row as usize,
            None => {
                let row = self.ids.len();
                self.ids.push(id);
                self.rows.insert(id, u32::try_from(row).unwrap_or(u32::MAX));
                self.live.set(row);
                row
            }
        };
        self.write(row, Some(view));
    }

    /// Removes profile `id`; false when it was not in the table.
    pub fn remove(&mut self, id: i64) -> bool {
        let Some(row) = self.rows.remove(&id) else {
            return false;
        };
        let row = row as usize;
        self.live.clear(row);
        self.write(row, None);
        true
    }

    /// Reclaims the space of replaced and removed timelines now (in one linear pass over the events).
    /// It also happens by itself when an upsert finds more garbage than live events.
    pub fn compact(&mut self) {
        self.events.compact();
    }

    /// The profile as the table holds it: it evaluates exactly like the one given to
    /// [`ProfileTable::upsert`] (numbers read as `f64`, map orders may differ).
    pub fn view(&self, id: i64) -> Option<ProfileView> {
        self.rows.get(&id).map(|&row| self.row_view(row as usize))
    }

    /// The profiles that match `expr` at time `now`. `in_segment` gives the members of another segment of
    /// this table (`None`: no member).
    pub fn evaluate<'s>(
        &self,
        expr: &Expr,
        now: DateTime<Utc>,
        in_segment: &dyn Fn(&str) -> Option<&'s MemberSet>,
    ) -> MemberSet {
        let exec = exec::Exec::new(self, now, in_segment);
        MemberSet {
            rows: exec.run(&expr.root, &self.live),
        }
    }

    /// Whether profile `id` matches `expr` at time `now`, `in_segment` answering for that profile; false
    /// when `id` is not in the table. Cost: rebuilding one profile, then the row-wise evaluator.
    pub fn evaluate_one(
        &self,
        id: i64,
        expr: &Expr,
        now: DateTime<Utc>,
        in_segment: &dyn Fn(&str) -> bool,
    ) -> bool {
        self.view(id)
            .is_some_and(|view| crate::evaluate(expr, &view, now, in_segment))
    }

    fn write(&mut self, row: usize, view: Option<&ProfileView>) {
        write_columns(&mut self.traits, row, view.map(|v| &v.traits));
        write_columns(&mut self.computed, row, view.map(|v| &v.computed));
        for column in self.identifiers.values_mut() {
            if column.codes(row).0 != column::NONE {
                column.set(row, &[]);
            }
        }
        for bits in self.consent.values_mut() {
            bits.clear(row);
        }
        let Some(view) = view else {
            self.events.set_row(row, &[]);
            return;
        };
        let mut by_kind: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for (kind, value) in &view.identifiers {
            by_kind.entry(kind).or_default().push(value);
        }
        for (kind, values) in by_kind {
            self.identifiers
                .entry(kind.to_owned())
                .or_default()
                .set(row, &values);
        }
        for (purpose, granted) in &view.consent {
            if *granted {
                self.consent.entry(purpose.clone()).or_default().set(row);
            }
        }
        self.events.set_row(row, &view.events);
        if self.events.garbage() > (1 << 16) && self.events.garbage() > self.events.live() {
            self.events.compact();
        }
    }

    /// The parts of the row's profile that `needs` lists (all of it for `None`).
    fn row_view_for(&self, row: usize, needs: Option<&exec::Needs<'_>>) -> ProfileView {
        let Some(needs) = needs else {
            return self.row_view(row);
        };
        let read = |columns: &HashMap<String, Column>, names: &[&str]| {
            names
                .iter()
                .filter_map(|name| Some(((*name).to_owned(), columns.get(*name)?.get(row)?)))
                .collect()
        };
        let codes: Vec<u32> = needs
            .events
            .iter()
            .filter_map(|name| self.events.names.find(name))
            .collect();
        ProfileView {
            traits: read(&self.traits, &needs.traits),
            computed: read(&self.computed, &needs.computed),
            identifiers: needs
                .identifiers
                .iter()
                .filter_map(|kind| Some((*kind, self.identifiers.get(*kind)?)))
                .flat_map(|(kind, column)| {
                    column
                        .values(row)
                        .into_iter()
                        .map(move |value| (kind.to_owned(), value.to_owned()))
                })
                .collect(),
            consent: needs
                .consent
                .iter()
                .filter(|purpose| self.consent.get(**purpose).is_some_and(|b| b.get(row)))
                .map(|purpose| ((*purpose).to_owned(), true))
                .collect(),
            events: self
                .events
                .range(row)
                .filter(|&i| codes.contains(&self.events.name[i]))
                .map(|i| self.events.event(i))
                .collect(),
        }
    }

    fn row_view(&self, row: usize) -> ProfileView {
        let read = |columns: &HashMap<String, Column>| {
            columns
                .iter()
                .filter_map(|(name, column)| Some((name.clone(), column.get(row)?)))
                .collect()
        };
        ProfileView {
            traits: read(&self.traits),
            computed: read(&self.computed),
            identifiers: self
                .identifiers
                .iter()
                .flat_map(|(kind, column)| {
                    column
                        .values(row)
                        .into_iter()
                        .map(move |value| (kind.clone(), value.to_owned()))
                })
                .collect(),
            consent: self
                .consent
                .iter()
                .filter(|(_, bits)| bits.get(row))
                .map(|(purpose, _)| (purpose.clone(), true))
                .collect(),
            events: self.events.row_events(row),
        }
    }
}

fn write_columns(
    columns: &mut HashMap<String, Column>,
    row: usize,
    values: Option<&BTreeMap<String, serde_json::Value>>,
) {
    for (name, column) in columns.iter_mut() {
        if values.is_none_or(|v| !v.contains_key(name)) {
            column.set(row, None);
        }
    }
    for (name, value) in values.into_iter().flatten() {
        match columns.get_mut(name) {
            Some(column) => column.set(row, Some(value)),
            None => columns
                .entry(name.clone())
                .or_default()
                .set(row, Some(value)),
        }
    }
}
