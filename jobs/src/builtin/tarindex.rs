//! `tar-index`: the inventory of WebDataset-style tar shards: one line per member,
//! `shard<TAB>member<TAB>bytes<TAB>crc32` (CRC32 in hex), by shard then member. Corrupt or
//! truncated shards are counted in `corrupt_inputs`; their readable members are listed. A
//! loose file (not named `*.tar`) is one line: its path, then its name under the input. A
//! backslash, tab or line break in a path or name is escaped ([`tsv_field`]).

use crate::output::tsv_field;
use crate::registry::{check_params, DynJob, JobError, JobInfo, Params};
use crate::sdk::{Job, MapContext, ReduceContext, Values};
use crate::InputFormat;

/// The `tar-index` job.
pub struct TarIndex;

/// Registration of [`TarIndex`].
pub const TAR_INDEX: JobInfo = JobInfo {
    name: "tar-index",
    about: "inventory of tar shards: shard, member, bytes, crc32 per member",
    make: |p: &Params| -> Result<Box<dyn DynJob>, JobError> {
        check_params("tar-index", p, &[])?;
        Ok(Box::new(TarIndex))
    },
};

impl Job for TarIndex {
    type Key = String;
    type Value = (u64, u32);
    const INPUT: InputFormat = InputFormat::Tar;

    fn map(&mut self, member: &[u8], ctx: &mut MapContext<'_, Self>) {
        // A tab or line break in a name would split the line: such names are escaped.
        let key = format!(
            "{}\t{}",
            tsv_field(ctx.input()),
            tsv_field(&String::from_utf8_lossy(ctx.record_name()))
        );
        ctx.emit(&key, (member.len() as u64, crc32fast::hash(member)));
    }

    fn reduce(&self, key: String, members: Values<'_, (u64, u32)>, out: &mut ReduceContext<'_>) {
        for (bytes, crc) in members {
            out.write_line(format!("{key}\t{bytes}\t{crc:08x}").as_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use protocol::JobSpec;

    use crate::local::run_local;
    use crate::sdk::{Job, MapContext, ReduceContext, Values};
    use crate::{InputFormat, Registry};

    /// Whole files: one record per file, named by its path.
    struct Sizes;

    impl Job for Sizes {
        type Key = String;
        type Value = u64;
        const INPUT: InputFormat = InputFormat::WholeFiles;

        fn map(&mut self, file: &[u8], ctx: &mut MapContext<'_, Self>) {
            let name = String::from_utf8_lossy(ctx.record_name()).into_owned();
            let name = name.rsplit('/').next().unwrap_or_default().to_string();
            ctx.emit(&name, file.len() as u64);
        }

        fn reduce(&self, name: String, n: Values<'_, u64>, out: &mut ReduceContext<'_>) {
            out.write_line(format!("{name}\t{}", n.sum::<u64>()).as_bytes());
        }
    }

    fn run(job: &str, registry: &Registry, input: &std::path::Path) -> String {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let mut spec = JobSpec::new(
            job,
            vec![input.display().to_string()],
            out.display().to_string(),
        );
        spec.split_size = 16; // whole-file formats ignore it: a file is never cut
        run_local(registry, &spec, &dir.path().join("work"), &mut |_| {}).unwrap();
        std::fs::read_to_string(out.join("part-00000")).unwrap()
    }

    #[test]
    fn tar_members_and_whole_files_are_records() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        std::fs::create_dir_all(&src).unwrap();
        std::fs::write(src.join("k1.jpg"), vec![1u8; 3000]).unwrap();
        std::fs::write(src.join("k1.json"), b"{}\n{}\n").unwrap();
        let shards = dir.path().join("shards");
        std::fs::create_dir_all(&shards).unwrap();
        let tar = shards.join("s-000.tar");
        assert!(std::process::Command::new("tar")
            .arg("-cf")
            .arg(&tar)
            .arg("-C")
            .arg(&src)
            .args(["k1.jpg", "k1.json"])
            .status()
            .unwrap()
            .success());
        let index = run("tar-index", &Registry::builtin(), &shards);
        let t = tar.display();
        assert_eq!(
            index,
            format!(
                "{t}\tk1.jpg\t3000\t{:08x}\n{t}\tk1.json\t6\t{:08x}\n",
                crc32fast::hash(&[1u8; 3000]),
                crc32fast::hash(b"{}\n{}\n")
            )
        );
        let mut registry = Registry::builtin();
        registry.register(crate::registry::JobInfo {
            name: "sizes",
            about: "",
            make: |_| Ok(Box::new(Sizes)),
        });
        assert_eq!(run("sizes", &registry, &src), "k1.jpg\t3000\nk1.json\t6\n");
    }

    #[test]
    fn a_name_with_a_tab_or_line_break_stays_on_its_line() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        std::fs::create_dir_all(&src).unwrap();
        for name in ["a\ttab.jpg", "b\nline.jpg", "c\\back.jpg"] {
            std::fs::write(src.join(name), b"x").unwrap();
        }
        let shards = dir.path().join("shards");
        std::fs::create_dir_all(&shards).unwrap();
        let tar = shards.join("s.tar");
        assert!(std::process::Command::new("tar")
            .args(["--no-unquote", "-cf"])
            .arg(&tar)
            .arg("-C")
            .arg(&src)
            .args(["a\ttab.jpg", "b\nline.jpg", "c\\back.jpg"])
            .status()
            .unwrap()
            .success());
        let index = run("tar-index", &Registry::builtin(), &shards);
        let names: Vec<&str> = index
            .lines()
            .map(|l| {
                let f: Vec<&str> = l.split('\t').collect();
                assert_eq!(f.len(), 4, "{l:?}");
                f[1]
            })
            .collect();
        assert_eq!(names, ["a\\ttab.jpg", "b\\nline.jpg", "c\\\\back.jpg"]);
    }
}
