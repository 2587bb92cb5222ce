//! The `photos` job: re-run the image model over every photo of WebDataset-style tar shards.
//!
//! Map: each shard's `<key>.jpg`/`.jpeg`/`.png` members go through the
//! [`crate::pipeline`] (decoded on CPU threads while the model runs, in batches of
//! consecutive photos, so a shard always gives the same batches, and the same bytes);
//! `<key>.json` members are carried into the photo's line as `meta`. Reduce: one JSON line
//! per photo, `{"key":...,"top5":[{"label":...,"score":...},...]}` (or `"error"` for a photo
//! that could not be read), and a keyword index, one line per label:
//! `label<TAB>key<TAB>key...` with the keys sorted. A photo is indexed under its top-1 label
//! and under any other top-5 label scoring at least `index-min-score`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use candle_core::{DType, Device};
use jobs::registry::{check_params, int_param, DynJob, JobError, JobInfo, Params};
use jobs::sdk::{HookError, Job, MapContext, ReduceContext, SetupError, TaskSetup, Values};
use jobs::InputFormat;
use serde::{Deserialize, Serialize};
use sha2::Digest;

use crate::model::MobileNetV2;
pub use crate::pipeline::top5;
use crate::pipeline::{starved_pct, Outcome, Pipeline};
use crate::preprocess::Limits;
use crate::results::{self, Stored};

/// The ImageNet class names, in class-index order (see `testdata/README.md`).
pub const IMAGENET_CLASSES: &str = include_str!("../../testdata/photos/imagenet_classes.txt");

/// The job's registration.
pub const PHOTOS: JobInfo = JobInfo {
    name: "photos",
    about: "photo re-inference: MobileNetV2 top-5 labels per photo of tar shards, plus a label index (--param model=FILE)",
    make,
};

const PARAMS: &[&str] = &[
    "model",
    "labels",
    "batch",
    "decode-threads",
    "embeddings",
    "device",
    "precision",
    "index-min-score",
    "max-side",
    "max-decoded-mib",
    "results",
    "output",
];
/// Photos per model call by default on a GPU.
pub const GPU_BATCH: usize = 32;
/// Photos per model call by default on the CPU: measured faster than larger batches there
/// (their activations spill out of the caches) and using a fraction of the memory (205 MiB
/// at 4 against 735 MiB at 32, for 220 photos in one process; docs/PHOTOS.md).
pub const CPU_BATCH: usize = 4;
/// Key prefixes: index entries sort before photo lines in every part file.
const INDEX: u8 = 1;
const PHOTO: u8 = 2;

/// A shuffle value: a photo's finished line, or a photo key listed under a label.
#[derive(Serialize, Deserialize)]
pub enum Val {
    /// A photo's JSON line.
    Line(String),
    /// A photo key, under the label of the record's key.
    Key(String),
}

/// Where the model runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceChoice {
    /// A GPU when the binary was built with CUDA and one is present, else the CPU.
    Auto,
    /// The CPU.
    Cpu,
    /// The first CUDA GPU (fails if none).
    Cuda,
}

/// The job's settings, from its parameters.
#[derive(Clone, Debug)]
pub struct Config {
    /// The safetensors weights (a local path or storage URL).
    pub model: String,
    /// Class names, one per line; the built-in ImageNet names when absent.
    pub labels: Option<String>,
    /// Photos per model call (halved on a device out-of-memory error).
    pub batch: usize,
    /// Whether `batch` was given; if not, a model on the CPU runs [`CPU_BATCH`] at a time.
    pub batch_given: bool,
    /// Decoding threads.
    pub decode_threads: usize,
    /// Whether lines carry the 1280-d pooled features.
    pub embeddings: bool,
    /// Where the model runs.
    pub device: DeviceChoice,
    /// What the model computes in: `F32`, `F16` or `BF16`.
    pub precision: DType,
    /// Non-top-1 labels at least this likely are indexed too.
    pub index_min_score: f32,
    /// Limits on declared image sizes.
    pub limits: Limits,
    /// The result store's directory (a local path or storage URL): earlier results are
    /// reused from it and this run's are kept there.
    pub results: Option<String>,
    /// Part files in Parquet (one row per photo, no label index) instead of JSON lines.
    pub parquet: bool,
}

