//! Uploads of job binaries the coordinator must refuse, with a clear message, and submissions
//! naming a binary it does not have.

mod support;

use protocol::pb::{BinaryChunk, FetchBinaryRequest, SubmitJobRequest};
use protocol::{platform, JobSpec, QUERN_VERSION};
use support::*;

fn chunk(data: &[u8], sha: &str, version: &str, platform: &str) -> BinaryChunk {
    BinaryChunk {
        sha256: sha.into(),
        size: data.len() as u64,
        quern_version: version.into(),
        platform: platform.into(),
        data: bytes::Bytes::copy_from_slice(data),
    }
}

#[test]
fn bad_uploads_are_refused_with_a_clear_message() {
    let cluster = Cluster::start(1);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        // The generated client, not the typed one: these calls are malformed on purpose.
        let mut c = protocol::pb::coordinator_service_client::CoordinatorServiceClient::connect(
            format!("http://{}", cluster.addr),
        )
        .await
        .unwrap();
        let me = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        let head = &me[..4096];
        let sha = protocol::binary::sha256_hex(head).unwrap();
        fn refused<T>(r: Result<tonic::Response<T>, tonic::Status>) -> String {
            match r {
                Ok(_) => panic!("accepted"),
                Err(s) => s.message().to_string(),
            }
        }
        let upload = |chunks: Vec<BinaryChunk>| {
            let mut rpc = c.clone();
            async move { rpc.upload_binary(tokio_stream::iter(chunks)).await }
        };
        let m = refused(upload(vec![chunk(head, &sha, "0.0.1", &platform())]).await);
        assert!(
            m.contains("built against Quern 0.0.1") && m.contains(QUERN_VERSION),
            "{m}"
        );
        let m = refused(upload(vec![chunk(head, &sha, QUERN_VERSION, "riscv64-linux")]).await);
        assert!(m.contains("built for riscv64-linux"), "{m}");
        let wrong = "0".repeat(64);
        let m = refused(upload(vec![chunk(head, &wrong, QUERN_VERSION, &platform())]).await);
        assert!(m.contains("hash to"), "{m}");
        let script = b"#!/bin/sh\necho hello\n";
        let s = protocol::binary::sha256_hex(&script[..]).unwrap();
        let m = refused(upload(vec![chunk(script, &s, QUERN_VERSION, &platform())]).await);
        assert!(m.contains("cannot run here"), "{m}");
        let m = refused(
            upload(vec![chunk(
                head,
                "../../etc/passwd",
                QUERN_VERSION,
                &platform(),
            )])
            .await,
        );
        assert!(m.contains("bad job binary hash"), "{m}");
        // A binary nobody uploaded can be neither fetched nor run.
        let m = refused(
            c.fetch_binary(FetchBinaryRequest {
                sha256: "a".repeat(64),
            })
            .await,
        );
        assert!(m.contains("no job binary"), "{m}");
        let mut spec = JobSpec::new("secret-job", vec!["/etc/hostname".into()], "/tmp/x");
        spec.binary = "b".repeat(64);
        let m = refused(
            c.submit_job(SubmitJobRequest {
                spec: Some(spec.to_pb()),
            })
            .await,
        );
        assert!(m.contains("was not uploaded"), "{m}");
    });
}
