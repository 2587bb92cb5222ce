//! Quern's photo re-inference job: torchvision's ImageNet MobileNetV2, written on candle-nn,
//! over photos in WebDataset-style tar shards, on a GPU when the binary is built with the
//! `cuda` feature and one is present, on the CPU otherwise.
//!
//! - [`model`]: the network, loaded from safetensors;
//! - [`preprocess`]: photo bytes to model input, as torchvision prepares them;
//! - [`job`]: the `photos` job: a pipelined decode-and-infer map, a label-index reduce;
//! - [`pipeline`]: the map side's decode threads and model thread;
//! - [`pack`]: a directory of photos into tar shards (`quern photos pack`);
//! - [`results`]: the result store, which lets a re-run reuse what did not change;
//! - [`parquet`]: the Parquet output (`--param output=parquet`).

pub mod job;
pub mod model;
pub mod pack;
pub mod parquet;
pub mod pipeline;
pub mod preprocess;
pub mod results;

pub use job::PHOTOS;
pub use pipeline::top5;
