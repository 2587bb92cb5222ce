//! Reads from SeaweedFS move to another replica when a volume server dies. The client's
//! cached chunk locations still name the dead server after the kill, so the read meets the
//! refused connection and must fail over.

use std::path::Path;
use std::process::Command;

use dfs_client::{Storage, StorageConfig};

struct OwnSeaweedFs(tempfile::TempDir);

impl Drop for OwnSeaweedFs {
    fn drop(&mut self) {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/seaweedfs.sh");
        let _ = Command::new("bash")
            .arg(script)
            .arg("stop")
            .arg(self.0.path())
            .output();
    }
}

#[test]
fn a_read_fails_over_when_a_replica_server_is_killed() {
    if std::env::var_os("QUERN_SEAWEEDFS_FILER").is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must start SeaweedFS first (scripts/test.sh)"
        );
        eprintln!("QUERN_SEAWEEDFS_FILER not set; skipping (scripts/test.sh starts SeaweedFS)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/seaweedfs.sh");
    let out = Command::new("bash")
        .arg(&script)
        .arg("start")
        .arg(dir.path())
        .env("SEAWEEDFS_PORT_BASE", "19500")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let sw = OwnSeaweedFs(dir);
    let env: std::collections::HashMap<String, String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            l.strip_prefix("export ")?
                .split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
        })
        .collect();
    let config = StorageConfig {
        seaweedfs_master: Some(env["QUERN_SEAWEEDFS_MASTER"].clone()),
        seaweedfs_chunk_mb: 1,
        seaweedfs_replication: "001".into(),
        ..StorageConfig::default()
    };
    let storage = Storage::new(config);
    let url = format!(
        "seaweedfs://{}/failover/data.bin",
        env["QUERN_SEAWEEDFS_FILER"]
    );
    let content: Vec<u8> = (0..4 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    storage.write_all(&url, &content).unwrap();
    // Fill the location cache: every chunk has two replicas.
    let pieces = storage.locations(&url).unwrap();
    assert!(pieces.iter().all(|p| p.hosts.len() == 2), "{pieces:?}");
    // Kill the server listed first for the first chunk: the next read tries it first.
    let victim = &pieces[0].hosts[0];
    let servers: Vec<&str> = env["QUERN_VOLUME_SERVERS"].split(',').collect();
    let i = servers.iter().position(|s| s == victim).unwrap();
    let pid = std::fs::read_to_string(sw.0.path().join(format!("volume{i}.pid"))).unwrap();
    Command::new("kill")
        .args(["-9", pid.trim()])
        .status()
        .unwrap();
    assert_eq!(&storage.read_all(&url).unwrap()[..], &content[..]);
    assert_eq!(
        &storage.read_range(&url, 1024 * 1024 - 3, 7).unwrap()[..],
        &content[1024 * 1024 - 3..1024 * 1024 + 4]
    );
}
