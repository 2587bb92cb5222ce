//! Planning: inputs become splits, one map task each.

use dfs_client::{DfsError, FileStatus, Storage};
use protocol::JobSpec;

use crate::coverage::{self, Base, BaseError, Change, CoveredFile};
use crate::split::{GroupFile, Split};

/// One planned map task: its split, the file's length, and the storage hosts holding it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PlannedSplit {
    /// The byte range.
    pub split: Split,
    /// Length of the whole file (the reader needs it to finish the last line).
    pub file_len: u64,
    /// Storage hosts holding a replica of the split's first byte.
    pub hosts: Vec<String>,
    /// The file is an earlier output's state, folded in as it is (an incremental run).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub state: bool,
}

/// A job's plan: its map tasks and the input they cover.
#[derive(Clone, Debug, Default)]
pub struct Plan {
    /// One map task each: new input first, then an incremental run's state files.
    pub splits: Vec<PlannedSplit>,
    /// What the output will cover (recorded in its manifest).
    pub coverage: Vec<CoveredFile>,
    /// Why an incremental run runs in full instead (`--full-if-changed`).
    pub full_because: Option<Change>,
    /// The entries under the inputs that were not read, and why: names starting with `_` or
    /// `.` (an earlier output's markers, hidden files), a file named by two inputs or reached
    /// through a link (read once); sorted, recorded in the output's manifest.
    pub not_read: Vec<crate::output::NotRead>,
}

impl Plan {
    /// The submitter's warning about [`Plan::not_read`], if anything was passed over: how many
    /// entries, why, the first few, and where the rest are listed.
    pub fn not_read_warning(&self) -> Option<String> {
        const SHOWN: usize = 5;
        let n = self.not_read.len();
        if n == 0 {
            return None;
        }
        let mut names = self.not_read[..n.min(SHOWN)]
            .iter()
            .map(|e| format!("{} ({})", e.path, e.why))
            .collect::<Vec<_>>()
            .join("; ");
        if n > SHOWN {
            names += &format!("; and {} more", n - SHOWN);
        }
        Some(format!(
            "not read: {n} input entr{}: {names}; all listed under `not_read` in the output's _MANIFEST.json",
            if n == 1 { "y" } else { "ies" }
        ))
    }
}

impl From<Vec<PlannedSplit>> for Plan {
    /// A plan of these splits that records no coverage.
    fn from(splits: Vec<PlannedSplit>) -> Self {
        Plan {
            splits,
            ..Plan::default()
        }
    }
}

/// Why a job cannot be planned.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// The output it continues cannot be used.
    #[error(transparent)]
    Base(#[from] BaseError),
    /// An input it covered changed.
    #[error(
        "cannot continue from {from}: {change}; pass --full-if-changed to run in full instead"
    )]
    Changed {
        /// The output it continues.
        from: String,
        /// How.
        change: Change,
    },
    /// Storage failed (an input that matches nothing is [`DfsError::NotFound`]).
    #[error(transparent)]
    Storage(#[from] DfsError),
    /// An input file is compressed in a format Quern does not decode
    /// ([`crate::input::unreadable_compression`]).
    #[error("cannot read input {path}: {format}-compressed files are not read (Quern decodes .gz, .zst and .bz2); decompress it, or compress it with one of those")]
    Unreadable {
        /// The file.
        path: String,
        /// Its format, by its name.
        format: &'static str,
    },
}

