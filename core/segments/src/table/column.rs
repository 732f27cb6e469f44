//! Typed storage of JSON values, one slot per row (traits, computed traits) or per event ordinal (event
//! properties).
//!
//! Contract: [`Column::get`] gives back a value that evaluates exactly like the one stored. Numbers are
//! kept as the `f64` the evaluator reads (`as_f64`), strings are dictionary codes, booleans and `null`
//! live in the tag alone, and arrays and objects are kept verbatim in a side map (object equality
//! compares the JSON itself). A slot past the end reads as absent.

use std::collections::HashMap;
use std::hash::BuildHasher;

use serde_json::Value;

pub(crate) const ABSENT: u8 = 0;
pub(crate) const NULL: u8 = 1;
pub(crate) const FALSE: u8 = 2;
pub(crate) const TRUE: u8 = 3;
pub(crate) const NUM: u8 = 4;
pub(crate) const STR: u8 = 5;
pub(crate) const OTHER: u8 = 6;

/// "No code", for optional codes.
pub(crate) const NONE: u32 = u32::MAX;

/// Interned strings: one arena, codes in insertion order. Strings are never freed.
#[derive(Debug, Default)]
pub(crate) struct Dict {
    bytes: String,
    ends: Vec<usize>,
    /// The next code with the same hash (a collision chain), or [`NONE`].
    chain: Vec<u32>,
    index: HashMap<u64, u32>,
    hasher: std::hash::RandomState,
}

impl Dict {
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn get(&self, code: u32) -> &str {
        let code = code as usize;
        let start = if code == 0 { 0 } else { self.ends[code - 1] };
        &self.bytes[start..self.ends[code]]
    }

    pub fn find(&self, text: &str) -> Option<u32> {
        let mut code = *self.index.get(&self.hasher.hash_one(text))?;
        while code != NONE {
            if self.get(code) == text {
                return Some(code);
            }
            code = self.chain[code as usize];
        }
        None
    }

    pub fn intern(&mut self, text: &str) -> u32 {
        if let Some(code) = self.find(text) {
            return code;
        }
        let code = u32::try_from(self.ends.len()).unwrap_or(NONE - 1);
        let hash = self.hasher.hash_one(text);
        self.bytes.push_str(text);
        self.ends.push(self.bytes.len());
        self.chain
            .push(self.index.insert(hash, code).unwrap_or(NONE));
        code
    }
}

/// One named value per slot.
#[derive(Debug, Default)]
pub(crate) struct Column {
    tags: Vec<u8>,
    nums: Vec<f64>,
    codes: Vec<u32>,
    others: HashMap<usize, Value>,
    pub dict: Dict,
}

impl Column {
    pub fn tag(&self, slot: usize) -> u8 {
        self.tags.get(slot).copied().unwrap_or(ABSENT)
    }

    /// Valid when `tag(slot) == NUM`.
    pub fn num(&self, slot: usize) -> f64 {
        self.nums[slot]
    }

    /// Valid when `tag(slot) == STR`.
    pub fn code(&self, slot: usize) -> u32 {
        self.codes[slot]
    }

    /// Valid when `tag(slot) == OTHER`.
    pub fn other(&self, slot: usize) -> Option<&Value> {
        self.others.get(&slot)
    }

    pub fn set(&mut self, slot: usize, value: Option<&Value>) {
        if slot >= self.tags.len() {
            if value.is_none() {
                return;
            }
            self.tags.resize(slot + 1, ABSENT);
        }
        if self.tags[slot] == OTHER {
            self.others.remove(&slot);
        }
        self.tags[slot] = match value {
            None => ABSENT,
            Some(Value::Null) => NULL,
            Some(Value::Bool(false)) => FALSE,
            Some(Value::Bool(true)) => TRUE,
            Some(Value::Number(n)) => match n.as_f64() {
                Some(n) => {
                    if slot >= self.nums.len() {
                        self.nums.resize(slot + 1, 0.0);
                    }
                    self.nums[slot] = n;
                    NUM
                }
                None => NULL,
            },
            Some(Value::String(s)) => {
                if slot >= self.codes.len() {
                    self.codes.resize(slot + 1, NONE);
                }
                self.codes[slot] = self.dict.intern(s);
                STR
            }
            Some(other) => {
                self.others.insert(slot, other.clone());
                OTHER
            }
        };
    }