impl Config {
    /// Reads the job parameters.
    ///
    /// # Errors
    /// [`JobError`] naming a missing or bad parameter.
    pub fn from_params(p: &Params) -> Result<Self, JobError> {
        check_params("photos", p, PARAMS)?;
        let bad = |param: &str, reason: &str| JobError::BadParam {
            job: "photos".into(),
            param: param.into(),
            value: p.get(param).cloned().unwrap_or_default(),
            reason: reason.into(),
        };
        let model = p
            .get("model")
            .filter(|m| !m.is_empty())
            .cloned()
            .ok_or_else(|| {
                bad(
                    "model",
                    "required: the MobileNetV2 safetensors file (scripts/photos/setup.sh makes one)",
                )
            })?;
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get()) as u64;
        let device = match p.get("device").map(String::as_str) {
            None | Some("auto") => DeviceChoice::Auto,
            Some("cpu") => DeviceChoice::Cpu,
            Some("cuda") => DeviceChoice::Cuda,
            Some(_) => return Err(bad("device", "expected auto, cpu or cuda")),
        };
        let precision = match p.get("precision").map(String::as_str) {
            None | Some("f32") => DType::F32,
            Some("f16") => DType::F16,
            Some("bf16") => DType::BF16,
            Some(_) => return Err(bad("precision", "expected f32, f16 or bf16")),
        };
        let embeddings = match p.get("embeddings").map(String::as_str) {
            None | Some("false") => false,
            Some("true") => true,
            Some(_) => return Err(bad("embeddings", "expected true or false")),
        };
        let index_min_score = match p.get("index-min-score") {
            None => 0.1,
            Some(v) => v
                .parse::<f32>()
                .ok()
                .filter(|s| (0.0..=1.0).contains(s))
                .ok_or_else(|| bad("index-min-score", "expected a number from 0 to 1"))?,
        };
        let parquet = match p.get("output").map(String::as_str) {
            None | Some("lines") => false,
            Some("parquet") => true,
            Some(_) => return Err(bad("output", "expected lines or parquet")),
        };
        Ok(Config {
            model,
            labels: p.get("labels").cloned(),
            batch: int_param("photos", p, "batch", GPU_BATCH as u64, 1, 4096)? as usize,
            batch_given: p.contains_key("batch"),
            decode_threads: int_param("photos", p, "decode-threads", cores.min(8), 1, 256)?
                as usize,
            embeddings,
            device,
            precision,
            index_min_score,
            limits: Limits {
                max_side: int_param("photos", p, "max-side", 16_384, 1, 65_535)? as u32,
                max_alloc: int_param("photos", p, "max-decoded-mib", 1024, 1, 65_536)? << 20,
            },
            results: p.get("results").filter(|r| !r.is_empty()).cloned(),
            parquet,
        })
    }
}

fn make(p: &Params) -> Result<Box<dyn DynJob>, JobError> {
    Ok(Box::new(Photos::new(Config::from_params(p)?)))
}

/// A loaded model with its class names, on its device.
pub struct Loaded {
    /// The network.
    pub net: MobileNetV2,
    /// Class names.
    pub labels: Vec<String>,
    /// Where it runs.
    pub device: Device,
    /// SHA-256 of the weights file.
    pub model_sha256: [u8; 32],
}

/// Models loaded by this process, by (weights, labels, device): an executor that serves
/// several tasks of a job loads the model once.
fn cache() -> &'static Mutex<Vec<(String, Arc<Loaded>)>> {
    static CACHE: OnceLock<Mutex<Vec<(String, Arc<Loaded>)>>> = OnceLock::new();
    CACHE.get_or_init(Default::default)
}

