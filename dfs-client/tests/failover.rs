//! Reads from SeaweedFS move to another replica when a volume server dies, or stops
//! answering. The client's cached chunk locations still name that server, so the read meets
//! the refused connection (or the silence) and must fail over.

use dfs_client::{Storage, StorageConfig};
use quern_testkit::{seaweedfs_var, OwnSeaweedFs};

/// 4 MiB written to `sw` in 1 MiB chunks with two replicas each ("001": another server in the
/// same rack) under `dir`, with the default settings; returns the settings, the file's URL
/// and its content.
fn replicated(sw: &OwnSeaweedFs, dir: &str) -> (StorageConfig, String, Vec<u8>) {
    let env = &sw.env;
    let config = StorageConfig {
        seaweedfs_master: Some(env["QUERN_SEAWEEDFS_MASTER"].clone()),
        seaweedfs_chunk_mb: 1,
        seaweedfs_replication: "001".into(),
        ..StorageConfig::default()
    };
    let storage = Storage::new(config.clone());
    let url = format!(
        "seaweedfs://{}/{dir}/data.bin",
        env["QUERN_SEAWEEDFS_FILER"]
    );
    let content: Vec<u8> = (0..4 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    storage.write_all(&url, &content).unwrap();
    (config, url, content)
}

/// Fills `storage`'s location cache for `url` (every chunk has two replicas) and returns the
/// index in `sw` of the server listed first for the first chunk: the one its next read of
/// that chunk tries first.
fn first_server(sw: &OwnSeaweedFs, storage: &Storage, url: &str) -> usize {
    let pieces = storage.locations(url).unwrap();
    assert!(pieces.iter().all(|p| p.hosts.len() == 2), "{pieces:?}");
    let first = &pieces[0].hosts[0];
    let servers: Vec<&str> = sw.env["QUERN_VOLUME_SERVERS"].split(',').collect();
    servers.iter().position(|s| s == first).unwrap()
}

#[test]
fn a_read_fails_over_when_a_replica_server_is_killed() {
    if seaweedfs_var("QUERN_SEAWEEDFS_FILER").is_none() {
        return;
    }
    let sw = OwnSeaweedFs::start(19500);
    let (config, url, content) = replicated(&sw, "failover");
    // Kill the server the next read tries first.
    let storage = Storage::new(config);
    sw.kill_volume(first_server(&sw, &storage, &url));
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
    // Written with the default timeout (the filer answers an upload once its replicas are
    // written, which on a busy machine can take over a second); read with a 1 s one.
    let (config, url, content) = replicated(&sw, "stalled");
    let storage = Storage::new(StorageConfig {
        seaweedfs_io_timeout: std::time::Duration::from_secs(1),
        ..config
    });
    let first = first_server(&sw, &storage, &url);
    // The server the read tries first for the first chunk stops (SIGSTOP): it keeps its port,
    // takes connections and answers nothing. Resumed however the test ends.
    let _stopped = sw.stop_volume(first);
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