/// Plans `spec`, whose job reads input in `format`: every input file cut into splits as by
/// [`plan_inputs`], with the coverage the output will record. An incremental run
/// ([`JobSpec::from`]) plans only the input its base did not cover (new files, and the grown
/// tails of covered ones), then one split per state file of the base; an input the base
/// covered that changed otherwise, or a base written by another version of the job or with
/// other parameters, refuses the run ([`PlanError::Changed`]), or with
/// [`JobSpec::full_if_changed`] plans it in full ([`Plan::full_because`]).
///
/// # Errors
/// [`PlanError`].
pub fn plan_job(
    storage: &Storage,
    spec: &JobSpec,
    format: crate::InputFormat,
) -> Result<Plan, PlanError> {
    if spec.from.is_empty() {
        return Ok(plan_with(storage, spec, format, None)?.expect("no base, no change"));
    }
    if spec.from.trim_end_matches('/') == spec.output.trim_end_matches('/') {
        return Err(BaseError::SameOutput {
            output: spec.output.clone(),
        }
        .into());
    }
    let base = Base::load(storage, &spec.from, &spec.job)?;
    let planned = match base.same_definition(spec) {
        Ok(()) => plan_with(storage, spec, format, Some(&base))?,
        Err(change) => Err(change),
    };
    match planned {
        Ok(plan) => Ok(plan),
        Err(change) if spec.full_if_changed => {
            tracing::warn!(from = %spec.from, %change, "cannot continue: running in full");
            let mut plan = plan_with(storage, spec, format, None)?.expect("no base, no change");
            plan.full_because = Some(change);
            Ok(plan)
        }
        Err(change) => Err(PlanError::Changed {
            from: spec.from.clone(),
            change,
        }),
    }
}

fn plan_with(
    storage: &Storage,
    spec: &JobSpec,
    format: crate::InputFormat,
    base: Option<&Base>,
) -> Result<Result<Plan, Change>, PlanError> {
    let mut plan = Plan::default();
    let mut seen = std::collections::HashSet::new();
    let mut listed = std::collections::HashMap::new();
    for input in &spec.inputs {
        let (mut files, skipped) = storage.list_skipping(input)?;
        plan.not_read
            .extend(skipped.into_iter().map(|s| crate::output::NotRead {
                path: s.path,
                why: s.why,
            }));
        // A file named twice (by two inputs: a directory and a file in it, overlapping
        // globs; or through a link) is read once: twice would count its records twice.
        files.retain(|f| match listed.entry(storage.file_identity(&f.path)) {
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(f.path.clone());
                true
            }
            std::collections::hash_map::Entry::Occupied(kept) => {
                let why = if *kept.get() == f.path {
                    "named by more than one input, read once".to_string()
                } else {
                    format!("the same file as {}, read once", kept.get())
                };
                plan.not_read.push(crate::output::NotRead {
                    path: f.path.clone(),
                    why,
                });
                false
            }
        });
        // Read as text it would yield only malformed records: refused, by name, before any
        // task runs. (A whole-file job reads every file as one record, and says why one
        // cannot be decoded.)
        if let Some((file, compression)) = files.iter().find_map(|f| {
            let compression = crate::input::unreadable_compression(&f.path)?;
            // A tar shard so compressed (`.tar.xz`) would pass for a loose file.
            let shard = format == crate::InputFormat::Tar
                && is_tar_name(f.path.rsplit_once('.').map_or("", |(stem, _)| stem));
            (f.len > 0 && (shard || !is_loose(&f.path, format))).then_some((f, compression))
        }) {
            return Err(PlanError::Unreadable {
                path: file.path.clone(),
                format: compression,
            });
        }
        // Each file's storage calls, several files at once: where the run starts in it (from
        // an earlier output), its coverage, and for a loose file where it is stored.
        let looked_up = crate::par::map(&files, |file| {
            let start = match base {
                Some(b) => match b.continue_from(storage, file)? {
                    Ok(start) => start,
                    Err(change) => return Ok(Err(change)),
                },
                None => 0,
            };
            if file.len == 0 {
                return Ok(Ok(None));
            }
            let covered = coverage::cover(storage, file, format)?;
            let loose = (start == 0 && is_loose(&file.path, format))
                .then(|| Loose::new(storage, input, file.clone()))
                .transpose()?;
            Ok::<_, DfsError>(Ok(Some((start, covered, loose))))
        })?;
        let mut loose = Vec::new();
        for (file, found) in files.into_iter().zip(looked_up) {
            seen.insert(file.path.clone());
            let (start, covered, loose_file) = match found {
                Ok(Some(found)) => found,
                Ok(None) => continue,
                Err(change) => return Ok(Err(change)),
            };
            plan.coverage.push(covered);
            if let Some(l) = loose_file {
                loose.push(l);
            } else if start < file.len {
                file_splits(
                    storage,
                    &file,
                    start,
                    spec.split_size,
                    format,
                    &mut plan.splits,
                )?;
            }
        }
        group_loose(loose, spec.split_size, &mut plan.splits);
    }
    if let Some(b) = base {
        let mut covered: Vec<_> = b.coverage.keys().collect();
        covered.sort();
        if let Some(gone) = covered.into_iter().find(|p| !seen.contains(*p)) {
            return Ok(Err(Change::Gone {
                path: gone.clone(),
                from: b.from.clone(),
            }));
        }
        for st in &b.state {
            let hosts = storage
                .locations(&st.path)?
                .first()
                .map(|p| p.hosts.clone())
                .unwrap_or_default();
            plan.splits.push(PlannedSplit {
                split: Split::range(st.path.clone(), 0, st.len),
                file_len: st.len,
                hosts,
                state: true,
            });
        }
    }
    plan.not_read.sort();
    plan.not_read.dedup();
    Ok(Ok(plan))
}