    /// Keeps the slots `kept` (old slot of each new one, increasing), renumbered `0..kept.len()`, in
    /// place. The dictionary is kept as it is.
    pub fn retain_slots(&mut self, kept: &[u32]) {
        let mut others = HashMap::new();
        for (new, &old) in kept.iter().enumerate() {
            let old = old as usize;
            let tag = self.tag(old);
            if new < self.tags.len() {
                self.tags[new] = tag;
            }
            match tag {
                NUM => self.nums[new] = self.nums[old],
                STR => self.codes[new] = self.codes[old],
                OTHER => {
                    if let Some(value) = self.others.remove(&old) {
                        others.insert(new, value);
                    }
                }
                _ => {}
            }
        }
        self.tags.truncate(kept.len());
        self.nums.truncate(kept.len());
        self.codes.truncate(kept.len());
        self.others = others;
    }

    pub fn get(&self, slot: usize) -> Option<Value> {
        Some(match self.tag(slot) {
            ABSENT => return None,
            NULL => Value::Null,
            FALSE => Value::Bool(false),
            TRUE => Value::Bool(true),
            NUM => Value::from(self.nums[slot]),
            STR => Value::String(self.dict.get(self.codes[slot]).to_owned()),
            _ => self.others.get(&slot).cloned().unwrap_or(Value::Null),
        })
    }
}

/// The identifiers of one type: the first per row inline, any more in a side map.
#[derive(Debug, Default)]
pub(crate) struct IdentColumn {
    first: Vec<u32>,
    extra: HashMap<usize, Vec<u32>>,
    pub dict: Dict,
}

impl IdentColumn {
    /// The row's codes: `(first, more)`; `first == NONE` when it has none.
    pub fn codes(&self, row: usize) -> (u32, Option<&Vec<u32>>) {
        let first = self.first.get(row).copied().unwrap_or(NONE);
        if first == NONE {
            (NONE, None)
        } else {
            (first, self.extra.get(&row))
        }
    }

    pub fn set(&mut self, row: usize, values: &[&str]) {
        self.extra.remove(&row);
        if values.is_empty() {
            if let Some(first) = self.first.get_mut(row) {
                *first = NONE;
            }
            return;
        }
        if row >= self.first.len() {
            self.first.resize(row + 1, NONE);
        }
        self.first[row] = self.dict.intern(values[0]);
        if values.len() > 1 {
            let more = values[1..].iter().map(|v| self.dict.intern(v)).collect();
            self.extra.insert(row, more);
        }
    }

    pub fn values(&self, row: usize) -> Vec<&str> {
        let (first, more) = self.codes(row);
        if first == NONE {
            return Vec::new();
        }
        std::iter::once(first)
            .chain(more.into_iter().flatten().copied())
            .map(|c| self.dict.get(c))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn round_trip() {
        let mut c = Column::default();
        let values = [
            json!(null),
            json!(true),
            json!(false),
            json!(3),
            json!(2.5),
            json!("x"),
            json!([1, "a"]),
            json!({"a": 1}),
        ];
        for (i, v) in values.iter().enumerate() {
            c.set(i * 3, Some(v));
        }
        for (i, v) in values.iter().enumerate() {
            assert_eq!(c.get(i * 3).as_ref().and_then(Value::as_f64), v.as_f64());
            assert_eq!(c.get(i * 3).map(|v| v.is_string()), Some(v.is_string()));
            assert_eq!(c.get(i * 3 + 1), None);
        }
        c.set(0, None);
        assert_eq!(c.get(0), None);
        let mut d = Dict::default();
        assert_eq!(d.intern("a"), 0);
        assert_eq!(d.intern("bc"), 1);
        assert_eq!(d.intern("a"), 0);
        assert_eq!(d.get(1), "bc");
        assert_eq!(d.find("z"), None);
    }
}
