//! The coordinator's journal: an append-only, checksummed log of job and task state, so that
//! after a crash (even `kill -9`) a restarted coordinator resumes running jobs without
//! re-running tasks that completed.
//!
//! One record per line: `crc32-hex SPACE json NEWLINE`, synced to disk before the change it
//! records is acknowledged. Replay reads records until the first line that is torn or fails
//! its checksum (the tail a crash can leave), and truncates the file there.
//!
//! What is journaled: a job's spec and plan when it is accepted; each map's winning attempt
//! (its output stays on the worker's disk); each reduce's winning attempt once its part file
//! is renamed into place; the start of a job's publication; and its end; schedules, the
//! logical times they skipped, and backfills (a job started by a schedule carries its origin
//! in its `Submitted` record). Running attempts are not: after a restart they are simply run
//! again.
//!
//! Compaction ([`compact`]) keeps the journal in proportion to what the coordinator
//! remembers rather than to everything it ever ran: a job forgotten beyond `--keep-jobs`
//! keeps three short lines (its submission without its splits, its end, its forgetting:
//! they hold its id, and for a schedule's job the logical time it ran), and its tasks' lines
//! go. The journal is compacted when opened and, by its writer, each time it has grown by
//! `--journal-compact-after` bytes and by its own size at the last compaction (so each byte
//! is read a bounded number of times): written whole to a new file, synced, and renamed over the
//! old one, so a crash leaves the old journal or the new one, never a mix.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use jobs::output::PartInfo;
use jobs::plan::PlannedSplit;
use jobs::sdk::Counters;
use protocol::{AttemptId, JobId, JobSpec};
use serde::{Deserialize, Serialize};

use crate::schedule::ScheduleSpec;
use crate::state::{Backfill, Origin, Skip};

/// One journaled fact.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Record {
    /// A job was accepted with this plan.
    Submitted {
        /// The job.
        job: JobId,
        /// Its spec.
        spec: JobSpec,
        /// Its map splits.
        splits: Vec<PlannedSplit>,
        /// What its output will cover (empty in journals from before coverage was kept).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        coverage: Vec<jobs::coverage::CoveredFile>,
        /// The input entries not read for their names (empty in journals from before).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        not_read: Vec<jobs::output::NotRead>,
        /// The schedule or backfill that started it (this record is what makes a logical time
        /// count as run).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        origin: Option<Origin>,
        /// When (ms since the Unix epoch; 0 in journals from before it was kept).
        #[serde(default)]
        at_ms: u64,
    },
    /// A map's attempt won; its output is on the worker that ran it.
    MapDone {
        /// The job.
        job: JobId,
        /// The map.
        index: u32,
        /// The winning attempt.
        attempt: AttemptId,
        /// Its counters.
        counters: Counters,
        /// Whether it ran data-local.
        local: bool,
    },
    /// A finished job was dropped from the history (beyond the retention).
    Forgotten {
        /// The job.
        job: JobId,
    },
    /// Records a winning map attempt listed as skipped (for the job's skip file).
    Listed {
        /// The job.
        job: JobId,
        /// The records.
        records: Vec<jobs::output::SkippedRecord>,
    },
    /// A map's output was lost (its worker died or a fetch failed): it must run again.
    MapLost {
        /// The job.
        job: JobId,
        /// The map.
        index: u32,
    },
    /// A reduce's part file was committed.
    ReduceDone {
        /// The job.
        job: JobId,
        /// The reduce.
        index: u32,
        /// The winning attempt.
        attempt: AttemptId,
        /// Its counters.
        counters: Counters,
        /// The committed part file.
        part: PartInfo,
        /// The committed state file, for a job that keeps state.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        state: Option<PartInfo>,
    },
    /// Every reduce committed; the manifest and `_SUCCESS` are being written.
    Publishing {
        /// The job.
        job: JobId,
    },
    /// The job ended.
    Ended {
        /// The job.
        job: JobId,
        /// Succeeded, failed or killed (journaled by name: `succeeded`, ...).
        state: protocol::JobState,
        /// Why it failed or was killed.
        error: Option<String>,
        /// When (ms since the Unix epoch; 0 in journals from before it was kept).
        #[serde(default)]
        at_ms: u64,
    },
    /// A schedule was added.
    ScheduleAdded {
        /// Its definition (with its start filled in).
        spec: ScheduleSpec,
    },
    /// A schedule's definition was changed in place (its history and cursor stay).
    ScheduleUpdated {
        /// Its new definition (with its start filled in).
        spec: ScheduleSpec,
    },
    /// A schedule was removed.
    ScheduleRemoved {
        /// Its name.
        name: String,
    },
    /// A schedule was paused or resumed.
    SchedulePaused {
        /// Its name.
        name: String,
        /// Paused (true) or resumed.
        paused: bool,
    },
    /// Logical times of a schedule that started no job: skipped, or failed to start.
    ScheduleSkipped {
        /// The schedule.
        name: String,
        /// The times and why.
        skip: Skip,
    },
    /// A schedule's webhook was told that a logical time failed for good.
    ScheduleNotified {
        /// The schedule.
        name: String,
        /// The logical time.
        logical: crate::schedule::Logical,
        /// How many times it had failed.
        failures: u32,
    },
    /// A backfill started.
    BackfillStarted {
        /// It, with the logical times it runs.
        backfill: Backfill,
    },
    /// A backfill was cancelled.
    BackfillCancelled {
        /// Its id.
        id: u64,
    },
}

