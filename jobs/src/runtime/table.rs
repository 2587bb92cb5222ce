//! The map-side combining table: one value per distinct key, folded in place.
//!
//! It is the hot loop of every combining job, so it avoids what a `HashMap<Box<[u8]>, V>`
//! costs per record, and keeps its entries small, since a table that outgrows the CPU's
//! caches spends its time waiting for memory (a word count over a 50,000-word vocabulary
//! stalled on half of its lookups with 40-byte entries). Keys live in one of four tables by
//! length, each entry only as large as its keys need:
//! - up to 8 bytes whose last byte is not zero (most words, short user names, most `u64`
//!   keys such as photo ids): one `u64`, the bytes zero-padded (the length is where the
//!   zeros begin, so it need not be stored);
//! - up to 16 bytes otherwise: two `u64`s and the length;
//! - longer: on the heap, hashed with XXH3.
//!
//! Short keys hash with a folded multiply and compare as integers: no allocation, no
//! `memcmp`. A key's partition is not stored: it is computed again, once per distinct key,
//! when the table is drained.

use hashbrown::HashTable;
use xxhash_rust::xxh3::xxh3_64;

use crate::partition::fold_mul;

#[inline(always)]
fn hash1(w: u64) -> u64 {
    // A folded 64x64->128-bit multiply (as foldhash does): the product's high half mixes the
    // key's high bytes down, so every input bit reaches both the bucket index (low bits) and
    // the tag (high bits); a plain multiply only moves bits up, and big-endian integer keys
    // vary in their high bytes.
    fold_mul(w ^ 0x243f_6a88_85a3_08d3, 0x1319_8a2e_0370_7344)
}

/// How many bytes `w` has up to its last non-zero one: the length of a key stored in
/// [`CombineTable::tiny`].
#[inline(always)]
fn significant_bytes(w: u64) -> usize {
    (71 - w.leading_zeros() as usize) / 8
}

#[inline(always)]
fn hash2(len: usize, w: [u64; 2]) -> u64 {
    fold_mul(
        fold_mul(
            w[0] ^ 0x243f_6a88_85a3_08d3,
            w[1] ^ 0x1319_8a2e_0370_7344 ^ len as u64,
        ),
        0xa409_3822_299f_31d0,
    )
}

/// Reads up to 8 bytes as a little-endian `u64`, zero-padded, with loads of the bytes
/// themselves (two overlapping ones where the length is not a power of two), not a copy
/// through a buffer: a copy's bytes stored and read back as a word stall the CPU.
#[inline(always)]
fn word(b: &[u8]) -> u64 {
    let n = b.len();
    let u32_at = |i: usize| u64::from(u32::from_le_bytes(b[i..i + 4].try_into().expect("4")));
    match n {
        8 => u64::from_le_bytes(b.try_into().expect("8 bytes")),
        4..=7 => u32_at(0) | u32_at(n - 4) << (8 * (n - 4)),
        1..=3 => {
            u64::from(b[0])
                | u64::from(b[n / 2]) << (8 * (n / 2))
                | u64::from(b[n - 1]) << (8 * (n - 1))
        }
        _ => 0,
    }
}

/// A key of 9 to 16 bytes.
struct Mid<V> {
    words: [u64; 2],
    len: u8,
    value: V,
}

/// Distinct keys with their folded values.
pub(crate) struct CombineTable<V> {
    /// Keys of up to 8 bytes whose last byte is not zero (and the empty key), zero-padded.
    tiny: HashTable<(u64, V)>,
    mid: HashTable<Mid<V>>,
    long: HashTable<(Box<[u8]>, V)>,
}

/// A key of up to 16 bytes, none of them zero, as two little-endian `u64`s padded with zeros
/// (what a tokeniser's words are: see [`crate::builtin::wordcount::Word`]). Without zero
/// bytes the padding is unambiguous, and the key has up to 8 bytes exactly when its second
/// word is zero: the table needs neither its bytes nor its length to find it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ShortKey {
    words: [u64; 2],
    len: u8,
}

