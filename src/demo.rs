//! `quern demo`: the main job on the embedded default, end to end.

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::Args;
use coordinator::client::JobState;
use coordinator::Client;
use jobs::Registry;
use protocol::JobSpec;

use crate::cluster::LocalCluster;
use crate::util::{human_bytes, parse_size};

#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Directory for the cluster state, the generated log and the outputs.
    #[arg(long, default_value = ".quern-demo")]
    dir: PathBuf,
    /// Size of the access log to generate.
    #[arg(long, value_parser = parse_size, default_value = "256MiB")]
    size: u64,
    /// Worker processes.
    #[arg(long, default_value_t = 2)]
    workers: u32,
    /// Reduce tasks per job.
    #[arg(long, default_value_t = 2)]
    reducers: u32,
}

pub async fn run(a: DemoArgs, registry: Registry) -> Result<u8> {
    let log = a.dir.join("data").join("access.log");
    let fresh = std::fs::metadata(&log)
        .map(|m| m.len() < a.size)
        .unwrap_or(true);
    if fresh {
        let (log, size) = (log.clone(), a.size);
        tokio::task::spawn_blocking(move || crate::gen::generate("weblog", size, 1, &log, true))
            .await??;
    } else {
        eprintln!("reusing {}", log.display());
    }
    let options = crate::cluster::LocalOptions {
        workers: a.workers,
        ..Default::default()
    };
    let cluster = LocalCluster::start(&a.dir, &options, registry).await?;
    eprintln!(
        "local cluster: coordinator at {} with {} worker processes",
        cluster.addr, a.workers
    );
    let result = run_jobs(&a, &cluster.addr, &log).await;
    cluster.stop().await?;
    let (views, top) = result?;
    print_results(&views, &top)?;
    Ok(0)
}

async fn run_jobs(a: &DemoArgs, addr: &str, log: &std::path::Path) -> Result<(String, String)> {
    let mut client = Client::connect(addr).await?;
    let mut outputs = Vec::new();
    for job in ["views", "top-photos"] {
        let output = a.dir.join("out").join(job).display().to_string();
        let _ = std::fs::remove_dir_all(&output);
        let mut spec = JobSpec::new(job, vec![log.display().to_string()], output.clone());
        spec.reducers = a.reducers;
        let id = client.submit(&spec).await?;
        let s = client.wait(id, |_| {}).await?;
        if s.state != JobState::Succeeded {
            bail!("{id} ({job}) {}: {}", s.state.name(), s.error);
        }
        let read = s.counters.get("map_input_bytes").copied().unwrap_or(0);
        eprintln!(
            "{id} {job}: {} maps, {} reduces, read {} in {:.2}s ({}/s), {} malformed lines skipped",
            s.maps_total,
            s.reduces_total,
            human_bytes(read),
            s.elapsed.as_secs_f64(),
            human_bytes((read as f64 / s.elapsed.as_secs_f64().max(1e-3)) as u64),
            s.counters.get("malformed_records").copied().unwrap_or(0)
        );
        outputs.push(output);
    }
    Ok((outputs[0].clone(), outputs[1].clone()))
}

fn read_parts(dir: &str) -> Result<Vec<String>> {
    let mut lines = Vec::new();
    for f in dfs_client::Storage::default().list(dir)? {
        lines.extend(
            std::fs::read_to_string(&f.path)?
                .lines()
                .map(str::to_string),
        );
    }
    Ok(lines)
}

fn print_results(views: &str, top: &str) -> Result<()> {
    let mut counts: Vec<(u64, u64)> = read_parts(views)?
        .iter()
        .filter_map(|l| {
            let (p, v) = l.split_once('\t')?;
            Some((p.parse().ok()?, v.parse().ok()?))
        })
        .collect();
    counts.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    println!("top photos by views:");
    for (photo, n) in counts.iter().take(10) {
        println!("  photo {photo:>8}  {n:>8} views");
    }
    let top_lines = read_parts(top)?;
    if let Some(user) = top_lines.first().and_then(|l| l.split('\t').next()) {
        println!("most viewed photos of user {user}:");
        for l in top_lines
            .iter()
            .filter(|l| l.split('\t').next() == Some(user))
        {
            let f: Vec<&str> = l.split('\t').collect();
            println!("  photo {:>8}  {:>4} views", f[1], f[2]);
        }
    }
    println!(
        "outputs: {views} ({} photos), {top} ({} lines)",
        counts.len(),
        top_lines.len()
    );
    Ok(())
}