/// Journal errors.
#[derive(Debug, thiserror::Error)]
#[error("journal i/o error on {}", .path.display())]
pub struct JournalError {
    path: PathBuf,
    #[source]
    source: std::io::Error,
}

/// The open journal.
#[derive(Debug)]
pub struct Journal {
    file: File,
    path: PathBuf,
    /// Bytes appended since the journal was last compacted.
    grown: u64,
    /// Its size when it was last compacted (or opened): it is compacted again once it grew
    /// by this much too, so a journal with little to drop is not read again every few
    /// megabytes (each byte is read a bounded number of times).
    base: u64,
    /// Compact after this many bytes were appended.
    compact_after: u64,
}

/// Bytes appended to a journal after which its writer compacts it, by default.
pub const DEFAULT_COMPACT_AFTER: u64 = 64 << 20;

/// The job a record is about, if it is about one.
fn job_of(r: &Record) -> Option<JobId> {
    match r {
        Record::Submitted { job, .. }
        | Record::MapDone { job, .. }
        | Record::Forgotten { job }
        | Record::Listed { job, .. }
        | Record::MapLost { job, .. }
        | Record::ReduceDone { job, .. }
        | Record::Publishing { job }
        | Record::Ended { job, .. } => Some(*job),
        _ => None,
    }
}

/// The records that replay to the same state as `records`, in the same order: of a forgotten
/// job only its submission (without its splits and coverage), its end and its forgetting
/// are kept; everything else is kept as it is.
pub fn compact(records: Vec<Record>) -> Vec<Record> {
    let forgotten: std::collections::HashSet<JobId> = records
        .iter()
        .filter_map(|r| match r {
            Record::Forgotten { job } => Some(*job),
            _ => None,
        })
        .collect();
    if forgotten.is_empty() {
        return records;
    }
    records
        .into_iter()
        .filter_map(|r| match job_of(&r) {
            Some(job) if forgotten.contains(&job) => match r {
                Record::Submitted {
                    job,
                    spec,
                    origin,
                    at_ms,
                    ..
                } => Some(Record::Submitted {
                    job,
                    spec,
                    splits: Vec::new(),
                    coverage: Vec::new(),
                    not_read: Vec::new(),
                    origin,
                    at_ms,
                }),
                r @ (Record::Ended { .. } | Record::Forgotten { .. }) => Some(r),
                _ => None,
            },
            _ => Some(r),
        })
        .collect()
}

fn encode(r: &Record) -> Vec<u8> {
    let json = serde_json::to_vec(r).expect("journal records serialise");
    let mut line = format!("{:08x} ", crc32fast::hash(&json)).into_bytes();
    line.extend_from_slice(&json);
    line.push(b'\n');
    line
}

fn decode(line: &[u8]) -> Option<Record> {
    let (crc, json) = (line.get(..8)?, line.get(9..)?);
    let crc = u32::from_str_radix(std::str::from_utf8(crc).ok()?, 16).ok()?;
    (crc32fast::hash(json) == crc)
        .then(|| serde_json::from_slice(json).ok())
        .flatten()
}