/// The first line of a device error (candle appends a backtrace to some).
fn first_line(e: &candle_core::Error) -> String {
    e.to_string().lines().next().unwrap_or_default().to_string()
}

/// `device=cuda` was asked for and no GPU is usable.
#[derive(Debug, thiserror::Error)]
#[error("no usable CUDA GPU: {0}")]
pub struct NoGpu(pub String);

/// Picks the device for `choice`, saying so when the CPU stands in for a GPU.
///
/// # Errors
/// [`NoGpu`] when `cuda` was asked for and none is usable.
pub fn pick_device(choice: DeviceChoice) -> Result<Device, NoGpu> {
    match choice {
        DeviceChoice::Cpu => Ok(Device::Cpu),
        DeviceChoice::Cuda => Device::new_cuda(0).map_err(|e| NoGpu(first_line(&e))),
        DeviceChoice::Auto if candle_core::utils::cuda_is_available() => {
            match Device::new_cuda(0) {
                Ok(d) => Ok(d),
                Err(e) => {
                    tracing::warn!(error = %first_line(&e), "built with CUDA but no GPU is usable: running on the CPU");
                    Ok(Device::Cpu)
                }
            }
        }
        DeviceChoice::Auto => {
            tracing::info!("no GPU support in this build: running on the CPU");
            Ok(Device::Cpu)
        }
    }
}

/// Why the model could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// `device=cuda` and no GPU.
    #[error(transparent)]
    NoGpu(#[from] NoGpu),
    /// The weights or the class names could not be read.
    #[error(transparent)]
    Read(#[from] SetupError),
    /// The weights are not the model's.
    #[error("model {path}")]
    Model {
        /// The weights file.
        path: String,
        /// What is wrong with them.
        #[source]
        source: candle_core::Error,
    },
    /// Half precision was asked for and the model would run on the CPU.
    #[error("precision={0} runs on a GPU only: the model would run on the CPU here, which computes in f32 (the default)")]
    HalfOnCpu(&'static str),
    /// The class names do not match the model.
    #[error("the model scores {classes} classes but there are {names} class names")]
    Labels {
        /// Classes the model scores.
        classes: usize,
        /// Names given.
        names: usize,
    },
}

/// Loads (or finds already loaded) the model of `cfg`, reading files through `read`.
///
/// # Errors
/// [`LoadError`], naming the file or tensor at fault.
pub fn load(
    cfg: &Config,
    read: &dyn Fn(&str) -> Result<Vec<u8>, SetupError>,
) -> Result<Arc<Loaded>, LoadError> {
    let device = pick_device(cfg.device)?;
    match cfg.precision {
        DType::F16 if device.is_cpu() => return Err(LoadError::HalfOnCpu("f16")),
        DType::BF16 if device.is_cpu() => return Err(LoadError::HalfOnCpu("bf16")),
        _ => {}
    }
    let id = format!(
        "{}\0{}\0{:?}\0{:?}",
        cfg.model,
        cfg.labels.as_deref().unwrap_or(""),
        device.location(),
        cfg.precision
    );
    let mut cache = cache().lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, m)) = cache.iter().find(|(k, _)| *k == id) {
        return Ok(m.clone());
    }
    let started = Instant::now();
    let weights = read(&cfg.model)?;
    let model_sha256: [u8; 32] = sha2::Sha256::digest(&weights).into();
    let net = MobileNetV2::from_safetensors(weights, &device, cfg.precision).map_err(|source| {
        LoadError::Model {
            path: cfg.model.clone(),
            source,
        }
    })?;
    let labels: Vec<String> = match &cfg.labels {
        Some(path) => String::from_utf8_lossy(&read(path)?)
            .lines()
            .map(str::to_string)
            .collect(),
        None => IMAGENET_CLASSES.lines().map(str::to_string).collect(),
    };
    if labels.len() != net.classes() {
        return Err(LoadError::Labels {
            classes: net.classes(),
            names: labels.len(),
        });
    }
    tracing::info!(model = %cfg.model, device = ?device.location(), precision = ?cfg.precision, ms = started.elapsed().as_millis() as u64, "model loaded");
    let loaded = Arc::new(Loaded {
        net,
        labels,
        device,
        model_sha256,
    });
    cache.push((id, loaded.clone()));
    Ok(loaded)
}

