//! Generated protobuf and gRPC code for `quern.v1`.
#![allow(missing_docs, clippy::all, clippy::pedantic)]

tonic::include_proto!("quern.v1");