/// Reads the records of the journal at `path` up to the first torn or corrupt line; returns
/// them with the length of the file they fill.
fn read_records(path: &Path) -> std::io::Result<(Vec<Record>, u64)> {
    let mut records = Vec::new();
    let mut good_len = 0u64;
    if let Ok(f) = File::open(path) {
        let mut reader = BufReader::new(f);
        let mut line = Vec::new();
        loop {
            line.clear();
            let n = reader.read_until(b'\n', &mut line)?;
            if n == 0 || line.last() != Some(&b'\n') {
                break;
            }
            match decode(&line[..line.len() - 1]) {
                Some(r) => {
                    records.push(r);
                    good_len += n as u64;
                }
                None => break,
            }
        }
    }
    Ok((records, good_len))
}

impl Journal {
    /// Opens (or creates) the journal in `dir`, compacting it ([`compact`]), and returns it
    /// with the records it holds.
    ///
    /// # Errors
    /// [`JournalError`] if the file cannot be read, truncated, compacted or opened.
    pub fn open(dir: &Path) -> Result<(Journal, Vec<Record>), JournalError> {
        let path = dir.join("journal.log");
        let err = |source| JournalError {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(err)?;
        let (records, good_len) = read_records(&path).map_err(err)?;
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(err)?;
        if file.metadata().map_err(err)?.len() > good_len {
            tracing::warn!(path = %path.display(), kept = records.len(), "journal has a torn tail; truncating it");
            file.set_len(good_len).map_err(err)?;
        }
        let mut journal = Journal {
            file,
            path,
            grown: 0,
            base: good_len,
            compact_after: DEFAULT_COMPACT_AFTER,
        };
        let before = records.len();
        let records = compact(records);
        if records.len() < before {
            let compacted = journal.write_compacted(&records)?;
            journal.install(compacted)?;
        }
        Ok((journal, records))
    }

    /// Compact after this many bytes were appended (instead of [`DEFAULT_COMPACT_AFTER`]).
    pub fn set_compact_after(&mut self, bytes: u64) {
        self.compact_after = bytes.max(1);
    }

    /// Writes `records` to a new file beside the journal and syncs it; returns a handle that
    /// appends to it. The journal itself is untouched, so a failure here costs nothing.
    fn write_compacted(&self, records: &[Record]) -> Result<File, JournalError> {
        let err = |source| JournalError {
            path: self.path.clone(),
            source,
        };
        let tmp = self.path.with_extension("log.compacting");
        let mut f = File::create(&tmp).map_err(err)?;
        let mut w = std::io::BufWriter::new(&mut f);
        for r in records {
            w.write_all(&encode(r)).map_err(err)?;
        }
        w.flush().map_err(err)?;
        drop(w);
        f.sync_all().map_err(err)?;
        OpenOptions::new().append(true).open(&tmp).map_err(err)
    }

    /// Renames the file [`Journal::write_compacted`] wrote over the journal, syncs the
    /// directory, and appends to it from then on. An error here is the journal's failure: once
    /// the rename happened, appending to the old file would lose records.
    fn install(&mut self, compacted: File) -> Result<(), JournalError> {
        let err = |source| JournalError {
            path: self.path.clone(),
            source,
        };
        std::fs::rename(self.path.with_extension("log.compacting"), &self.path).map_err(err)?;
        self.file = compacted;
        if let Some(dir) = self.path.parent() {
            File::open(dir).and_then(|d| d.sync_all()).map_err(err)?;
        }
        self.grown = 0;
        self.base = self.file.metadata().map_err(err)?.len();
        Ok(())
    }

    /// Compacts the journal if it grew by the threshold since it last was (and compaction
    /// removes anything). A compaction that fails before the new file replaces the journal
    /// is logged and changes nothing (the journal is whole, only longer); one that fails
    /// while replacing it is the journal's failure.
    fn maybe_compact(&mut self) -> Result<(), JournalError> {
        if self.grown < self.compact_after.max(self.base) {
            return Ok(());
        }
        self.grown = 0;
        self.base = std::fs::metadata(&self.path).map_or(0, |m| m.len());
        let started = std::time::Instant::now();
        let prepared = read_records(&self.path)
            .map_err(|source| JournalError {
                path: self.path.clone(),
                source,
            })
            .and_then(|(records, _)| {
                let before = records.len();
                let records = compact(records);
                if records.len() == before {
                    return Ok((before, before, None));
                }
                Ok((before, records.len(), Some(self.write_compacted(&records)?)))
            });
        match prepared {
            Ok((before, after, Some(file))) => {
                self.install(file)?;
                tracing::info!(
                    before,
                    after,
                    ms = started.elapsed().as_millis() as u64,
                    "journal compacted"
                );
            }
            Ok((_, _, None)) => {}
            Err(e) => {
                tracing::warn!(error = %protocol::error_chain(&e), "journal not compacted; it stays whole and grows")
            }
        }
        Ok(())
    }
}

impl Journal {
    /// Appends records and syncs them to disk (and compacts the journal when it is due).
    ///
    /// # Errors
    /// [`JournalError`] if the write or sync fails, or a compaction failed while replacing
    /// the journal.
    pub fn append(&mut self, records: &[Record]) -> Result<(), JournalError> {
        if records.is_empty() {
            return Ok(());
        }
        let started = std::time::Instant::now();
        let buf: Vec<u8> = records.iter().flat_map(encode).collect();
        let err = |source| JournalError {
            path: self.path.clone(),
            source,
        };
        if protocol::failpoint::hit("journal.append") {
            return Err(err(std::io::Error::other("failpoint journal.append")));
        }
        self.file.write_all(&buf).map_err(err)?;
        self.file.sync_data().map_err(err)?;
        record_latency(started.elapsed().as_secs_f64());
        self.grown += buf.len() as u64;
        self.maybe_compact()
    }
}

/// The journal could not be written: the coordinator stops, and no change made since is
/// acknowledged. Cheap to clone, so every caller waiting on the failed write gets it.
#[derive(Clone, Debug, thiserror::Error)]
#[error("the coordinator cannot write its journal and is stopping: {0}")]
pub struct JournalDown(std::sync::Arc<str>);

/// Group commit of journal records, outside the state lock, by a writer thread of its own.
///
/// A change's records are queued, numbered, while the state lock is still held (so the queue
/// holds them in the order of the changes); the lock is then released and the caller waits
/// ([`GroupCommit::wait_durable`]) until everything queued up to its number is on disk. The writer thread writes and syncs whatever
/// is queued in one go, so the changes made during one `fdatasync` share the next, readers
/// of the state never wait for the disk, and the async runtime never blocks on it. The first
/// write that fails stops the coordinator: `stop` is cancelled and every later wait fails.
#[derive(Debug)]
pub struct GroupCommit {
    shared: std::sync::Arc<Shared>,
    writer: Option<std::thread::JoinHandle<()>>,
}

#[derive(Debug)]
struct Shared {
    queue: std::sync::Mutex<Queue>,
    /// Wakes the writer when records are queued (or the journal closes).
    queued: std::sync::Condvar,
    /// The number of the last record on disk; async waiters watch it.
    synced: tokio::sync::watch::Sender<u64>,
    down: std::sync::OnceLock<JournalDown>,
    stop: tokio_util::sync::CancellationToken,
}

#[derive(Debug, Default)]
struct Queue {
    records: Vec<Record>,
    /// The number of the last record queued.
    last: u64,
    /// The journal is being dropped: the writer finishes the queue and ends.
    closing: bool,
}

impl GroupCommit {
    /// Writes through `journal` on a thread of its own; cancels `stop` when a write fails.
    pub fn new(journal: Journal, stop: tokio_util::sync::CancellationToken) -> Self {
        let shared = std::sync::Arc::new(Shared {
            queue: Default::default(),
            queued: std::sync::Condvar::new(),
            synced: tokio::sync::watch::Sender::new(0),
            down: std::sync::OnceLock::new(),
            stop,
        });
        let writer = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("journal".into())
                .spawn(move || shared.write_loop(journal))
                .expect("starting the journal writer thread")
        };
        GroupCommit {
            shared,
            writer: Some(writer),
        }
    }

