//! K-way merge of sorted runs.
//!
//! A binary min-heap of run indices ordered by (current key, run index). Ties go to the lower
//! run index, so equal keys come out in run order: a reduce sees the values of one key in map
//! order, which keeps outputs deterministic however the maps were scheduled. Only one
//! decompressed block per run is in memory.

use super::format::{BlockCursor, FormatError, Run};

/// Merges sorted runs into one sorted stream.
pub struct Merger {
    cursors: Vec<BlockCursor>,
    /// Each cursor's key's first eight bytes, big-endian and zero-padded: most comparisons
    /// of the heap are settled by these, without a `memcmp` call.
    prefixes: Vec<u64>,
    heap: Vec<usize>,
    pending: Option<usize>,
}

/// The first eight bytes of `key` as a big-endian integer, zero-padded. Where two keys'
/// prefixes differ, they order as the keys do: the first byte that differs decides both, and
/// a key that ends there (padded with a zero) is a prefix of the other, so the smaller.
#[inline]
pub(crate) fn prefix(key: &[u8]) -> u64 {
    if let Some(b) = key.first_chunk::<8>() {
        return u64::from_be_bytes(*b);
    }
    let mut b = [0u8; 8];
    b[..key.len()].copy_from_slice(key);
    u64::from_be_bytes(b)
}

/// Orders two keys whose [`prefix`]es are equal. Keys of up to eight bytes are then equal if
/// their lengths are (the prefix holds all their bytes), and the shorter is a prefix of the
/// longer, so the smaller: no `memcmp` call. A key combined on every map meets itself in
/// every run, so most of a reduce's comparisons are such ties.
#[inline]
fn tie_break(a: &[u8], b: &[u8]) -> std::cmp::Ordering {
    if a.len() <= 8 && b.len() <= 8 {
        a.len().cmp(&b.len())
    } else {
        a.cmp(b)
    }
}

impl Merger {
    /// Starts merging `runs`, each a run of blocks sorted by key.
    ///
    /// # Errors
    /// [`FormatError`] if a run's first block is corrupt.
    pub fn new<R: Into<Run>>(runs: Vec<R>) -> Result<Self, FormatError> {
        let mut cursors = Vec::with_capacity(runs.len());
        let mut heap = Vec::with_capacity(runs.len());
        for run in runs {
            let mut c = BlockCursor::new(run);
            if c.advance()? {
                heap.push(cursors.len());
            }
            cursors.push(c);
        }
        let prefixes = cursors.iter().map(|c| prefix(c.key())).collect();
        let mut m = Merger {
            cursors,
            prefixes,
            heap,
            pending: None,
        };
        for i in (0..m.heap.len() / 2).rev() {
            m.sift_down(i);
        }
        Ok(m)
    }

    fn less(&self, a: usize, b: usize) -> bool {
        let (pa, pb) = (self.prefixes[a], self.prefixes[b]);
        if pa != pb {
            return pa < pb;
        }
        match tie_break(self.cursors[a].key(), self.cursors[b].key()) {
            std::cmp::Ordering::Equal => a < b,
            o => o.is_lt(),
        }
    }

    fn sift_down(&mut self, mut i: usize) {
        let n = self.heap.len();
        loop {
            let (l, r) = (2 * i + 1, 2 * i + 2);
            let mut m = i;
            if l < n && self.less(self.heap[l], self.heap[m]) {
                m = l;
            }
            if r < n && self.less(self.heap[r], self.heap[m]) {
                m = r;
            }
            if m == i {
                return;
            }
            self.heap.swap(i, m);
            i = m;
        }
    }

    /// Advances the run whose record was handed out last.
    fn settle(&mut self) -> Result<(), FormatError> {
        if let Some(run) = self.pending.take() {
            debug_assert_eq!(self.heap.first(), Some(&run));
            if self.cursors[run].advance()? {
                self.prefixes[run] = prefix(self.cursors[run].key());
                self.sift_down(0);
            } else {
                let last = self.heap.pop().expect("heap holds the pending run");
                if !self.heap.is_empty() {
                    self.heap[0] = last;
                    self.sift_down(0);
                }
            }
        }
        Ok(())
    }

