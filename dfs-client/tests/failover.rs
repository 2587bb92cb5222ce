//! Reads from SeaweedFS move to another replica when a volume server dies. The client's
//! cached chunk locations still name the dead server after the kill, so the read meets the
//! refused connection and must fail over.

use dfs_client::{Storage, StorageConfig};
use quern_testkit::{seaweedfs_var, OwnSeaweedFs};

#[test]
fn a_read_fails_over_when_a_replica_server_is_killed() {
    if seaweedfs_var("QUERN_SEAWEEDFS_FILER").is_none() {
        return;
    }
    let sw = OwnSeaweedFs::start(19500);
    let env = &sw.env;
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
    sw.kill_volume(servers.iter().position(|s| s == victim).unwrap());
    assert_eq!(&storage.read_all(&url).unwrap()[..], &content[..]);
    assert_eq!(
        &storage.read_range(&url, 1024 * 1024 - 3, 7).unwrap()[..],
        &content[1024 * 1024 - 3..1024 * 1024 + 4]
    );
}
