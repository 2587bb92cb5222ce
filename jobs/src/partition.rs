//! The stable partitioner: which reducer gets a key.
//!
//! It must give the same answer on every machine, process and build, so it hashes the key's
//! encoded bytes with XXH3-64 (a specified algorithm with a fixed seed), never with a
//! per-process seeded hasher such as std's `RandomState`.

use std::hash::{BuildHasher, Hasher};

use xxhash_rust::xxh3::xxh3_64;

/// Returns the partition in `0..partitions` for an encoded key.
pub fn stable_partition(key: &[u8], partitions: u32) -> u32 {
    if partitions <= 1 {
        return 0;
    }
    // Multiply-shift maps the 64-bit hash onto 0..partitions without modulo bias.
    ((u128::from(xxh3_64(key)) * u128::from(partitions)) >> 64) as u32
}

/// How a job's map tasks assign keys to reducers, decided once per task after
/// [`crate::Job::setup`] (so it may use what setup derived, such as sampled boundaries).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Partitioner {
    /// [`stable_partition`]: the stable hash of the encoded key (the default).
    #[default]
    Hash,
    /// Ranges of encoded keys, for a total order across reducers (a sort): `bounds` holds the
    /// `partitions - 1` lowest keys of partitions 1 and up, increasing; a key goes to the number
    /// of bounds at or below it.
    Ranges(Vec<Vec<u8>>),
}

impl Partitioner {
    /// Returns the partition in `0..partitions` for an encoded key.
    #[inline]
    pub fn partition(&self, key: &[u8], partitions: u32) -> u32 {
        match self {
            Partitioner::Hash => stable_partition(key, partitions),
            Partitioner::Ranges(bounds) => (bounds.partition_point(|b| b.as_slice() <= key) as u32)
                .min(partitions.saturating_sub(1)),
        }
    }
}

/// A fast hasher for in-memory tables of byte keys (map-side combining). Not used for
/// partitioning, so it need not be stable; it is, though, since it has no seed.
#[derive(Clone, Copy, Default, Debug)]
pub struct FastHash;

impl BuildHasher for FastHash {
    type Hasher = FastHasher;

    fn build_hasher(&self) -> FastHasher {
        FastHasher(0)
    }
}

/// The hasher of [`FastHash`].
#[derive(Debug)]
pub struct FastHasher(u64);

/// Returns the xor of the high and low halves of the 128-bit product: a cheap mixer in which
/// every input bit affects every output bit.
#[inline]
pub fn fold_mul(a: u64, b: u64) -> u64 {
    let m = u128::from(a) * u128::from(b);
    (m as u64) ^ ((m >> 64) as u64)
}

impl Hasher for FastHasher {
    fn write(&mut self, bytes: &[u8]) {
        self.write_u64(xxh3_64(bytes));
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = fold_mul(self.0 ^ n, 0x9E37_79B9_7F4A_7C15);
    }

    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }

    fn finish(&self) -> u64 {
        fold_mul(self.0, 0xa409_3822_299f_31d0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn partitions_are_pinned_across_builds() {
        // Pinned values: if these change, data written by an older build would be
        // partitioned differently, so this must never change.
        let got: Vec<u32> = ["", "a", "photo", "u123", "zebra"]
            .iter()
            .map(|k| stable_partition(k.as_bytes(), 7))
            .collect();
        assert_eq!(got, PINNED);
    }

    const PINNED: [u32; 5] = [1, 6, 5, 6, 3];

    proptest! {
        #[test]
        fn every_key_reaches_exactly_one_reducer_in_range(key: Vec<u8>, n in 1u32..64) {
            let p = stable_partition(&key, n);
            prop_assert!(p < n);
            prop_assert_eq!(p, stable_partition(&key, n));
        }
    }

    #[test]
    fn keys_spread_over_partitions() {
        let mut counts = [0u32; 7];
        for i in 0..7000u32 {
            counts[stable_partition(&i.to_be_bytes(), 7) as usize] += 1;
        }
        assert!(counts.iter().all(|&c| c > 800), "{counts:?}");
    }
}