    /// Cancelled when a write fails.
    pub fn stop_token(&self) -> tokio_util::sync::CancellationToken {
        self.shared.stop.clone()
    }

    /// The failure that stopped the journal, if one did.
    pub fn down(&self) -> Option<&JournalDown> {
        self.shared.down.get()
    }

    /// Queues `records` (call with the state lock held); returns the number to wait for.
    pub fn queue(&self, records: Vec<Record>) -> u64 {
        let mut q = self
            .shared
            .queue
            .lock()
            .expect("journal queue lock poisoned");
        q.last += records.len() as u64;
        if !records.is_empty() {
            q.records.extend(records);
            self.shared.queued.notify_one();
        }
        q.last
    }

    /// Returns once every record up to number `upto` is on disk, without blocking the async
    /// runtime.
    ///
    /// # Errors
    /// [`JournalDown`] if a write failed (this one or an earlier one).
    pub async fn wait_durable(&self, upto: u64) -> Result<(), JournalDown> {
        let mut rx = self.shared.synced.subscribe();
        // The sender lives as long as `shared`, so the wait ends only when a condition holds.
        let _ = rx
            .wait_for(|synced| *synced >= upto || self.shared.down.get().is_some())
            .await;
        match self.shared.down.get() {
            Some(down) => Err(down.clone()),
            None => Ok(()),
        }
    }
}

