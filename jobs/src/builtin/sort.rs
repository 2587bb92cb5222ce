//! `sort`: a total-order sort of line records by their first 10 bytes (the TeraSort layout:
//! 100-byte records, 98 bytes and `\r\n`, as `gensort -a` and `quern gen sort-records` write
//! them). Records are written back exactly as read, terminators included, so the output holds
//! the input's bytes in sorted order (a last input line without a terminator gets a `\n`, so
//! records stay apart). A range partitioner built from a sample of the input's keys sends each
//! key range to one reducer, so the part files, concatenated in order, are one sorted output.
//! Records of equal keys keep their input order (map order, then offset). Lines shorter than
//! the key are counted in `malformed_records` and not written.
//!
//! Parameter `sample` (default 10000): how many records every task samples to place the
//! partition boundaries. All tasks sample the same records, so they agree on the boundaries.

use crate::registry::{check_params, int_param, DynJob, JobError, JobInfo, Params};
use crate::sdk::{HookError, Job, MapContext, Partitioner, ReduceContext, TaskSetup, Values};

/// Bytes of a record's key.
pub const KEY_BYTES: usize = 10;

/// The `sort` job.
pub struct Sort {
    sample: usize,
    /// Keys splitting the key space into `partitions` ranges: partition i holds keys in
    /// `[bounds[i-1], bounds[i])`.
    bounds: Vec<Vec<u8>>,
}

/// Registration of [`Sort`].
pub const SORT: JobInfo = JobInfo {
    name: "sort",
    about: "total-order sort of 100-byte records by their 10-byte key (range partitioner)",
    make: |p: &Params| -> Result<Box<dyn DynJob>, JobError> {
        check_params("sort", p, &["sample"])?;
        let sample = int_param("sort", p, "sample", 10_000, 1, 1_000_000)? as usize;
        Ok(Box::new(Sort {
            sample,
            bounds: Vec::new(),
        }))
    },
};

/// Picks `partitions - 1` boundaries at the quantiles of the sampled keys.
pub fn boundaries(mut keys: Vec<Vec<u8>>, partitions: u32) -> Vec<Vec<u8>> {
    keys.sort_unstable();
    if keys.is_empty() {
        return Vec::new();
    }
    (1..partitions as usize)
        .map(|i| keys[i * keys.len() / partitions as usize].clone())
        .collect()
}

impl Job for Sort {
    type Key = [u8; KEY_BYTES];
    // Bytes, not `Vec<u8>`: serde encodes a `Vec<u8>` as a sequence, one call per byte each
    // way (a fifth of the sort's time went there); as bytes it is a length and one copy, with
    // the same encoding on the wire.
    type Value = serde_bytes::ByteBuf;
    const INPUT: crate::InputFormat = crate::InputFormat::RawLines;

    fn setup(&mut self, task: &TaskSetup<'_>) -> Result<(), HookError> {
        let keys = task
            .sample_records(self.sample)?
            .into_iter()
            .filter(|r| r.len() >= KEY_BYTES)
            .map(|r| r[..KEY_BYTES].to_vec())
            .collect();
        self.bounds = boundaries(keys, task.partitions);
        Ok(())
    }

    fn map(&mut self, record: &[u8], ctx: &mut MapContext<'_, Self>) {
        let body = record.strip_suffix(b"\n").unwrap_or(record);
        if body.strip_suffix(b"\r").unwrap_or(body).len() < KEY_BYTES {
            ctx.count("malformed_records", 1);
            return;
        }
        ctx.emit_borrowed(
            &record[..KEY_BYTES],
            serde_bytes::Bytes::new(&record[KEY_BYTES..]),
        );
    }

    fn partitioner(&self) -> Partitioner {
        Partitioner::Ranges(self.bounds.clone())
    }

    fn reduce(
        &self,
        key: [u8; KEY_BYTES],
        rest: Values<'_, serde_bytes::ByteBuf>,
        out: &mut ReduceContext<'_>,
    ) {
        rest.for_each_borrowed(|r: &serde_bytes::Bytes| {
            let buf = out.buffer();
            buf.extend_from_slice(&key);
            buf.extend_from_slice(r);
            if r.last() != Some(&b'\n') {
                buf.push(b'\n');
            }
            out.end_record();
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boundaries_split_the_sample_evenly_and_partitions_follow_them() {
        let keys: Vec<Vec<u8>> = (0..100u8).rev().map(|k| vec![k]).collect();
        let b = boundaries(keys, 4);
        assert_eq!(b, vec![vec![25], vec![50], vec![75]]);
        let s = Sort {
            sample: 0,
            bounds: b,
        };
        let p = |k: u8| s.partitioner().partition(&[k], 4);
        assert_eq!(
            (p(0), p(24), p(25), p(49), p(50), p(99)),
            (0, 0, 1, 1, 2, 3)
        );
        assert_eq!(
            Sort {
                sample: 0,
                bounds: vec![]
            }
            .partitioner()
            .partition(&[9], 4),
            0
        );
    }
}