impl ShortKey {
    /// The key of `len` bytes padded as `words`; `len` is at most 16, and the words' first
    /// `len` bytes are its bytes, none zero, and the rest zero.
    #[inline(always)]
    pub(crate) fn new(words: [u64; 2], len: usize) -> Self {
        let key = ShortKey {
            words,
            len: len as u8,
        };
        debug_assert!(
            len <= 16 && {
                let b = key.padded_bytes();
                !b[..len].contains(&0) && b[len..].iter().all(|&x| x == 0)
            },
            "not a short key without zero bytes: {words:x?}, {len} bytes"
        );
        key
    }

    /// The key's bytes, then zeros up to 16.
    #[inline(always)]
    pub(crate) fn padded_bytes(&self) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&self.words[0].to_le_bytes());
        b[8..].copy_from_slice(&self.words[1].to_le_bytes());
        b
    }

    /// How many bytes the key has.
    #[inline(always)]
    pub(crate) fn len(&self) -> usize {
        usize::from(self.len)
    }
}

/// What [`CombineTable::upsert`] did.
pub(crate) enum Upsert<V> {
    /// The key was present; its value was folded.
    Found,
    /// The key is new; the caller inserts it (see [`CombineTable::insert`]).
    Vacant(V),
}

/// A key classified by length, with its hash.
enum Probe<'a> {
    Tiny(u64),
    Mid([u64; 2], u8),
    Long(&'a [u8]),
}

impl<'a> Probe<'a> {
    #[inline(always)]
    fn new(key: &'a [u8]) -> (Self, u64) {
        let len = key.len();
        if len > 16 {
            return (Probe::Long(key), xxh3_64(key));
        }
        let head = len.min(8);
        Self::padded(len, [word(&key[..head]), word(&key[head..])])
    }

    /// The probe of a key of up to 16 bytes given as two little-endian `u64`s, zero-padded.
    #[inline(always)]
    fn padded(len: usize, w: [u64; 2]) -> (Self, u64) {
        // A key of up to 8 bytes has `w[1] == 0`; its padding is unambiguous unless it ends
        // in zero bytes (a tokeniser's words never do).
        if len == significant_bytes(w[0]) {
            (Probe::Tiny(w[0]), hash1(w[0]))
        } else {
            (Probe::Mid(w, len as u8), hash2(len, w))
        }
    }
}

impl<V> CombineTable<V> {
    pub(crate) fn new() -> Self {
        CombineTable {
            tiny: HashTable::new(),
            mid: HashTable::new(),
            long: HashTable::new(),
        }
    }

    /// Folds `value` into the key's value with `combine`, or hands it back if the key is new.
    #[inline(always)]
    pub(crate) fn upsert(
        &mut self,
        key: &[u8],
        value: V,
        combine: impl FnOnce(&mut V, V),
    ) -> Upsert<V> {
        let (probe, hash) = Probe::new(key);
        self.fold(probe, hash, value, combine)
    }

    /// [`Self::upsert`] of a key the caller has as padded words: the key's bytes are not read
    /// again, and its place is found without its length (about 2% of a word count).
    #[inline(always)]
    pub(crate) fn upsert_short(
        &mut self,
        key: ShortKey,
        value: V,
        combine: impl FnOnce(&mut V, V),
    ) -> Upsert<V> {
        let w = key.words;
        let (probe, hash) = if w[1] == 0 {
            (Probe::Tiny(w[0]), hash1(w[0]))
        } else {
            (Probe::Mid(w, key.len), hash2(key.len(), w))
        };
        debug_assert_eq!(hash, Probe::new(&key.padded_bytes()[..key.len()]).1);
        self.fold(probe, hash, value, combine)
    }