impl Shared {
    /// The writer thread: writes and syncs what is queued, until the journal closes or a
    /// write fails.
    fn write_loop(&self, mut journal: Journal) {
        loop {
            let (records, last) = {
                let mut q = self.queue.lock().expect("journal queue lock poisoned");
                while q.records.is_empty() && !q.closing {
                    q = self.queued.wait(q).expect("journal queue lock poisoned");
                }
                if q.records.is_empty() {
                    return;
                }
                (std::mem::take(&mut q.records), q.last)
            };
            if let Err(e) = journal.append(&records) {
                // Without its journal the coordinator cannot keep its promises after a crash.
                let text = protocol::error_chain(&e);
                tracing::error!(error = %text, "cannot write the journal; stopping");
                let _ = self.down.set(JournalDown(text.into()));
                self.stop.cancel();
                // Wakes the waiters, who find the journal down.
                self.synced.send_modify(|_| {});
                return;
            }
            self.synced.send_replace(last);
        }
    }
}

impl Drop for GroupCommit {
    fn drop(&mut self) {
        self.shared
            .queue
            .lock()
            .expect("journal queue lock poisoned")
            .closing = true;
        self.shared.queued.notify_one();
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ended(n: u64) -> Record {
        Record::Ended {
            job: JobId(n),
            state: protocol::JobState::Succeeded,
            error: None,
            at_ms: 1_764_806_400_000 + n,
        }
    }

    #[test]
    fn records_survive_reopening_and_a_torn_tail_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let (mut j, r) = Journal::open(dir.path()).unwrap();
        assert!(r.is_empty());
        j.append(&[ended(1), ended(2)]).unwrap();
        drop(j);
        // A crash mid-append leaves half a line.
        let mut f = OpenOptions::new()
            .append(true)
            .open(dir.path().join("journal.log"))
            .unwrap();
        f.write_all(&encode(&ended(3))[..20]).unwrap();
        drop(f);
        let (mut j, r) = Journal::open(dir.path()).unwrap();
        assert_eq!(r, vec![ended(1), ended(2)]);
        j.append(&[ended(4)]).unwrap();
        let (_, r) = Journal::open(dir.path()).unwrap();
        assert_eq!(r, vec![ended(1), ended(2), ended(4)]);
    }

    /// A job's records: submitted with `maps` splits, each map won, one reduce committed, ended.
    fn job_records(n: u64, maps: u32) -> Vec<Record> {
        let split = |i: u32| PlannedSplit {
            split: jobs::split::Split::range(format!("/in/{n}"), u64::from(i), u64::from(i) + 1),
            file_len: 100,
            hosts: Vec::new(),
            state: false,
        };
        let mut out = vec![Record::Submitted {
            job: JobId(n),
            spec: JobSpec::new("views", vec![format!("/in/{n}")], format!("/out/{n}")),
            splits: (0..maps).map(split).collect(),
            coverage: Vec::new(),
            not_read: Vec::new(),
            origin: None,
            at_ms: 5,
        }];
        for index in 0..maps {
            out.push(Record::MapDone {
                job: JobId(n),
                index,
                attempt: AttemptId(u64::from(index) + 1),
                counters: Counters::default(),
                local: true,
            });
        }
        out.push(Record::MapLost {
            job: JobId(n),
            index: 0,
        });
        out.push(Record::Publishing { job: JobId(n) });
        out.push(ended(n));
        out
    }

