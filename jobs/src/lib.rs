//! Quern's job SDK, the task runtime that runs jobs, and the built-in jobs.
//!
//! A job is a type implementing [`Job`]: a `map` from input records to typed key/value pairs,
//! an optional `combine`, and a `reduce` from a key and its values to output lines. The runtime
//! is generic over the job, so the hot loops are monomorphised (no per-record dynamic dispatch);
//! [`DynJob`] erases the type once per task for the executor.
//!
//! Layout:
//! - [`sdk`]: the [`Job`] trait, [`Key`]/[`Value`] codecs, map and reduce contexts, counters;
//! - [`registry`]: job names to constructors ([`Registry::builtin`]);
//! - [`split`]: splits of line-oriented inputs, where a record belongs to the split it starts in;
//! - [`input`]: a map task's input bytes, with `.gz`, `.zst` and `.bz2` files decoded by extension;
//! - [`records`]: input formats: lines, whole files, tar shards;
//! - [`partition`]: the stable partitioner (the same on every machine and build);
//! - [`runtime`]: shuffle file format, map-side sort/combine/spill, merge, reduce;
//! - [`plan`]: turning inputs into splits;
//! - [`coverage`]: what an output read, so an incremental run reads only what is new;
//! - [`local`]: `quern run --local`, the sequential oracle;
//! - [`output`]: committed outputs: part files, manifest, `_SUCCESS`;
//! - [`builtin`]: web-log analytics, word count, and a fault-injection job;
//! - [`gen`]: deterministic data generators for the built-in jobs.
//!
//! A job in a few lines:
//!
//! ```
//! use jobs::sdk::{self, Combiner, Job, MapContext, ReduceContext, Values};
//!
//! struct LineLengths;
//!
//! impl Job for LineLengths {
//!     type Key = u64;
//!     type Value = u64;
//!     const COMBINE: Option<Combiner<u64>> = Some(sdk::sum);
//!
//!     fn map(&mut self, record: &[u8], ctx: &mut MapContext<'_, Self>) {
//!         ctx.emit(&(record.len() as u64), 1);
//!     }
//!
//!     fn reduce(&self, len: u64, counts: Values<'_, u64>, out: &mut ReduceContext<'_>) {
//!         let n: u64 = counts.sum();
//!         out.write_line(format!("{len}\t{n}").as_bytes());
//!     }
//! }
//! ```
#![warn(missing_docs)]

pub mod builtin;
pub mod coverage;
pub mod gen;
pub mod input;
pub mod local;
pub mod output;
pub mod par;
pub mod partition;
pub mod plan;
pub mod records;
pub mod registry;
pub mod runtime;
pub mod sdk;
pub mod split;

pub use records::InputFormat;
pub use registry::{DynJob, JobError, Params, Registry};
pub use sdk::{Combiner, Counters, Job, Key, MapContext, ReduceContext, Value, Values};