    #[inline(always)]
    fn fold(
        &mut self,
        probe: Probe<'_>,
        hash: u64,
        value: V,
        combine: impl FnOnce(&mut V, V),
    ) -> Upsert<V> {
        let slot = match probe {
            Probe::Tiny(w) => self.tiny.find_mut(hash, |e| e.0 == w).map(|e| &mut e.1),
            Probe::Mid(w, len) => self
                .mid
                .find_mut(hash, |e| e.words == w && e.len == len)
                .map(|e| &mut e.value),
            Probe::Long(k) => self.long.find_mut(hash, |e| *e.0 == *k).map(|e| &mut e.1),
        };
        match slot {
            Some(v) => {
                combine(v, value);
                Upsert::Found
            }
            None => Upsert::Vacant(value),
        }
    }

    /// Inserts a key known to be absent; returns the bytes its entry takes (for the task's
    /// memory accounting).
    pub(crate) fn insert(&mut self, key: &[u8], value: V) -> usize {
        let (probe, hash) = Probe::new(key);
        match probe {
            Probe::Tiny(w) => {
                self.tiny.insert_unique(hash, (w, value), |e| hash1(e.0));
                std::mem::size_of::<(u64, V)>()
            }
            Probe::Mid(words, len) => {
                self.mid
                    .insert_unique(hash, Mid { words, len, value }, |e| {
                        hash2(usize::from(e.len), e.words)
                    });
                std::mem::size_of::<Mid<V>>()
            }
            Probe::Long(k) => {
                self.long
                    .insert_unique(hash, (k.into(), value), |e| xxh3_64(&e.0));
                std::mem::size_of::<(Box<[u8]>, V)>() + k.len()
            }
        }
    }

    /// Takes every entry, sorted by partition then key; `partition` gives a key's partition.
    pub(crate) fn drain_sorted(&mut self, partition: impl Fn(&[u8]) -> u32) -> Drained<V> {
        let long_bytes: usize = self.long.iter().map(|(k, _)| k.len()).sum();
        let mut d = Drained {
            bytes: Vec::with_capacity(8 * self.tiny.len() + 16 * self.mid.len() + long_bytes),
            entries: Vec::with_capacity(self.tiny.len() + self.mid.len() + self.long.len()),
        };
        for (w, value) in self.tiny.drain() {
            d.push(&w.to_le_bytes()[..significant_bytes(w)], value, &partition);
        }
        for e in self.mid.drain() {
            let mut b = [0u8; 16];
            b[..8].copy_from_slice(&e.words[0].to_le_bytes());
            b[8..].copy_from_slice(&e.words[1].to_le_bytes());
            d.push(&b[..usize::from(e.len)], e.value, &partition);
        }
        for (k, value) in self.long.drain() {
            d.push(&k, value, &partition);
        }
        let bytes = &d.bytes;
        d.entries.sort_unstable_by(|a, b| {
            (a.partition, a.prefix)
                .cmp(&(b.partition, b.prefix))
                .then_with(|| a.key(bytes).cmp(b.key(bytes)))
        });
        d
    }
}

/// The entries of a drained [`CombineTable`], sorted by partition then key. The keys' bytes
/// lie back to back in one buffer (no allocation per key), and each entry carries its key's
/// first eight bytes as a big-endian integer, which orders most pairs of keys without
/// comparing their bytes (a map's finish spent most of its time allocating keys and in
/// `memcmp` before).
pub(crate) struct Drained<V> {
    bytes: Vec<u8>,
    entries: Vec<DrainedEntry<V>>,
}

struct DrainedEntry<V> {
    partition: u32,
    prefix: u64,
    at: usize,
    len: usize,
    value: V,
}

impl<V> DrainedEntry<V> {
    fn key<'a>(&self, bytes: &'a [u8]) -> &'a [u8] {
        &bytes[self.at..self.at + self.len]
    }
}

impl<V> Drained<V> {
    fn push(&mut self, key: &[u8], value: V, partition: &impl Fn(&[u8]) -> u32) {
        self.entries.push(DrainedEntry {
            partition: partition(key),
            prefix: super::merge::prefix(key),
            at: self.bytes.len(),
            len: key.len(),
            value,
        });
        self.bytes.extend_from_slice(key);
    }