/// The photos job.
pub struct Photos {
    cfg: Config,
    model: Option<Arc<Loaded>>,
    /// The map task's pipeline, started at its first record.
    running: Option<Running>,
    /// With a result store: the job's storage, this attempt's number and what every result
    /// key of this run starts from.
    store: Option<(dfs_client::Storage, u64, [u8; 32])>,
}

impl Photos {
    /// A job with `cfg`; the model is loaded by `setup`.
    pub fn new(cfg: Config) -> Self {
        Photos {
            cfg,
            model: None,
            running: None,
            store: None,
        }
    }
}

/// Whether a file's bytes look like a tar archive (a ustar header) or a gzip or zstd stream.
fn looks_like_shard(data: &[u8]) -> bool {
    data.get(257..262) == Some(b"ustar")
        || data.starts_with(&[0x1f, 0x8b])
        || data.starts_with(&[0x28, 0xb5, 0x2f, 0xfd])
}

/// Splits a tar member name into the photo's key and the member's extension at the last dot of
/// its file name: `dir/holiday.2019.jpg` is key `dir/holiday.2019`, extension `jpg`, and
/// `.hidden.jpg` is key `.hidden`. `quern photos pack` names members by the same rule, so every
/// photo it packs is read back under the key it was packed as. (WebDataset cuts at the first
/// dot instead, which would make `holiday.2019.jpg` a `2019.jpg` field of key `holiday`: photo
/// names hold dots far more often than samples hold several fields.)
pub fn split_name(name: &str) -> (&str, &str) {
    let base = name.rfind('/').map_or(0, |i| i + 1);
    match name[base..].rfind('.') {
        Some(dot) if dot > 0 => (&name[..base + dot], &name[base + dot + 1..]),
        _ => (name, ""),
    }
}

#[derive(Serialize)]
struct Label<'a> {
    label: &'a str,
    score: f64,
}

#[derive(Serialize)]
struct Line<'a> {
    key: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    top5: Option<Vec<Label<'a>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    embedding: Option<&'a [f32]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    meta: Option<&'a serde_json::Value>,
}

/// A map task's state: the pipeline and the metadata members seen.
struct Running {
    pipeline: Pipeline,
    meta: HashMap<String, serde_json::Value>,
    skipped: Vec<(String, u64, String)>,
    /// The shard's file in the result store (with a store) and the results it held.
    store_file: Option<String>,
    stored: HashMap<String, Stored>,
    /// Photos whose results were reused: key, member offset, result key, result.
    reused: Vec<(String, u64, String, Stored)>,
    /// The result keys of the photos given to the model, by member offset.
    computing: HashMap<u64, String>,
}

impl Photos {
    /// With a result store: this shard's file in it and the results it holds (none when it
    /// has no file yet, or one that cannot be used, which is logged and counted).
    fn open_store(
        &self,
        ctx: &mut MapContext<'_, Self>,
    ) -> (Option<String>, HashMap<String, Stored>) {
        let (Some(dir), Some((storage, _, _))) = (&self.cfg.results, &self.store) else {
            return (None, HashMap::new());
        };
        let path = dfs_client::Storage::join(dir, &results::file_name(ctx.input(), ctx.offset()));
        match results::load(storage, &path) {
            Ok(stored) => (Some(path), stored),
            Err(e) => {
                tracing::warn!(error = %e, "result store file unusable: computing this shard's photos again");
                ctx.count("results_unusable", 1);
                (Some(path), HashMap::new())
            }
        }
    }