    #[test]
    fn compaction_keeps_three_lines_of_a_forgotten_job_and_everything_else() {
        let mut records = job_records(1, 50);
        records.extend(job_records(2, 3));
        records.push(Record::Forgotten { job: JobId(1) });
        records.extend(job_records(3, 2));
        let kept = compact(records.clone());
        let of = |rs: &[Record], n: u64| -> Vec<Record> {
            rs.iter()
                .filter(|r| job_of(r) == Some(JobId(n)))
                .cloned()
                .collect()
        };
        let one = of(&kept, 1);
        assert_eq!(one.len(), 3, "{one:?}");
        assert!(
            matches!(&one[0], Record::Submitted { splits, spec, at_ms: 5, .. } if splits.is_empty() && spec.output == "/out/1")
        );
        assert_eq!(one[1], ended(1));
        assert_eq!(one[2], Record::Forgotten { job: JobId(1) });
        assert_eq!(of(&kept, 2), of(&records, 2));
        assert_eq!(of(&kept, 3), of(&records, 3));
        assert_eq!(
            compact(kept.clone()),
            kept,
            "compacting twice changes nothing"
        );

        // The writer compacts once the journal grew by the threshold; reopening finds the
        // compacted journal, and a journal is compacted when opened too.
        let dir = tempfile::tempdir().unwrap();
        let (mut j, _) = Journal::open(dir.path()).unwrap();
        j.set_compact_after(1 << 30);
        j.append(&records).unwrap();
        let long = std::fs::metadata(dir.path().join("journal.log"))
            .unwrap()
            .len();
        j.set_compact_after(1);
        j.append(&[ended(9)]).unwrap();
        let short = std::fs::metadata(dir.path().join("journal.log"))
            .unwrap()
            .len();
        assert!(short * 3 < long, "{short} of {long} bytes");
        drop(j);
        let (_, r) = Journal::open(dir.path()).unwrap();
        let mut want = kept.clone();
        want.push(ended(9));
        assert_eq!(r, want);
        assert!(!dir.path().join("journal.log.compacting").exists());
        let dir = tempfile::tempdir().unwrap();
        let (mut j, _) = Journal::open(dir.path()).unwrap();
        j.set_compact_after(1 << 30);
        j.append(&records).unwrap();
        drop(j);
        let (_, r) = Journal::open(dir.path()).unwrap();
        assert_eq!(r, kept);
    }

    #[test]
    fn group_commit_writes_queued_changes_in_order_and_once() {
        let dir = tempfile::tempdir().unwrap();
        let (j, _) = Journal::open(dir.path()).unwrap();
        let stop = tokio_util::sync::CancellationToken::new();
        let g = GroupCommit::new(j, stop.clone());
        let first = g.queue(vec![ended(1), ended(2)]);
        let second = g.queue(vec![ended(3)]);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            g.wait_durable(first).await.unwrap();
            g.wait_durable(second).await.unwrap();
            // A change that queued nothing waits for nothing new.
            g.wait_durable(g.queue(Vec::new())).await.unwrap();
        });
        drop(g);
        let (_, r) = Journal::open(dir.path()).unwrap();
        assert_eq!(r, vec![ended(1), ended(2), ended(3)]);
        assert!(!stop.is_cancelled());
    }

    #[test]
    fn a_corrupt_record_ends_the_replay() {
        let dir = tempfile::tempdir().unwrap();
        let (mut j, _) = Journal::open(dir.path()).unwrap();
        j.append(&[ended(1), ended(2), ended(3)]).unwrap();
        let path = dir.path().join("journal.log");
        let mut bytes = std::fs::read(&path).unwrap();
        let second = bytes.iter().position(|&b| b == b'\n').unwrap() + 12;
        bytes[second] ^= 1;
        std::fs::write(&path, bytes).unwrap();
        let (_, r) = Journal::open(dir.path()).unwrap();
        assert_eq!(r, vec![ended(1)]);
    }
}

fn record_latency(secs: f64) {
    crate::metrics::JOURNAL_APPEND.observe(secs);
}
