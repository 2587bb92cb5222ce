//! `photo-join`: a reduce-side join of two inputs: photo views from the access log, and photo
//! metadata from a JSON-lines file (`{"id": 7, "title": "...", "owner": "u3"}`). Every photo
//! of the metadata comes out once, with its views (0 if none):
//! `id<TAB>title<TAB>owner<TAB>views`. Views of photos without metadata are counted in
//! `views_without_metadata`.
//!
//! The map tells the sides apart by the record's file (`ctx.input()`): files ending in
//! `.jsonl` are metadata, the rest access logs.

use quern::builtin::weblog::{parse, photo_view};
use quern::registry::check_params;
use quern::sdk::{Job, MapContext, ReduceContext, Values};
use quern::{JobInfo, Registry};
use serde::{Deserialize, Serialize};

/// One side of the join.
#[derive(Serialize, Deserialize)]
enum Side {
    /// Views of the photo.
    Views(u64),
    /// Its metadata.
    Meta { title: String, owner: String },
}

#[derive(Deserialize)]
struct Photo {
    id: u64,
    title: String,
    owner: String,
}

struct PhotoJoin;

impl Job for PhotoJoin {
    type Key = u64;
    type Value = Side;

    fn map(&mut self, record: &[u8], ctx: &mut MapContext<'_, Self>) {
        if ctx.input().ends_with(".jsonl") {
            match serde_json::from_slice::<Photo>(record) {
                Ok(p) => ctx.emit(
                    &p.id,
                    Side::Meta {
                        title: p.title,
                        owner: p.owner,
                    },
                ),
                Err(_) => ctx.count("malformed_metadata", 1),
            }
        } else if let Some(photo) = parse(record).as_ref().and_then(photo_view) {
            ctx.emit(&photo, Side::Views(1));
        }
    }

    fn reduce(&self, id: u64, sides: Values<'_, Side>, out: &mut ReduceContext<'_>) {
        let (mut views, mut meta) = (0u64, None);
        for s in sides {
            match s {
                Side::Views(n) => views += n,
                // Values arrive in map order, so with duplicate metadata the first file wins.
                Side::Meta { title, owner } => {
                    meta.get_or_insert((title, owner));
                }
            }
        }
        match meta {
            Some((title, owner)) => {
                out.write_line(format!("{id}\t{title}\t{owner}\t{views}").as_bytes())
            }
            None => out.count("views_without_metadata", views),
        }
    }
}

fn main() -> std::process::ExitCode {
    let mut jobs = Registry::builtin();
    jobs.register(JobInfo {
        name: "photo-join",
        about: "photo views joined with photo metadata (*.jsonl): id, title, owner, views",
        make: |params| {
            check_params("photo-join", params, &[])?;
            Ok(Box::new(PhotoJoin))
        },
    });
    quern::main_with(jobs)
}
