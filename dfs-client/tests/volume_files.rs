//! Short-circuit reads, against a SeaweedFS of this test's own (its files are changed): a
//! chunk whose volume server runs on this host is read from the server's volume files, byte
//! for byte what HTTP gives; a compressed chunk is read over HTTP; a corrupted one is never
//! returned, where the read covers enough of it to check.

use std::os::unix::fs::FileExt;

use dfs_client::seaweedfs::short_circuit_bytes;
use dfs_client::{Storage, StorageConfig};
use quern_testkit::{seaweedfs_var, OwnSeaweedFs};

const MIB: usize = 1024 * 1024;

fn data(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
}

/// The chunks of `path` (file id, offset, size), from the filer's metadata.
fn chunks(filer: &str, path: &str) -> Vec<(String, u64, u64)> {
    let mut resp = ureq::get(&format!("http://{filer}{path}?metadata=true"))
        .header("Accept", "application/json")
        .call()
        .unwrap();
    let body = resp.body_mut().read_to_vec().unwrap();
    let meta: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let mut out: Vec<_> = meta["chunks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["file_id"].as_str().unwrap().to_string(),
                c["offset"].as_u64().unwrap_or(0),
                c["size"].as_u64().unwrap(),
            )
        })
        .collect();
    out.sort_by_key(|c| c.1);
    out
}

/// Flips one byte of chunk `file_id`'s data, `at` bytes in, in whichever volume file holds
/// it: the needle is found by its cookie and id, which open its header.
fn corrupt(dir: &std::path::Path, file_id: &str, at: u64) {
    let key = file_id.split_once(',').unwrap().1;
    let (id, cookie) = key.split_at(key.len() - 8);
    let mut header = u32::from_str_radix(cookie, 16)
        .unwrap()
        .to_be_bytes()
        .to_vec();
    header.extend(u64::from_str_radix(id, 16).unwrap().to_be_bytes());
    for vol in std::fs::read_dir(dir).unwrap() {
        let vol = vol.unwrap().path();
        if !vol.is_dir() {
            continue;
        }
        for f in std::fs::read_dir(&vol).unwrap() {
            let f = f.unwrap().path();
            if f.extension().is_none_or(|e| e != "dat") {
                continue;
            }
            let bytes = std::fs::read(&f).unwrap();
            if let Some(pos) = bytes.windows(12).position(|w| w == header) {
                // Cookie, id, size, data size: 20 bytes before the data.
                let at = pos as u64 + 20 + at;
                let file = std::fs::OpenOptions::new().write(true).open(&f).unwrap();
                file.write_all_at(&[bytes[at as usize] ^ 0xff], at).unwrap();
                return;
            }
        }
    }
    panic!(
        "needle {file_id} not found in any volume file under {}",
        dir.display()
    );
}

#[test]
fn chunks_on_this_host_are_read_from_their_volume_files_checked_and_else_over_http() {
    if seaweedfs_var("QUERN_SEAWEEDFS_FILER").is_none() {
        return;
    }
    let sw = OwnSeaweedFs::start(19400);
    let env = &sw.env;
    let filer = &env["QUERN_SEAWEEDFS_FILER"];
    let config = StorageConfig {
        seaweedfs_master: Some(env["QUERN_SEAWEEDFS_MASTER"].clone()),
        seaweedfs_chunk_mb: 1,
        local_volume_servers: env["QUERN_VOLUME_SERVERS"]
            .split(',')
            .map(String::from)
            .collect(),
        ..StorageConfig::default()
    };
    let direct = Storage::new(config.clone());
    let http = Storage::new(StorageConfig {
        short_circuit_reads: false,
        ..config
    });

    // 1 MiB chunks: four of them, the last short.
    let url = format!("seaweedfs://{filer}/direct/data.bin");
    let content = data(3 * MIB + 123);
    http.write_all(&url, &content).unwrap();
    let before = short_circuit_bytes();
    assert_eq!(&http.read_all(&url).unwrap()[..], &content[..]);
    assert_eq!(short_circuit_bytes(), before, "switched off: all over HTTP");
    assert_eq!(&direct.read_all(&url).unwrap()[..], &content[..]);
    assert_eq!(
        short_circuit_bytes() - before,
        content.len() as u64,
        "every chunk read from its volume file"
    );
    for (start, len) in [
        (0, 10),
        (MIB - 5, 10),
        (2 * MIB - 1, MIB + 2),
        (3 * MIB, 1000),
    ] {
        assert_eq!(
            &direct.read_range(&url, start as u64, len as u64).unwrap()[..],
            &content[start..(start + len).min(content.len())],
            "range {start}+{len}"
        );
    }

    // The filer gzips text sent as text: such a needle is read over HTTP, which inflates it.
    let text = "the quick brown fox jumps over the lazy dog\n".repeat(30_000);
    ureq::put(&format!("http://{filer}/direct/notes.txt?maxMB=1"))
        .header("Content-Type", "text/plain")
        .send(text.as_bytes())
        .unwrap();
    let notes = format!("seaweedfs://{filer}/direct/notes.txt");
    let before = short_circuit_bytes();
    assert_eq!(&direct.read_all(&notes).unwrap()[..], text.as_bytes());
    assert_eq!(
        short_circuit_bytes(),
        before,
        "compressed needles over HTTP"
    );

    // A flipped byte in the second chunk's data: its checksum no longer matches. The chunk is
    // not taken from the file, nor asked of its volume server (which would serve a part of it
    // unchecked, and refuse only a read of all of it), and there is no other replica: the
    // read fails, naming the chunk and why.
    let second = chunks(filer, "/direct/data.bin")[1].0.clone();
    corrupt(sw.dir.path(), &second, 5000);
    let err = direct.read_all(&url).unwrap_err().to_string();
    assert!(err.contains(&second) && err.contains("corrupt"), "{err}");
    let before = short_circuit_bytes();
    // What a map of that chunk reads: from its first line start on, into the next chunk.
    let err = direct
        .read_range(&url, MIB as u64 + 100, MIB as u64)
        .unwrap_err()
        .to_string();
    assert!(err.contains("checksum mismatch"), "{err}");
    assert_eq!(short_circuit_bytes(), before);
    // The other chunks still read from their files.
    assert_eq!(
        &direct.read_range(&url, 2 * MIB as u64, MIB as u64).unwrap()[..],
        &content[2 * MIB..3 * MIB]
    );
    assert_eq!(short_circuit_bytes() - before, MIB as u64);
}
