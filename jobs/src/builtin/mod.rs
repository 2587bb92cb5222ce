//! The built-in jobs. They use the same SDK as user jobs.
//!
//! - `views`, `top-photos`, `endpoint-stats`: web-log analytics ([`weblog`]);
//! - `wordcount`: the classic ([`wordcount`]);
//! - `fail`: a fault-injection job for testing retries and failure reporting ([`fail`]);
//! - `crash`: attempts that randomly exit or stall, the classic crash test ([`crash`]);
//! - `identity`: every record back once, for counting lost and duplicated records ([`identity`]);
//! - `sort`: total-order sort with a sampled range partitioner ([`sort`]);
//! - `tar-index`: the members of tar shards ([`tarindex`]).

pub mod crash;
pub mod fail;
pub mod histogram;
pub mod identity;
pub mod sort;
pub mod tarindex;
pub mod weblog;
pub mod wordcount;

use crate::registry::JobInfo;

/// Returns the built-in jobs.
pub fn jobs() -> Vec<JobInfo> {
    vec![
        weblog::VIEWS,
        weblog::TOP_PHOTOS,
        weblog::ENDPOINT_STATS,
        wordcount::WORDCOUNT,
        fail::FAIL,
        crash::CRASH,
        identity::IDENTITY,
        sort::SORT,
        tarindex::TAR_INDEX,
    ]
}