    fn emit_line(&self, ctx: &mut MapContext<'_, Self>, key: &str, line: &Line<'_>) {
        let mut k = vec![PHOTO];
        k.extend_from_slice(key.as_bytes());
        let json = serde_json::to_string(line).expect("a photo line serialises");
        ctx.emit(&k, Val::Line(json));
    }

    /// A photo the model scored: its line, and its keys in the label index.
    fn emit_scored(
        &self,
        ctx: &mut MapContext<'_, Self>,
        loaded: &Loaded,
        key: &str,
        top: &[(usize, f32)],
        embedding: Option<&[f32]>,
        meta: Option<&serde_json::Value>,
    ) {
        ctx.count("photos", 1);
        let labels = top
            .iter()
            .map(|&(c, s)| Label {
                label: &loaded.labels[c],
                score: (f64::from(s) * 10_000.0).round() / 10_000.0,
            })
            .collect();
        let line = Line {
            key,
            top5: Some(labels),
            error: None,
            embedding,
            meta,
        };
        self.emit_line(ctx, key, &line);
        if self.cfg.parquet {
            // No label index in Parquet: a query over the rows makes it.
            return;
        }
        let mut index_key = Vec::new();
        for (rank, &(c, s)) in top.iter().enumerate() {
            if rank == 0 || s >= self.cfg.index_min_score {
                index_key.clear();
                index_key.push(INDEX);
                index_key.extend_from_slice(loaded.labels[c].as_bytes());
                ctx.emit(&index_key, Val::Key(key.to_string()));
            }
        }
    }

    /// A photo that could not be scored: counted, listed in the skip file, and a line saying
    /// why.
    fn emit_skipped(
        &self,
        ctx: &mut MapContext<'_, Self>,
        key: &str,
        offset: u64,
        why: &str,
        meta: Option<&serde_json::Value>,
    ) {
        tracing::warn!(key = %key, reason = %why, "photo skipped");
        ctx.count("invalid_images", 1);
        ctx.list_skipped(offset, &format!("{key}: {why}"));
        let line = Line {
            key,
            top5: None,
            error: Some(why),
            embedding: None,
            meta,
        };
        self.emit_line(ctx, key, &line);
    }
}

