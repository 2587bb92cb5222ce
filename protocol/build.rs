//! Compiles the protos with protox, a pure-Rust protobuf compiler, so no system `protoc` is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/quern/v1/common.proto",
        "proto/quern/v1/coordinator.proto",
        "proto/quern/v1/worker.proto",
    ];
    let fds = protox::compile(files, ["proto"])?;
    // Shuffle and binary frames are `Bytes`, so the service can send slices of a mapped file without copying.
    tonic_prost_build::configure()
        .bytes(".quern.v1.FetchPartitionResponse.data")
        .bytes(".quern.v1.BinaryChunk.data")
        .compile_fds(fds)?;
    for f in files {
        println!("cargo:rerun-if-changed={f}");
    }
    Ok(())
}
