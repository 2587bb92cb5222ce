//! The map-side combining table: one value per distinct key, folded in place.
//!
//! It is the hot loop of every combining job, so it avoids what a `HashMap<Box<[u8]>, V>`
//! costs per record: keys of up to 16 bytes (photo ids, most words, user names) are stored
//! inline as two zero-padded words, hashed with two multiplies and compared with three
//! integer comparisons, with no allocation and no `memcmp` call. Longer keys go to the heap
//! and hash with XXH3.

use hashbrown::HashTable;
use xxhash_rust::xxh3::xxh3_64;

/// Hashes the padded words of a short key: folded 64x64->128-bit multiplies (as foldhash
/// does), so every input bit reaches both the bucket index (low bits) and the tag (high bits).
/// A plain multiply would not do: it only moves bits upward, and big-endian integer keys
/// vary in their high bytes.
#[inline]
fn hash_words(len: usize, w: [u64; 2]) -> u64 {
    crate::partition::fold_mul(
        crate::partition::fold_mul(
            w[0] ^ 0x243f_6a88_85a3_08d3,
            w[1] ^ 0x1319_8a2e_0370_7344 ^ len as u64,
        ),
        0xa409_3822_299f_31d0,
    )
}

/// A key as the table stores it.
#[derive(Debug)]
enum StoredKey {
    Inline { len: u8, words: [u64; 2] },
    Heap(Box<[u8]>),
}

/// A key being looked up: its padded words, computed once.
struct Probe<'a> {
    bytes: &'a [u8],
    words: [u64; 2],
    hash: u64,
}

impl<'a> Probe<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        if bytes.len() <= 16 {
            let mut buf = [0u8; 16];
            buf[..bytes.len()].copy_from_slice(bytes);
            let w0 = u64::from_le_bytes(buf[..8].try_into().expect("8 bytes"));
            let w1 = u64::from_le_bytes(buf[8..].try_into().expect("8 bytes"));
            Probe {
                bytes,
                words: [w0, w1],
                hash: hash_words(bytes.len(), [w0, w1]),
            }
        } else {
            Probe {
                bytes,
                words: [0, 0],
                hash: xxh3_64(bytes),
            }
        }
    }

    fn matches(&self, k: &StoredKey) -> bool {
        match k {
            StoredKey::Inline { len, words } => {
                *len as usize == self.bytes.len() && *words == self.words
            }
            StoredKey::Heap(b) => **b == *self.bytes,
        }
    }

    fn store(&self) -> StoredKey {
        if self.bytes.len() <= 16 {
            StoredKey::Inline {
                len: self.bytes.len() as u8,
                words: self.words,
            }
        } else {
            StoredKey::Heap(self.bytes.into())
        }
    }
}

impl StoredKey {
    fn hash(&self) -> u64 {
        match self {
            StoredKey::Inline { len, words } => hash_words(usize::from(*len), *words),
            StoredKey::Heap(b) => xxh3_64(b),
        }
    }

    fn to_vec(&self) -> Vec<u8> {
        match self {
            StoredKey::Inline { len, words } => {
                let mut v = Vec::with_capacity(16);
                v.extend_from_slice(&words[0].to_le_bytes());
                v.extend_from_slice(&words[1].to_le_bytes());
                v.truncate(*len as usize);
                v
            }
            StoredKey::Heap(b) => b.to_vec(),
        }
    }
}

struct Slot<V> {
    key: StoredKey,
    partition: u32,
    value: V,
}

/// Distinct keys with their partition and folded value.
pub(crate) struct CombineTable<V> {
    table: HashTable<Slot<V>>,
}

/// What [`CombineTable::upsert`] did.
pub(crate) enum Upsert<V> {
    /// The key was present; here is its value to fold into.
    Found,
    /// The key is new; the caller must give its partition (see [`CombineTable::insert`]).
    Vacant(V),
}

impl<V> CombineTable<V> {
    pub(crate) fn new() -> Self {
        CombineTable {
            table: HashTable::new(),
        }
    }

    /// Folds `value` into the key's value with `combine`, or hands it back if the key is new.
    #[inline]
    pub(crate) fn upsert(
        &mut self,
        key: &[u8],
        value: V,
        combine: impl FnOnce(&mut V, V),
    ) -> Upsert<V> {
        let probe = Probe::new(key);
        match self.table.find_mut(probe.hash, |s| probe.matches(&s.key)) {
            Some(slot) => {
                combine(&mut slot.value, value);
                Upsert::Found
            }
            None => Upsert::Vacant(value),
        }
    }

    /// Inserts a key known to be absent.
    pub(crate) fn insert(&mut self, key: &[u8], partition: u32, value: V) {
        let probe = Probe::new(key);
        self.table.insert_unique(
            probe.hash,
            Slot {
                key: probe.store(),
                partition,
                value,
            },
            |s| s.key.hash(),
        );
    }

    /// Returns the size of one slot, for memory accounting.
    pub(crate) fn slot_bytes() -> usize {
        std::mem::size_of::<Slot<V>>()
    }

    /// Takes every entry as (partition, key, value), sorted by partition then key.
    pub(crate) fn drain_sorted(&mut self) -> Vec<(u32, Vec<u8>, V)> {
        let mut items: Vec<(u32, Vec<u8>, V)> = self
            .table
            .drain()
            .map(|s| (s.partition, s.key.to_vec(), s.value))
            .collect();
        items.sort_unstable_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
        items
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn behaves_like_a_map_of_sums(keys in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..24), 0..200)) {
            let mut t = CombineTable::new();
            let mut m = std::collections::BTreeMap::new();
            for k in &keys {
                *m.entry(k.clone()).or_insert(0u64) += 1;
                if let Upsert::Vacant(v) = t.upsert(k, 1u64, |a, b| *a += b) {
                    t.insert(k, k.len() as u32 % 3, v);
                }
            }
            let mut expected: Vec<(u32, Vec<u8>, u64)> =
                m.into_iter().map(|(k, v)| (k.len() as u32 % 3, k, v)).collect();
            expected.sort();
            prop_assert_eq!(t.drain_sorted(), expected);
        }
    }

    #[test]
    fn keys_differing_only_in_trailing_zeros_stay_apart() {
        let mut t = CombineTable::new();
        for k in [&b""[..], b"\0", b"\0\0", b"a", b"a\0"] {
            assert!(matches!(
                t.upsert(k, 1u64, |a, b| *a += b),
                Upsert::Vacant(_)
            ));
            t.insert(k, 0, 1);
        }
        assert_eq!(t.drain_sorted().len(), 5);
    }
}