    /// Returns the smallest key not yet consumed, without consuming it.
    pub fn next_key(&mut self) -> Result<Option<&[u8]>, FormatError> {
        self.settle()?;
        Ok(self.heap.first().map(|&i| self.cursors[i].key()))
    }

    /// Consumes and returns the next record.
    pub fn next_record(&mut self) -> Result<Option<(&[u8], &[u8])>, FormatError> {
        self.settle()?;
        match self.heap.first() {
            Some(&i) => {
                self.pending = Some(i);
                let c = &self.cursors[i];
                Ok(Some((c.key(), c.value())))
            }
            None => Ok(None),
        }
    }

    /// Consumes and returns the next value if the next record's key equals `key`.
    pub fn next_value_for(&mut self, key: &[u8]) -> Result<Option<&[u8]>, FormatError> {
        self.settle()?;
        match self.heap.first() {
            // The prefixes first: most calls end a key's values, at a different key.
            Some(&i)
                if self.prefixes[i] == prefix(key)
                    && tie_break(self.cursors[i].key(), key).is_eq() =>
            {
                self.pending = Some(i);
                Ok(Some(self.cursors[i].value()))
            }
            _ => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::format::{ShuffleFile, ShuffleWriter};
    use super::*;
    use bytes::Bytes;
    use proptest::prelude::*;

    fn run(keys: &[Vec<u8>], tag: u8) -> Bytes {
        let mut sorted = keys.to_vec();
        sorted.sort();
        let mut w = ShuffleWriter::new(Vec::new(), 1);
        for k in &sorted {
            w.push(0, k, &[tag]).unwrap();
        }
        let (data, _) = w.finish().unwrap();
        ShuffleFile::open(Bytes::from(data)).unwrap().partition(0)
    }

    proptest! {
        #[test]
        fn merged_output_is_sorted_complete_and_stable(
            runs in proptest::collection::vec(
                proptest::collection::vec(proptest::collection::vec(0u8..4, 0..3), 0..40), 0..6)
        ) {
            let inputs: Vec<Bytes> = runs.iter().enumerate().map(|(i, r)| run(r, i as u8)).collect();
            let mut m = Merger::new(inputs).unwrap();
            let mut out = Vec::new();
            while let Some((k, v)) = m.next_record().unwrap() {
                out.push((k.to_vec(), v[0]));
            }
            let mut expected: Vec<(Vec<u8>, u8)> = runs
                .iter()
                .enumerate()
                .flat_map(|(i, r)| r.iter().map(move |k| (k.clone(), i as u8)))
                .collect();
            expected.sort();
            prop_assert_eq!(out, expected);
        }
    }

    proptest! {
        #[test]
        fn prefixes_that_differ_order_as_their_keys(
            a in proptest::collection::vec(prop_oneof![Just(0u8), Just(1), any::<u8>()], 0..12),
            b in proptest::collection::vec(prop_oneof![Just(0u8), Just(1), any::<u8>()], 0..12),
        ) {
            if prefix(&a) != prefix(&b) {
                prop_assert_eq!(prefix(&a) < prefix(&b), a < b);
            }
        }
    }

    #[test]
    fn values_of_one_key_stop_at_the_next_key() {
        let a = run(&[b"a".to_vec(), b"b".to_vec()], 1);
        let b = run(&[b"a".to_vec(), b"c".to_vec()], 2);
        let mut m = Merger::new(vec![a, b]).unwrap();
        assert_eq!(m.next_key().unwrap(), Some(&b"a"[..]));
        assert_eq!(m.next_value_for(b"a").unwrap(), Some(&[1u8][..]));
        assert_eq!(m.next_value_for(b"a").unwrap(), Some(&[2u8][..]));
        assert_eq!(m.next_value_for(b"a").unwrap(), None);
        assert_eq!(m.next_key().unwrap(), Some(&b"b"[..]));
    }
}