/// Returns the splits of `inputs` (files, directories or globs), in input order then file
/// order. Splits follow the pieces storage reports (a SeaweedFS chunk, or a whole local file),
/// so each map task reads data held together on one set of hosts; a piece larger than
/// `split_size` is cut further. A compressed file (`.gz`, `.zst`, `.bz2`) is one split. Empty files
/// have no splits.
///
/// # Errors
/// Storage errors; an input that matches nothing is [`DfsError::NotFound`].
pub fn plan_splits(
    storage: &Storage,
    inputs: &[String],
    split_size: u64,
) -> Result<Vec<PlannedSplit>, DfsError> {
    plan_inputs(storage, inputs, split_size, crate::InputFormat::Lines)
}

/// Plans the splits of a job whose input is in `format`: as [`plan_splits`] for lines; one
/// split per file for whole files, placed beside the file's first piece; a tar shard larger
/// than `split_size` in pieces cut at member boundaries ([`crate::records::tar_cuts`]).
///
/// # Errors
/// As [`plan_splits`].
pub fn plan_inputs(
    storage: &Storage,
    inputs: &[String],
    split_size: u64,
    format: crate::InputFormat,
) -> Result<Vec<PlannedSplit>, DfsError> {
    let mut out = Vec::new();
    for input in inputs {
        let (loose, other): (Vec<_>, Vec<_>) = storage
            .list(input)?
            .into_iter()
            .filter(|f| f.len > 0)
            .partition(|f| is_loose(&f.path, format));
        for file in other {
            file_splits(storage, &file, 0, split_size, format, &mut out)?;
        }
        let loose = crate::par::map(&loose, |f| Loose::new(storage, input, f.clone()))?;
        group_loose(loose, split_size, &mut out);
    }
    Ok(out)
}

/// Whether a job reading `format` reads `path` as a loose file: one record, the whole file,
/// grouped with others into splits ([`group_loose`]). Every file of a whole-file job is; so is
/// a file of a tar job whose name does not end in `.tar` (or `.tar.gz`, `.tar.zst`): loose
/// photos beside, or instead of, tar shards.
pub fn is_loose(path: &str, format: crate::InputFormat) -> bool {
    match format {
        crate::InputFormat::WholeFiles => true,
        crate::InputFormat::Tar => !is_tar_name(path),
        _ => false,
    }
}

/// Whether `path` is named as a tar shard: `.tar`, possibly compressed (`.tar.gz`,
/// `.tar.zst`), in any case.
pub fn is_tar_name(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path);
    let name = match crate::input::Codec::of(name) {
        Some(_) => name.rsplit_once('.').map_or(name, |(stem, _)| stem),
        None => name,
    };
    name.len() > 4 && name[name.len() - 4..].eq_ignore_ascii_case(".tar")
}

/// `path`'s record name under `input` (the file, directory or glob that listed it): its
/// path below the input directory, or below the directory of a file or glob given as input.
pub fn name_under(input: &str, path: &str) -> String {
    let below = |dir: &str| {
        path.strip_prefix(dir)
            .and_then(|r| r.strip_prefix('/'))
            .filter(|r| !r.is_empty())
            .map(str::to_string)
    };
    let input = input.trim_end_matches('/');
    let parent = input.rsplit_once('/').map_or("", |(p, _)| p);
    below(input)
        .or_else(|| below(parent))
        .unwrap_or_else(|| path.rsplit('/').next().unwrap_or(path).to_string())
}

