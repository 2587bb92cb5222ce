//! Reads from SeaweedFS move to another replica when a volume server dies, or stops
//! answering. The client's cached chunk locations still name that server, so the read meets
//! the refused connection (or the silence) and must fail over.

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

#[test]
fn a_read_moves_on_from_a_replica_server_that_stops_answering() {
    if seaweedfs_var("QUERN_SEAWEEDFS_FILER").is_none() {
        return;
    }
    let sw = OwnSeaweedFs::start(19540);
    let env = &sw.env;
    let config = StorageConfig {
        seaweedfs_master: Some(env["QUERN_SEAWEEDFS_MASTER"].clone()),
        seaweedfs_chunk_mb: 1,
        seaweedfs_replication: "001".into(),
        ..StorageConfig::default()
    };
    let url = format!(
        "seaweedfs://{}/stalled/data.bin",
        env["QUERN_SEAWEEDFS_FILER"]
    );
    let content: Vec<u8> = (0..4 * 1024 * 1024u32).map(|i| (i % 241) as u8).collect();
    // Written with the default timeout (the filer answers an upload once its replicas are
    // written, which on a busy machine can take over a second); read with a 1 s one.
    Storage::new(config.clone())
        .write_all(&url, &content)
        .unwrap();
    let storage = Storage::new(StorageConfig {
        seaweedfs_io_timeout: std::time::Duration::from_secs(1),
        ..config
    });
    let pieces = storage.locations(&url).unwrap();
    assert!(pieces.iter().all(|p| p.hosts.len() == 2), "{pieces:?}");
    // The server listed first for the first chunk stops (SIGSTOP): it keeps its port, takes
    // connections and answers nothing. Resumed however the test ends.
    let victim = &pieces[0].hosts[0];
    let servers: Vec<&str> = env["QUERN_VOLUME_SERVERS"].split(',').collect();
    let i = servers.iter().position(|s| s == victim).unwrap();
    sw.stop_volume(i);
    struct Resume<'a>(&'a OwnSeaweedFs, usize);
    impl Drop for Resume<'_> {
        fn drop(&mut self) {
            self.0.resume_volume(self.1);
        }
    }
    let _resume = Resume(&sw, i);
    // A bound on the wait, not on speed: without the I/O timeout the read waits out the
    // request's 5-minute limit.
    let (tx, rx) = std::sync::mpsc::channel();
    let read = std::thread::spawn({
        let url = url.clone();
        move || {
            let _ = tx.send(storage.read_all(&url).map(|b| b.to_vec()));
        }
    });
    let got = rx
        .recv_timeout(std::time::Duration::from_secs(60))
        .expect("the read still waits on the stopped server after 60 s")
        .unwrap();
    assert!(got == content, "read {} bytes, not the content", got.len());
    read.join().unwrap();
}
