//! Timelines in a CSR-like layout: each row has a `(start, count)` range into flat arrays of event name
//! code, time (nanoseconds since the epoch) and property ordinal.
//!
//! Contract: a row's events keep their timeline order (sums, ties of `first`/`last` depend on it).
//! Properties live in a side store per event name, as columns over that name's ordinals; an event with
//! no properties has no ordinal ([`NONE`]), so property-less events cost 16 bytes. Re-writing a row
//! appends its new events and leaves the old ones as garbage, reclaimed in place by [`Events::compact`].
//! A row with a time outside the nanosecond range (years 1677 to 2262) is marked *exotic*: its exact
//! times are kept aside and queries evaluate it row by row.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};

use super::bitset::Bitset;
use super::column::{Column, Dict, NONE};
use crate::EventView;

/// The properties of the events of one name, by ordinal.
#[derive(Debug, Default)]
pub(crate) struct PropStore {
    pub len: usize,
    pub columns: HashMap<String, Column>,
}

impl PropStore {
    pub fn properties(&self, ord: u32) -> BTreeMap<String, serde_json::Value> {
        if ord == NONE {
            return BTreeMap::new();
        }
        self.columns
            .iter()
            .filter_map(|(key, column)| Some((key.clone(), column.get(ord as usize)?)))
            .collect()
    }
}

#[derive(Debug, Default)]
pub(crate) struct Events {
    pub start: Vec<usize>,
    pub count: Vec<u32>,
    pub name: Vec<u32>,
    pub at: Vec<i64>,
    pub ord: Vec<u32>,
    pub names: Dict,
    pub props: Vec<PropStore>,
    pub exotic: Bitset,
    exotic_at: HashMap<usize, DateTime<Utc>>,
    garbage: usize,
}

impl Events {
    /// The row's event index range.
    pub fn range(&self, row: usize) -> std::ops::Range<usize> {
        match (self.start.get(row), self.count.get(row)) {
            (Some(&start), Some(&count)) => start..start + count as usize,
            _ => 0..0,
        }
    }

    pub fn live(&self) -> usize {
        self.name.len() - self.garbage
    }

    pub fn garbage(&self) -> usize {
        self.garbage
    }

    pub fn time(&self, index: usize) -> DateTime<Utc> {
        match self.exotic_at.get(&index) {
            Some(t) => *t,
            None => DateTime::from_timestamp_nanos(self.at[index]),
        }
    }

    pub fn event(&self, index: usize) -> EventView {
        let code = self.name[index];
        EventView {
            name: self.names.get(code).to_owned(),
            occurred_at: self.time(index),
            properties: self.props[code as usize].properties(self.ord[index]),
        }
    }

    pub fn row_events(&self, row: usize) -> Vec<EventView> {
        self.range(row).map(|i| self.event(i)).collect()
    }

    /// Replaces the row's timeline.
    pub fn set_row(&mut self, row: usize, events: &[EventView]) {
        let old = self.range(row);
        self.garbage += old.len();
        if self.exotic.get(row) {
            for i in old {
                self.exotic_at.remove(&i);
            }
            self.exotic.clear(row);
        }
        if row >= self.start.len() {
            self.start.resize(row + 1, 0);
            self.count.resize(row + 1, 0);
        }
        self.start[row] = self.name.len();
        self.count[row] = u32::try_from(events.len()).unwrap_or(u32::MAX);
        for event in events.iter().take(u32::MAX as usize) {
            let code = self.names.intern(&event.name);
            if self.props.len() <= code as usize {
                self.props
                    .resize_with(code as usize + 1, PropStore::default);
            }
            let at = match event.occurred_at.timestamp_nanos_opt() {
                Some(at) => at,
                None => {
                    self.exotic.set(row);
                    self.exotic_at.insert(self.name.len(), event.occurred_at);
                    0
                }
            };
            let ord = if event.properties.is_empty() {
                NONE
            } else {
                let store = &mut self.props[code as usize];
                let ord = store.len;
                store.len += 1;
                for (key, value) in &event.properties {
                    store
                        .columns
                        .entry(key.clone())
                        .or_default()
                        .set(ord, Some(value));
                }
                u32::try_from(ord).unwrap_or(NONE)
            };
            self.name.push(code);
            self.at.push(at);
            self.ord.push(ord);
        }
    }

    /// Drops the garbage in place: rows keep their positions and their events' order; property
    /// ordinals are renumbered. Rows are visited by position in the arrays, so every move is to a lower
    /// index (and every kept property ordinal to a lower one): nothing is overwritten before it is read,
    /// and no second copy of the arrays is needed.
    pub fn compact(&mut self) {
        let mut rows: Vec<usize> = (0..self.start.len())
            .filter(|&row| self.count[row] > 0)
            .collect();
        rows.sort_unstable_by_key(|&row| self.start[row]);
        let mut exotic_at = HashMap::new();
        // Per event name: the old ordinal of each new one (increasing).
        let mut keep: Vec<Vec<u32>> = vec![Vec::new(); self.props.len()];
        let mut next = 0;
        for row in rows {
            let range = self.range(row);
            self.start[row] = next;
            for i in range {
                if let Some(t) = self.exotic_at.get(&i) {
                    exotic_at.insert(next, *t);
                }
                let code = self.name[i];
                self.name[next] = code;
                self.at[next] = self.at[i];
                self.ord[next] = match self.ord[i] {
                    NONE => NONE,
                    old => {
                        let kept = &mut keep[code as usize];
                        kept.push(old);
                        u32::try_from(kept.len() - 1).unwrap_or(NONE)
                    }
                };
                next += 1;
            }
        }
        for row in 0..self.start.len() {
            if self.count[row] == 0 {
                self.start[row] = 0;
            }
        }
        self.name.truncate(next);
        self.at.truncate(next);
        self.ord.truncate(next);
        for (store, kept) in self.props.iter_mut().zip(&keep) {
            for column in store.columns.values_mut() {
                column.retain_slots(kept);
            }
            store.len = kept.len();
        }
        self.exotic_at = exotic_at;
        self.garbage = 0;
    }
}