/// A loose file waiting to be grouped.
struct Loose {
    file: GroupFile,
    /// The storage hosts of its first byte.
    hosts: Vec<String>,
}

impl Loose {
    fn new(storage: &Storage, input: &str, file: FileStatus) -> Result<Self, DfsError> {
        let mut pieces = storage.locations(&file.path)?;
        pieces.sort_by_key(|p| p.offset);
        let mut hosts = pieces
            .into_iter()
            .next()
            .map(|p| p.hosts)
            .unwrap_or_default();
        hosts.sort();
        Ok(Loose {
            file: GroupFile {
                name: name_under(input, &file.path),
                path: file.path,
                len: file.len,
            },
            hosts,
        })
    }

    fn compressed(&self) -> bool {
        crate::input::Codec::of(&self.file.path).is_some()
    }

    /// The sample it belongs to: its directory and its name up to the first dot (a photo and
    /// its `.json` sidecar are one sample, as in [`crate::records::tar_cuts`]).
    fn sample(&self) -> &str {
        let name = &self.file.name;
        let base = name.rfind('/').map_or(0, |i| i + 1);
        name[base..]
            .find('.')
            .map_or(name.as_str(), |dot| &name[..base + dot])
    }
}

/// Groups loose files (in listing order) into splits of at most `split_size` bytes each, the
/// way Hadoop's `CombineFileInputFormat` does: files on the same storage hosts go together,
/// and each group is placed beside them. A sample (files sharing a directory and a name up to
/// the first dot: a photo and its sidecar) is never split across groups; a sample larger than
/// `split_size` is a group of its own, as is a compressed file.
///
/// Where a group ends depends on the files' names, not only on sizes: once a group holds half
/// of `split_size`, it ends before a sample whose name hashes to a boundary (with a chance of
/// the sample's size over a quarter of a split, so about a quarter split apart). So files
/// added to the input (or removed) change only the groups they fall in, and the groups after
/// them keep their first file, which is what names a group's file in the photos job's result
/// store.
fn group_loose(loose: Vec<Loose>, split_size: u64, out: &mut Vec<PlannedSplit>) {
    let split_size = split_size.max(1);
    let mut samples: Vec<Vec<Loose>> = Vec::new();
    for f in loose {
        match samples.last_mut() {
            Some(last)
                if !f.compressed() && !last[0].compressed() && last[0].sample() == f.sample() =>
            {
                last.push(f)
            }
            _ => samples.push(vec![f]),
        }
    }
    // By hosts, in order of first appearance.
    let mut buckets: Vec<(Vec<String>, Vec<Vec<Loose>>)> = Vec::new();
    for sample in samples {
        let hosts = &sample[0].hosts;
        match buckets.iter_mut().find(|(h, _)| h == hosts) {
            Some((_, b)) => b.push(sample),
            None => buckets.push((hosts.clone(), vec![sample])),
        }
    }
    for (hosts, samples) in buckets {
        let mut group: Vec<GroupFile> = Vec::new();
        let mut size = 0u64;
        let flush = |group: &mut Vec<GroupFile>, out: &mut Vec<PlannedSplit>| {
            if !group.is_empty() {
                let split = Split::group(std::mem::take(group));
                out.push(PlannedSplit {
                    file_len: split.end,
                    split,
                    hosts: hosts.clone(),
                    state: false,
                });
            }
        };
        for sample in samples {
            let len: u64 = sample.iter().map(|f| f.file.len).sum();
            // A compressed file is read whole and decoded: alone, so that offsets in its
            // group are its decoded bytes'.
            let alone = sample[0].compressed();
            // A sample ends a half-full group with a chance of its share of a quarter split,
            // told by its name's hash: about a quarter split between boundaries, whatever
            // the files' sizes, and the same boundaries however many files are added.
            let hash = u128::from(crc32fast::hash(sample[0].file.name.as_bytes()));
            let boundary =
                size >= split_size / 2 && hash * u128::from(split_size / 4) < u128::from(len) << 32;
            if alone || size + len > split_size || boundary {
                flush(&mut group, out);
                size = 0;
            }
            group.extend(sample.into_iter().map(|f| f.file));
            size += len;
            if alone {
                flush(&mut group, out);
                size = 0;
            }
        }
        flush(&mut group, out);
    }
}