    /// The entries as (partition, key, value), in order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (u32, &[u8], &V)> {
        self.entries
            .iter()
            .map(|e| (e.partition, e.key(&self.bytes), &e.value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        // Bytes mostly 0 and 1: keys that share their first eight bytes, or differ only in
        // trailing zeros, are common.
        fn behaves_like_a_map_of_sums(keys in proptest::collection::vec(proptest::collection::vec(prop_oneof![Just(0u8), Just(1), any::<u8>()], 0..24), 0..200)) {
            let mut t = CombineTable::new();
            let mut m = std::collections::BTreeMap::new();
            for k in &keys {
                *m.entry(k.clone()).or_insert(0u64) += 1;
                if let Upsert::Vacant(v) = t.upsert(k, 1u64, |a, b| *a += b) {
                    t.insert(k, v);
                }
            }
            let mut expected: Vec<(u32, Vec<u8>, u64)> =
                m.into_iter().map(|(k, v)| (k.len() as u32 % 3, k, v)).collect();
            expected.sort();
            let drained = t.drain_sorted(|k| k.len() as u32 % 3);
            let got: Vec<(u32, Vec<u8>, u64)> =
                drained.iter().map(|(p, k, v)| (p, k.to_vec(), *v)).collect();
            prop_assert_eq!(got, expected);
        }
    }

    proptest! {
        #[test]
        // Keys without zero bytes, folded by their padded words or by their bytes in turn:
        // both find the same entry.
        fn short_keys_find_what_their_bytes_find(keys in proptest::collection::vec((proptest::collection::vec(prop_oneof![Just(1u8), Just(2), 1..=255u8], 0..=16), any::<bool>()), 0..200)) {
            let mut t = CombineTable::new();
            let mut m = std::collections::BTreeMap::new();
            for (k, by_words) in &keys {
                *m.entry(k.clone()).or_insert(0u64) += 1;
                let folded = if *by_words {
                    let mut b = [0u8; 16];
                    b[..k.len()].copy_from_slice(k);
                    let words = [
                        u64::from_le_bytes(b[..8].try_into().unwrap()),
                        u64::from_le_bytes(b[8..].try_into().unwrap()),
                    ];
                    t.upsert_short(ShortKey::new(words, k.len()), 1u64, |a, b| *a += b)
                } else {
                    t.upsert(k, 1u64, |a, b| *a += b)
                };
                if let Upsert::Vacant(v) = folded {
                    t.insert(k, v);
                }
            }
            let got: Vec<(Vec<u8>, u64)> =
                t.drain_sorted(|_| 0).iter().map(|(_, k, v)| (k.to_vec(), *v)).collect();
            prop_assert_eq!(got, m.into_iter().collect::<Vec<_>>());
        }
    }

    #[test]
    fn short_keys_read_as_zero_padded_words() {
        let bytes: Vec<u8> = (1..=8).collect();
        for n in 0..=8 {
            let mut padded = [0u8; 8];
            padded[..n].copy_from_slice(&bytes[..n]);
            assert_eq!(word(&bytes[..n]), u64::from_le_bytes(padded), "{n} bytes");
        }
    }

    #[test]
    fn keys_differing_only_in_trailing_zeros_stay_apart() {
        let mut t = CombineTable::new();
        let keys: [&[u8]; 11] = [
            b"",
            b"\0",
            b"\0\0",
            b"a",
            b"a\0",
            b"\0\0\0\0\0\0\0",
            b"\0\0\0\0\0\0\0\0",
            b"\0\0\0\0\0\0\0\0\0",
            b"abcdefgh\0",
            b"abcdefgh",
            &[0; 17],
        ];
        for k in keys {
            assert!(matches!(
                t.upsert(k, 1u64, |a, b| *a += b),
                Upsert::Vacant(_)
            ));
            t.insert(k, 1);
        }
        for k in keys {
            assert!(matches!(t.upsert(k, 1u64, |a, b| *a += b), Upsert::Found));
        }
        let drained = t.drain_sorted(|_| 0);
        assert_eq!(drained.iter().count(), 11);
        assert!(drained.iter().all(|(_, _, n)| *n == 2));
    }
}
