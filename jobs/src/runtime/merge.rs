//! K-way merge of sorted runs.
//!
//! A tree of losers over the runs, ordered by (current key, run index). Ties go to the lower
//! run index, so equal keys come out in run order: a reduce sees the values of one key in map
//! order, which keeps outputs deterministic however the maps were scheduled. Only one
//! decompressed block per run is in memory.

use super::format::{BlockCursor, FormatError, Run};

/// Merges sorted runs into one sorted stream.
pub struct Merger {
    cursors: Vec<BlockCursor>,
    /// Each cursor's key's first eight bytes, big-endian and zero-padded (`u64::MAX` once its
    /// run is done): most comparisons are settled by these, without a `memcmp` call.
    prefixes: Vec<u64>,
    /// Whether each run still has a record.
    live: Vec<bool>,
    /// A tree of losers over the runs: `tree[0]` is the run with the smallest record, and
    /// `tree[n]` (`0 < n < runs`) the run that lost the match at internal node `n`, whose
    /// children are nodes `2n` and `2n + 1`; run `r` is leaf `runs + r`. When the winner
    /// advances, only the matches on its path to the root are played again: one comparison
    /// per level, where a binary heap's sift-down makes two.
    tree: Vec<usize>,
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
        let mut live = Vec::with_capacity(runs.len());
        for run in runs {
            let mut c = BlockCursor::new(run);
            live.push(c.advance()?);
            cursors.push(c);
        }
        let prefixes = cursors
            .iter()
            .zip(&live)
            .map(|(c, &l)| if l { prefix(c.key()) } else { u64::MAX })
            .collect();
        let k = cursors.len();
        let mut m = Merger {
            cursors,
            prefixes,
            live,
            tree: vec![0; k],
            pending: None,
        };
        // Every match played once, from the leaves up; each node keeps its loser.
        let mut winners: Vec<usize> = (0..k).chain(0..k).collect();
        for n in (1..k).rev() {
            let (a, b) = (winners[2 * n], winners[2 * n + 1]);
            let (w, l) = if m.less(a, b) { (a, b) } else { (b, a) };
            winners[n] = w;
            m.tree[n] = l;
        }
        if k > 1 {
            m.tree[0] = winners[1];
        }
        Ok(m)
    }

    /// Whether run `a`'s record comes before run `b`'s: by key, then by run; a run that is
    /// done comes after every record.
    #[inline]
    fn less(&self, a: usize, b: usize) -> bool {
        let (pa, pb) = (self.prefixes[a], self.prefixes[b]);
        if pa != pb {
            return pa < pb;
        }
        if pa == u64::MAX && !(self.live[a] && self.live[b]) {
            return self.live[a] || (!self.live[b] && a < b);
        }
        match tie_break(self.cursors[a].key(), self.cursors[b].key()) {
            std::cmp::Ordering::Equal => a < b,
            o => o.is_lt(),
        }
    }

    /// The run with the smallest record, if any run has one.
    #[inline]
    fn winner(&self) -> Option<usize> {
        self.tree.first().copied().filter(|&r| self.live[r])
    }

    /// Advances the run whose record was handed out last, and replays its matches.
    fn settle(&mut self) -> Result<(), FormatError> {
        if let Some(run) = self.pending.take() {
            debug_assert_eq!(self.winner(), Some(run));
            if self.cursors[run].advance()? {
                self.prefixes[run] = prefix(self.cursors[run].key());
            } else {
                self.live[run] = false;
                self.prefixes[run] = u64::MAX;
            }
            let mut winner = run;
            let mut n = (self.tree.len() + run) / 2;
            while n > 0 {
                let other = self.tree[n];
                if self.less(other, winner) {
                    self.tree[n] = winner;
                    winner = other;
                }
                n /= 2;
            }
            self.tree[0] = winner;
        }
        Ok(())
    }

    /// Returns the smallest key not yet consumed, without consuming it.
    pub fn next_key(&mut self) -> Result<Option<&[u8]>, FormatError> {
        self.settle()?;
        Ok(self.winner().map(|i| self.cursors[i].key()))
    }

    /// Consumes and returns the next record.
    pub fn next_record(&mut self) -> Result<Option<(&[u8], &[u8])>, FormatError> {
        self.settle()?;
        match self.winner() {
            Some(i) => {
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
        match self.winner() {
            // The prefixes first: most calls end a key's values, at a different key.
            Some(i)
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

    /// Merges `runs` (each sorted here, tagged with its index) and checks the output against
    /// all records sorted by (key, run).
    fn merges_like_a_sort(runs: &[Vec<Vec<u8>>]) -> Result<(), TestCaseError> {
        let inputs: Vec<Bytes> = runs
            .iter()
            .enumerate()
            .map(|(i, r)| run(r, i as u8))
            .collect();
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
        Ok(())
    }

    proptest! {
        #[test]
        fn merged_output_is_sorted_complete_and_stable(
            runs in proptest::collection::vec(
                proptest::collection::vec(proptest::collection::vec(0u8..4, 0..3), 0..40), 0..6)
        ) {
            merges_like_a_sort(&runs)?;
        }

        // Keys of 0 and 0xff bytes around eight long: prefixes of all ones (as a finished
        // run's), ties past the prefix, and up to 9 runs (trees that are not full).
        #[test]
        fn long_keys_and_prefixes_of_all_ones_merge_too(
            runs in proptest::collection::vec(
                proptest::collection::vec(
                    proptest::collection::vec(prop_oneof![Just(0u8), Just(0xff)], 6..11),
                    0..20,
                ),
                0..10,
            )
        ) {
            merges_like_a_sort(&runs)?;
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