/// Adds the splits of `file` from byte `from` on (0, or where an earlier output's coverage
/// ends) to `out`.
fn file_splits(
    storage: &Storage,
    file: &FileStatus,
    from: u64,
    split_size: u64,
    format: crate::InputFormat,
    out: &mut Vec<PlannedSplit>,
) -> Result<(), DfsError> {
    let piece_size = split_size.max(1);
    let split_size = if format.whole_files() {
        u64::MAX
    } else {
        piece_size
    };
    if file.len <= from {
        return Ok(());
    }
    let mut pieces = storage.locations(&file.path)?;
    pieces.sort_by_key(|p| p.offset);
    let covers = pieces.first().is_some_and(|p| p.offset == 0)
        && pieces
            .windows(2)
            .all(|w| w[0].offset + w[0].len == w[1].offset)
        && pieces.last().is_some_and(|p| p.offset + p.len == file.len);
    if !covers {
        pieces = vec![dfs_client::Piece {
            offset: 0,
            len: file.len,
            hosts: Vec::new(),
        }];
    }
    let range = |start: u64, end: u64, hosts: Vec<String>| PlannedSplit {
        split: Split::range(file.path.clone(), start, end),
        file_len: file.len,
        hosts,
        state: false,
    };
    let host_of = |at: u64| {
        pieces
            .iter()
            .find(|p| p.offset <= at && at < p.offset + p.len)
            .map(|p| p.hosts.clone())
            .unwrap_or_default()
    };
    // A large tar shard: pieces of about the split size, cut at member boundaries, each
    // placed beside the storage piece its first member is in.
    if format == crate::InputFormat::Tar
        && from == 0
        && file.len > piece_size
        && crate::input::Codec::of(&file.path).is_none()
    {
        let cuts = crate::records::tar_cuts(file.len, piece_size, |at, len| {
            storage.read_range(&file.path, at, len).map(|b| b.to_vec())
        })?;
        for (i, &start) in cuts.iter().enumerate() {
            let end = cuts.get(i + 1).copied().unwrap_or(file.len);
            out.push(range(start, end, host_of(start)));
        }
        return Ok(());
    }
    // A compressed file cannot be entered at an arbitrary byte: one split, read whole.
    if coverage::read_whole(&file.path, format) {
        out.push(range(0, file.len, host_of(0)));
        return Ok(());
    }
    let first = out.len();
    for piece in pieces {
        let piece_end = piece.offset + piece.len;
        let mut start = piece.offset.max(from);
        while start < piece_end {
            let end = (start + split_size).min(piece_end);
            out.push(range(start, end, piece.hosts.clone()));
            start = end;
        }
    }
    // A last split of under a tenth of the split size joins the one before (as Hadoop's
    // SPLIT_SLOP does): a task of its own would cost more than its bytes, and every reducer
    // would merge one more run. The joined split keeps the hosts of its larger part.
    if out.len() >= first + 2 {
        let last = &out[out.len() - 1].split;
        if last.end - last.start < split_size / 10 {
            let end = last.end;
            out.pop();
            out.last_mut().expect("two splits").split.end = end;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The splits of the files in `dir` at `split_size`: (file name, start, end).
    fn ranges(dir: &std::path::Path, split_size: u64) -> Vec<(String, u64, u64)> {
        let d = dir.display().to_string();
        plan_splits(&Storage::default(), &[d], split_size)
            .unwrap()
            .iter()
            .map(|p| {
                (
                    p.split.path.rsplit('/').next().unwrap().to_string(),
                    p.split.start,
                    p.split.end,
                )
            })
            .collect()
    }

    #[test]
    fn a_tail_under_a_tenth_of_the_split_size_joins_the_split_before() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a"), vec![b'x'; 205]).unwrap();
        std::fs::write(dir.path().join("b"), vec![b'x'; 215]).unwrap();
        let r = |f: &str, s, e| (f.to_string(), s, e);
        assert_eq!(
            ranges(dir.path(), 100),
            vec![
                r("a", 0, 100),
                r("a", 100, 205),
                r("b", 0, 100),
                r("b", 100, 200),
                r("b", 200, 215)
            ]
        );
    }

    #[test]
    fn files_are_cut_into_ranges_in_order() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a"), vec![b'x'; 10]).unwrap();
        std::fs::write(dir.path().join("b"), b"").unwrap();
        std::fs::write(dir.path().join("c"), vec![b'x'; 4]).unwrap();
        assert_eq!(
            ranges(dir.path(), 4),
            [
                ("a".into(), 0, 4),
                ("a".into(), 4, 8),
                ("a".into(), 8, 10),
                ("c".to_string(), 0, 4)
            ]
        );
        let d = dir.path().display().to_string();
        let plan = plan_splits(&Storage::default(), &[d], 4).unwrap();
        assert!(plan.iter().all(|p| p.hosts == [dfs_client::local_host()]));
    }

    fn loose(name: &str, len: u64, host: &str) -> Loose {
        Loose {
            file: GroupFile {
                path: format!("in/{name}"),
                len,
                name: name.to_string(),
            },
            hosts: vec![host.to_string()],
        }
    }

    fn groups(files: Vec<Loose>, split_size: u64) -> Vec<PlannedSplit> {
        let mut out = Vec::new();
        group_loose(files, split_size, &mut out);
        out
    }

    fn names(g: &PlannedSplit) -> Vec<&str> {
        g.split.files.iter().map(|f| f.name.as_str()).collect()
    }

    #[test]
    fn loose_files_are_grouped_up_to_the_split_size_keeping_samples_and_hosts_together() {
        let files = vec![
            loose("a.jpg", 30, "h1"),
            loose("a.json", 5, "h1"),
            loose("b.jpg", 30, "h2"),
            loose("c.jpg", 30, "h1"),
            loose("c.json", 5, "h2"),
            loose("d.jpg", 100, "h1"),
            loose("e.jpg.gz", 10, "h1"),
            loose("f.jpg", 10, "h1"),
        ];
        let g = groups(files, 80);
        let all: Vec<Vec<&str>> = g.iter().map(names).collect();
        // h1's files first (in listing order), c.json with its photo though stored on h2;
        // d.jpg alone as larger than a split; the compressed file alone.
        assert_eq!(
            all,
            [
                vec!["a.jpg", "a.json", "c.jpg", "c.json"],
                vec!["d.jpg"],
                vec!["e.jpg.gz"],
                vec!["f.jpg"],
                vec!["b.jpg"],
            ]
        );
        for p in &g {
            assert_eq!(
                p.split.end,
                p.split.files.iter().map(|f| f.len).sum::<u64>()
            );
            assert_eq!((p.split.start, p.file_len), (0, p.split.end));
            assert_eq!(p.split.path, p.split.files[0].path);
        }
        assert_eq!(g[0].hosts, ["h1"]);
        assert_eq!(g[4].hosts, ["h2"]);
        let (path, at) = g[0].split.locate(36);
        assert_eq!((path, at), ("in/c.jpg", 1));
        assert_eq!(g[0].split.locate(0), ("in/a.jpg", 0));
    }

    #[test]
    fn files_added_anywhere_change_only_the_groups_they_fall_in() {
        let sizes = |i: u64| 1_000 + (i * 7_919) % 9_000;
        let before: Vec<(String, u64)> = (0..400)
            .map(|i| (format!("p{i:04}.jpg"), sizes(i)))
            .collect();
        let mut after = before.clone();
        for (i, at) in [(0, 17), (1, 150), (2, 151), (3, 300)] {
            after.push((format!("p{at:04}-new{i}.jpg"), 5_000));
        }
        after.sort();
        let plan = |files: &[(String, u64)]| {
            groups(
                files.iter().map(|(n, l)| loose(n, *l, "h")).collect(),
                64 * 1024,
            )
        };
        let (a, b) = (plan(&before), plan(&after));
        let firsts = |g: &[PlannedSplit]| -> std::collections::HashSet<String> {
            g.iter().map(|p| p.split.files[0].name.clone()).collect()
        };
        let kept = firsts(&a).intersection(&firsts(&b)).count();
        assert!(a.len() > 20, "{} groups", a.len());
        assert!(a.iter().all(|p| p.split.end <= 64 * 1024));
        // Each addition moves the starts of a few groups at most (cut by size alone, every
        // group after the first addition would start elsewhere).
        assert!(
            kept + 12 >= a.len(),
            "{kept} of {} groups kept their first file",
            a.len()
        );
        let every: Vec<String> = b
            .iter()
            .flat_map(|p| names(p).into_iter().map(str::to_string))
            .collect();
        assert_eq!(
            every,
            after.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>()
        );
    }

    #[test]
    fn record_names_are_paths_under_the_input_and_shards_are_told_by_name() {
        assert_eq!(name_under("/p", "/p/2024/cat.jpg"), "2024/cat.jpg");
        assert_eq!(name_under("/p/", "/p/cat.jpg"), "cat.jpg");
        assert_eq!(name_under("/p/cat.jpg", "/p/cat.jpg"), "cat.jpg");
        assert_eq!(
            name_under("/p/2024-*", "/p/2024-01/cat.jpg"),
            "2024-01/cat.jpg"
        );
        assert_eq!(
            name_under("seaweedfs://f:8888/p", "seaweedfs://f:8888/p/a/b.png"),
            "a/b.png"
        );
        for shard in ["s.tar", "S.TAR", "s.tar.gz", "s.tar.zst"] {
            assert!(is_tar_name(shard) && !is_loose(shard, crate::InputFormat::Tar));
        }
        for loose in ["cat.jpg", "tar", ".tar", "s.tgz", "x.gz"] {
            assert!(
                !is_tar_name(loose) && is_loose(loose, crate::InputFormat::Tar),
                "{loose}"
            );
        }
        assert!(is_loose("s.tar", crate::InputFormat::WholeFiles));
        assert!(!is_loose("cat.jpg", crate::InputFormat::Lines));
    }

    #[test]
    fn a_whole_file_job_reads_a_directory_as_groups_named_under_it() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("sub")).unwrap();
        for (n, len) in [("a", 10), ("b", 0), ("sub/c", 30), ("sub/d", 10)] {
            std::fs::write(dir.path().join(n), vec![b'x'; len]).unwrap();
        }
        let d = dir.path().display().to_string();
        let plan = plan_inputs(
            &Storage::default(),
            &[d],
            40,
            crate::InputFormat::WholeFiles,
        )
        .unwrap();
        let all: Vec<Vec<&str>> = plan.iter().map(names).collect();
        assert_eq!(all, [vec!["a", "sub/c"], vec!["sub/d"]]);
    }

    #[test]
    fn inputs_compressed_in_formats_not_decoded_are_refused_where_they_would_be_misread() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display().to_string();
        let file = |name: &str| {
            std::fs::write(dir.path().join(name), b"x").unwrap();
            format!("{d}/{name}")
        };
        let plan = |path: &str, format| {
            let spec = JobSpec::new("views", vec![path.to_string()], format!("{d}/out"));
            plan_job(&Storage::default(), &spec, format)
        };
        let log = file("a.log.xz");
        let refused = plan(&log, crate::InputFormat::Lines).unwrap_err();
        assert!(
            matches!(&refused, PlanError::Unreadable { path, format: "xz" } if *path == log),
            "{refused}"
        );
        let shard = file("s.tar.xz");
        assert!(plan(&shard, crate::InputFormat::Tar).is_err());
        // A whole-file job reads it as one record (and says if that record cannot be used).
        assert!(plan(&log, crate::InputFormat::WholeFiles).is_ok());
        // .bz2 is decoded.
        assert!(plan(&file("b.log.bz2"), crate::InputFormat::Lines).is_ok());
    }
}
