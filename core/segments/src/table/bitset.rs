//! A plain growable bitset over row positions (or event ordinals).
//!
//! Contract: bits past the end of the word vector read as `0`, so sets of different lengths combine as if
//! padded with zeros; equality ignores trailing zero words.

/// A set of small non-negative integers, one bit each.
#[derive(Debug, Clone, Default)]
pub(crate) struct Bitset {
    words: Vec<u64>,
}

impl PartialEq for Bitset {
    fn eq(&self, other: &Self) -> bool {
        let (short, long) = if self.words.len() <= other.words.len() {
            (&self.words, &other.words)
        } else {
            (&other.words, &self.words)
        };
        short == &long[..short.len()] && long[short.len()..].iter().all(|w| *w == 0)
    }
}

impl Eq for Bitset {}

impl Bitset {
    pub fn new() -> Self {
        Bitset::default()
    }

    /// `0..len`, all set.
    pub fn full(len: usize) -> Self {
        let mut words = vec![u64::MAX; len / 64];
        if !len.is_multiple_of(64) {
            words.push((1u64 << (len % 64)) - 1);
        }
        Bitset { words }
    }

    pub fn get(&self, i: usize) -> bool {
        self.words
            .get(i / 64)
            .is_some_and(|w| w & (1u64 << (i % 64)) != 0)
    }

    pub fn set(&mut self, i: usize) {
        let word = i / 64;
        if word >= self.words.len() {
            self.words.resize(word + 1, 0);
        }
        self.words[word] |= 1u64 << (i % 64);
    }

    pub fn clear(&mut self, i: usize) {
        if let Some(w) = self.words.get_mut(i / 64) {
            *w &= !(1u64 << (i % 64));
        }
    }

    pub fn and_with(&mut self, other: &Bitset) {
        self.words.truncate(other.words.len());
        for (w, o) in self.words.iter_mut().zip(&other.words) {
            *w &= o;
        }
    }

    pub fn or_with(&mut self, other: &Bitset) {
        if other.words.len() > self.words.len() {
            self.words.resize(other.words.len(), 0);
        }
        for (w, o) in self.words.iter_mut().zip(&other.words) {
            *w |= o;
        }
    }

    pub fn and_not(&mut self, other: &Bitset) {
        for (w, o) in self.words.iter_mut().zip(&other.words) {
            *w &= !o;
        }
    }

    pub fn count(&self) -> usize {
        self.words.iter().map(|w| w.count_ones() as usize).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.words.iter().all(|w| *w == 0)
    }

    /// The set positions, ascending.
    pub fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        self.words.iter().enumerate().flat_map(|(i, &word)| {
            let mut w = word;
            std::iter::from_fn(move || {
                if w == 0 {
                    return None;
                }
                let bit = w.trailing_zeros() as usize;
                w &= w - 1;
                Some(i * 64 + bit)
            })
        })
    }

    /// The positions of `mask` for which `test` holds (called once per set position, ascending).
    pub fn filter(mask: &Bitset, mut test: impl FnMut(usize) -> bool) -> Bitset {
        let mut words = Vec::with_capacity(mask.words.len());
        for (i, &word) in mask.words.iter().enumerate() {
            let base = i * 64;
            let mut out = 0u64;
            if word == u64::MAX {
                for bit in 0..64 {
                    out |= u64::from(test(base + bit)) << bit;
                }
            } else {
                let mut w = word;
                while w != 0 {
                    let bit = w.trailing_zeros();
                    w &= w - 1;
                    out |= u64::from(test(base + bit as usize)) << bit;
                }
            }
            words.push(out);
        }
        Bitset { words }
    }
}

#[cfg(test)]
mod tests {
    use super::Bitset;

    #[test]
    fn operations() {
        let mut a = Bitset::full(70);
        assert_eq!(a.count(), 70);
        a.clear(3);
        assert!(!a.get(3) && a.get(69) && !a.get(70) && !a.get(1000));
        let mut b = Bitset::new();
        b.set(3);
        b.set(200);
        let mut c = a.clone();
        c.or_with(&b);
        assert_eq!(c.count(), 71);
        c.and_not(&b);
        assert_eq!(c, a);
        c.and_with(&b);
        assert!(c.is_empty());
        assert_eq!(
            Bitset::filter(&a, |i| i % 2 == 0)
                .iter()
                .take(3)
                .collect::<Vec<_>>(),
            vec![0, 2, 4]
        );
        assert_eq!(b.iter().collect::<Vec<_>>(), vec![3, 200]);
    }
}