impl Job for Photos {
    type Key = Vec<u8>;
    type Value = Val;
    const INPUT: InputFormat = InputFormat::Tar;
    const PATH_PARAMS: &'static [&'static str] = &["model", "labels"];

    fn wants_gpu(&self) -> bool {
        self.cfg.device != DeviceChoice::Cpu
    }

    fn setup(&mut self, task: &TaskSetup<'_>) -> Result<(), HookError> {
        if task.reduce {
            return Ok(());
        }
        let loaded = load(&self.cfg, &|p| task.read_file(p))?;
        if !self.cfg.batch_given && loaded.device.is_cpu() {
            self.cfg.batch = CPU_BATCH;
        }
        if self.cfg.results.is_some() {
            // A GPU's scores may depend on the batch size (its math libraries pick kernels by
            // shape), so there it is part of the key; the CPU's do not (tests/photos.rs).
            let device = if loaded.device.is_cuda() {
                format!("cuda, batch {}", self.cfg.batch)
            } else {
                "cpu".to_string()
            };
            let salt = results::salt(
                &loaded.model_sha256,
                &loaded.labels,
                &format!("{:?}", self.cfg.precision),
                &device,
                self.cfg.embeddings,
            );
            self.store = Some((task.storage().clone(), task.attempt, salt));
        }
        self.model = Some(loaded);
        Ok(())
    }

    fn map(&mut self, record: &[u8], ctx: &mut MapContext<'_, Self>) {
        let Some(loaded) = &self.model else {
            panic!("photos: map called before setup loaded the model");
        };
        if self.running.is_none() {
            let (store_file, stored) = self.open_store(ctx);
            self.running = Some(Running {
                pipeline: Pipeline::start(&self.cfg, loaded.clone()),
                meta: HashMap::new(),
                skipped: Vec::new(),
                store_file,
                stored,
                reused: Vec::new(),
                computing: HashMap::new(),
            });
        }
        let run = self.running.as_mut().expect("started above");
        let name = String::from_utf8_lossy(ctx.record_name()).into_owned();
        let (key, ext) = split_name(&name);
        if key.contains(['\t', '\n', '\r']) {
            run.skipped.push((
                key.to_string(),
                ctx.offset(),
                "the key holds a tab or line break".into(),
            ));
            return;
        }
        match ext.to_ascii_lowercase().as_str() {
            "jpg" | "jpeg" | "png" => {
                if let Some((_, _, salt)) = &self.store {
                    let rk = results::key(salt, record);
                    if let Some(s) = run.stored.get(&rk) {
                        run.reused
                            .push((key.to_string(), ctx.offset(), rk, s.clone()));
                        return;
                    }
                    run.computing.insert(ctx.offset(), rk);
                }
                run.pipeline
                    .push(key.to_string(), ctx.offset(), record.to_vec())
            }
            "json" => match serde_json::from_slice::<serde_json::Value>(record) {
                Ok(v) => {
                    run.meta.insert(key.to_string(), v);
                }
                Err(_) => ctx.count("invalid_metadata", 1),
            },
            _ if ctx.whole_file() => {
                // A loose file that is not a photo: listed, as every input file is accounted
                // for (tar shards commonly carry other members, which are only counted).
                let hint = if looks_like_shard(record) {
                    "; it looks like a tar shard: name shards *.tar"
                } else {
                    ""
                };
                ctx.count("ignored_files", 1);
                ctx.list_skipped(
                    ctx.offset(),
                    &format!("{name}: not a photo (.jpg, .jpeg, .png) or a .json sidecar{hint}"),
                );
            }
            _ => ctx.count("ignored_members", 1),
        }
    }

    fn map_end(&mut self, ctx: &mut MapContext<'_, Self>) -> Result<(), HookError> {
        let Some(run) = self.running.take() else {
            return Ok(());
        };
        let inf = run.pipeline.finish();
        if let Some(e) = inf.error {
            // Fails the attempt; it is retried like any failed attempt.
            return Err(format!("photos: {e}").into());
        }
        let loaded = self.model.clone().ok_or("photos: map_end before setup")?;
        for (key, offset, why) in &run.skipped {
            self.emit_skipped(ctx, key, *offset, why, None);
        }
        // What the result store keeps for this shard: every result, reused or computed.
        let mut keep = Vec::new();
        for (key, _, rk, s) in &run.reused {
            let meta = run.meta.get(key);
            self.emit_scored(ctx, &loaded, key, &s.top5, s.embedding.as_deref(), meta);
            ctx.count("reused_photos", 1);
            keep.push((rk.clone(), s.clone()));
        }
        for p in &inf.photos {
            let meta = run.meta.get(&p.key);
            match &p.outcome {
                Outcome::Labelled { top5, embedding } => {
                    self.emit_scored(ctx, &loaded, &p.key, top5, embedding.as_deref(), meta);
                    ctx.count("computed_photos", 1);
                    if let Some(rk) = run.computing.get(&p.offset) {
                        let s = Stored {
                            top5: top5.clone(),
                            embedding: embedding.clone(),
                        };
                        keep.push((rk.clone(), s));
                    }
                }
                Outcome::Unreadable(why) => self.emit_skipped(ctx, &p.key, p.offset, why, meta),
            }
        }
        if let (Some(path), Some((storage, attempt, _))) = (&run.store_file, &self.store) {
            // The output is right either way; a store that cannot be written costs the next
            // run time, which the counter and the log say.
            if let Err(e) = results::save(storage, path, *attempt, keep) {
                tracing::warn!(error = %e, "results not kept: the next run computes this shard again");
                ctx.count("results_unsaved", 1);
            }
        }
        // Every counter the docs list shows, 0 included.
        for name in [
            "photos",
            "invalid_images",
            "invalid_metadata",
            "ignored_members",
            "ignored_files",
            "reused_photos",
            "computed_photos",
        ] {
            ctx.count(name, 0);
        }
        ctx.count("model_batches", inf.batches);
        ctx.count("batch_halvings", inf.halvings);
        ctx.count("model_wait_ms", inf.waited.as_millis() as u64);
        ctx.count("model_busy_ms", inf.busy.as_millis() as u64);
        if loaded.device.is_cuda() {
            ctx.count("gpu_tasks", 1);
        } else {
            ctx.count("cpu_tasks", 1);
        }
        tracing::info!(
            photos = inf.photos.len(),
            batch = inf.batch,
            batches = inf.batches,
            starved_pct = starved_pct(inf.waited, inf.busy),
            "map task inferred"
        );
        Ok(())
    }

    fn part_writer(&self) -> Option<Box<dyn jobs::sdk::PartWriter>> {
        if !self.cfg.parquet {
            return None;
        }
        // Starting a writer only sets up its schema; it cannot fail on good settings.
        let part = crate::parquet::ParquetPart::new(self.cfg.embeddings)
            .expect("the Parquet writer starts");
        Some(Box::new(part))
    }

    fn reduce(&self, key: Vec<u8>, values: Values<'_, Val>, out: &mut ReduceContext<'_>) {
        match key.first() {
            Some(&INDEX) => {
                let mut keys: Vec<String> = values
                    .filter_map(|v| match v {
                        Val::Key(k) => Some(k),
                        Val::Line(_) => None,
                    })
                    .collect();
                keys.sort_unstable();
                keys.dedup();
                let buf = out.buffer();
                buf.extend_from_slice(&key[1..]);
                for k in &keys {
                    buf.push(b'\t');
                    buf.extend_from_slice(k.as_bytes());
                }
                out.end_line();
                out.count("index_labels", 1);
            }
            _ => {
                let mut lines = 0;
                for v in values {
                    if let Val::Line(line) = v {
                        out.write_line(line.as_bytes());
                        lines += 1;
                    }
                }
                // Two photos under one key (`cat.jpg` beside `cat.png`, or the same path
                // under two inputs): both lines are kept, and counted.
                out.count("duplicate_keys", lines.max(1) - 1);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_names_split_at_the_last_dot() {
        assert_eq!(split_name("a/b/cat.jpg"), ("a/b/cat", "jpg"));
        assert_eq!(split_name("cat.seg.png"), ("cat.seg", "png"));
        assert_eq!(split_name(".hidden.jpg"), (".hidden", "jpg"));
        assert_eq!(split_name("d/.jpg"), ("d/.jpg", ""));
        assert_eq!(split_name("dir.v2/cat.json"), ("dir.v2/cat", "json"));
        assert_eq!(split_name("README"), ("README", ""));
    }

    #[test]
    fn parameters_are_checked() {
        let p = |kv: &[(&str, &str)]| -> Params {
            kv.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert!(Config::from_params(&p(&[])).is_err(), "model is required");
        let c = Config::from_params(&p(&[("model", "m.safetensors")])).unwrap();
        assert_eq!(
            (c.batch, c.device, c.embeddings, c.precision),
            (32, DeviceChoice::Auto, false, DType::F32)
        );
        let half = Config::from_params(&p(&[("model", "m"), ("precision", "bf16")])).unwrap();
        assert_eq!(half.precision, DType::BF16);
        assert!(Config::from_params(&p(&[("model", "m"), ("precision", "f8")])).is_err());
        assert!(Config::from_params(&p(&[("model", "m"), ("batch", "0")])).is_err());
        assert!(Config::from_params(&p(&[("model", "m"), ("device", "tpu")])).is_err());
        assert!(Config::from_params(&p(&[("model", "m"), ("colour", "red")])).is_err());
        assert_eq!(IMAGENET_CLASSES.lines().count(), 1000);
    }
}
