//! `identity`: every input record comes out once, unchanged, so a checker can count lost and
//! duplicated records by id (the fault suite's job; `quern gen records` writes its input).
//!
//! A record is a line `ID<TAB>PAYLOAD` (a line without a tab is all id). The map emits
//! (id, payload); the reduce writes one `ID<TAB>PAYLOAD` line per value, so a record that
//! arrived twice is visible as two lines. With `panic_on=ID|ID...` the map panics on those
//! ids: the poison records of the fault suite.

use crate::registry::{check_params, DynJob, JobError, JobInfo, Params};
use crate::sdk::{Job, MapContext, ReduceContext, Values};

/// The `identity` job.
pub struct Identity {
    panic_on: Vec<Vec<u8>>,
}

/// Registration of [`Identity`].
pub const IDENTITY: JobInfo = JobInfo {
    name: "identity",
    about: "writes every ID<TAB>PAYLOAD record back once, sorted by id (fault-suite job)",
    make: |p: &Params| -> Result<Box<dyn DynJob>, JobError> {
        check_params("identity", p, &["panic_on"])?;
        let panic_on = p
            .get("panic_on")
            .map(|v| v.split('|').map(|s| s.as_bytes().to_vec()).collect())
            .unwrap_or_default();
        Ok(Box::new(Identity { panic_on }))
    },
};

impl Job for Identity {
    type Key = Vec<u8>;
    type Value = Vec<u8>;

    fn map(&mut self, record: &[u8], ctx: &mut MapContext<'_, Self>) {
        let (id, payload) = match memchr::memchr(b'\t', record) {
            Some(i) => (&record[..i], &record[i + 1..]),
            None => (record, &[][..]),
        };
        if self.panic_on.iter().any(|p| p.as_slice() == id) {
            panic!("poison record {:?}", String::from_utf8_lossy(id));
        }
        ctx.emit_encoded(id, payload.to_vec());
    }

    fn reduce(&self, id: Vec<u8>, payloads: Values<'_, Vec<u8>>, out: &mut ReduceContext<'_>) {
        for payload in payloads {
            let buf = out.buffer();
            buf.extend_from_slice(&id);
            buf.push(b'\t');
            buf.extend_from_slice(&payload);
            out.end_line();
        }
    }
}

#[cfg(test)]
mod tests {
    use protocol::JobSpec;

    use crate::local::run_local;
    use crate::Registry;

    #[test]
    fn every_record_comes_back_once_sorted_by_id() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("in.tsv");
        std::fs::write(&input, "r2\tb\nr1\ta\nr3\n").unwrap();
        let out = dir.path().join("out");
        let mut spec = JobSpec::new(
            "identity",
            vec![input.display().to_string()],
            out.display().to_string(),
        );
        spec.reducers = 1;
        run_local(
            &Registry::builtin(),
            &spec,
            &dir.path().join("work"),
            &mut |_| {},
        )
        .unwrap();
        let part = std::fs::read_to_string(out.join("part-00000")).unwrap();
        assert_eq!(part, "r1\ta\nr2\tb\nr3\t\n");
    }
}
