//! The `photos` job: re-run the image model over every photo of WebDataset-style tar shards.
//!
//! Map: each shard's `<key>.jpg`/`.jpeg`/`.png` members are decoded and preprocessed on
//! CPU threads while the model runs (a bounded queue between them), in batches of
//! consecutive photos (so a shard always gives the same batches, and the same bytes);
//! `<key>.json` members are carried into the photo's line as `meta`. Reduce: one JSON line
//! per photo, `{"key":...,"top5":[{"label":...,"score":...},...]}` (or `"error"` for a photo
//! that could not be read), and a keyword index, one line per label:
//! `label<TAB>key<TAB>key...` with the keys sorted. A photo is indexed under its top-1 label
//! and under any other top-5 label scoring at least `index-min-score`.

use std::collections::{BTreeMap, HashMap};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use candle_core::{Device, Tensor};
use jobs::registry::{check_params, int_param, DynJob, JobError, JobInfo, Params};
use jobs::sdk::{HookError, Job, MapContext, ReduceContext, TaskSetup, Values};
use jobs::InputFormat;
use serde::{Deserialize, Serialize};

use crate::model::{MobileNetV2, FEATURES, INPUT_SIZE};
use crate::preprocess::{Limits, Preprocessor, IMAGE_FLOATS};

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
    "index-min-score",
    "max-side",
    "max-decoded-mib",
];
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
    /// Decoding threads.
    pub decode_threads: usize,
    /// Whether lines carry the 1280-d pooled features.
    pub embeddings: bool,
    /// Where the model runs.
    pub device: DeviceChoice,
    /// Non-top-1 labels at least this likely are indexed too.
    pub index_min_score: f32,
    /// Limits on declared image sizes.
    pub limits: Limits,
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
        Ok(Config {
            model,
            labels: p.get("labels").cloned(),
            batch: int_param("photos", p, "batch", 32, 1, 4096)? as usize,
            decode_threads: int_param("photos", p, "decode-threads", cores.min(8), 1, 256)?
                as usize,
            embeddings,
            device,
            index_min_score,
            limits: Limits {
                max_side: int_param("photos", p, "max-side", 16_384, 1, 65_535)? as u32,
                max_alloc: int_param("photos", p, "max-decoded-mib", 1024, 1, 65_536)? << 20,
            },
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

/// Picks the device for `choice`, saying so when the CPU stands in for a GPU.
///
/// # Errors
/// A message when `cuda` was asked for and none is usable.
pub fn pick_device(choice: DeviceChoice) -> Result<Device, String> {
    match choice {
        DeviceChoice::Cpu => Ok(Device::Cpu),
        DeviceChoice::Cuda => {
            Device::new_cuda(0).map_err(|e| format!("no usable CUDA GPU: {}", first_line(&e)))
        }
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

/// Loads (or finds already loaded) the model of `cfg`, reading files through `read`.
///
/// # Errors
/// A message naming the file or tensor at fault.
pub fn load(
    cfg: &Config,
    read: &dyn Fn(&str) -> Result<Vec<u8>, String>,
) -> Result<Arc<Loaded>, String> {
    let device = pick_device(cfg.device)?;
    let id = format!(
        "{}\0{}\0{:?}",
        cfg.model,
        cfg.labels.as_deref().unwrap_or(""),
        device.location()
    );
    let mut cache = cache().lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, m)) = cache.iter().find(|(k, _)| *k == id) {
        return Ok(m.clone());
    }
    let started = Instant::now();
    let net = MobileNetV2::from_safetensors(read(&cfg.model)?, &device)
        .map_err(|e| format!("model {}: {e}", cfg.model))?;
    let labels: Vec<String> = match &cfg.labels {
        Some(path) => String::from_utf8_lossy(&read(path)?)
            .lines()
            .map(str::to_string)
            .collect(),
        None => IMAGENET_CLASSES.lines().map(str::to_string).collect(),
    };
    if labels.len() != net.classes() {
        return Err(format!(
            "the model scores {} classes but there are {} class names",
            net.classes(),
            labels.len()
        ));
    }
    tracing::info!(model = %cfg.model, device = ?device.location(), ms = started.elapsed().as_millis() as u64, "model loaded");
    let loaded = Arc::new(Loaded {
        net,
        labels,
        device,
    });
    cache.push((id, loaded.clone()));
    Ok(loaded)
}

/// The photos job.
pub struct Photos {
    cfg: Config,
    model: Option<Arc<Loaded>>,
    running: Mutex<Option<Running>>,
}

impl Photos {
    /// A job with `cfg`; the model is loaded by `setup`.
    pub fn new(cfg: Config) -> Self {
        Photos {
            cfg,
            model: None,
            running: Mutex::new(None),
        }
    }
}

/// One photo's outcome.
pub struct Scored {
    /// The photo key.
    pub key: String,
    /// The offset of its member in the shard.
    pub offset: u64,
    /// Top-5 (class, probability), or why the photo was skipped.
    pub result: Result<(Vec<(usize, f32)>, Option<Vec<f32>>), String>,
}

/// What the model thread hands back at the end of a task.
#[derive(Default)]
pub struct Inference {
    /// Every photo, in input order.
    pub photos: Vec<Scored>,
    /// Time the model waited for decoded input.
    pub waited: Duration,
    /// Time spent in model calls.
    pub busy: Duration,
    /// Model calls.
    pub batches: u64,
    /// Times the batch size was halved after an out-of-memory error.
    pub halvings: u64,
    /// The batch size in use at the end.
    pub batch: usize,
    /// A device error that stopped the model, if any.
    pub error: Option<String>,
}

struct Item {
    seq: u64,
    key: String,
    offset: u64,
    bytes: Vec<u8>,
}

struct Decoded {
    seq: u64,
    key: String,
    offset: u64,
    pixels: Result<Vec<f32>, String>,
}

/// A decode-and-infer pipeline over a stream of photos.
pub struct Pipeline {
    tx: Option<SyncSender<Item>>,
    next: u64,
    decoders: Vec<JoinHandle<()>>,
    model: Option<JoinHandle<Inference>>,
}

impl Pipeline {
    /// Starts `cfg.decode_threads` decoders and the model thread.
    pub fn start(cfg: &Config, loaded: Arc<Loaded>) -> Self {
        let depth = cfg.batch * 2;
        let (tx, rx) = sync_channel::<Item>(depth);
        let (dtx, drx) = sync_channel::<Decoded>(depth);
        let rx = Arc::new(Mutex::new(rx));
        let decoders = (0..cfg.decode_threads)
            .map(|_| {
                let (rx, dtx, limits) = (rx.clone(), dtx.clone(), cfg.limits);
                std::thread::spawn(move || decode_loop(&rx, &dtx, limits))
            })
            .collect();
        drop(dtx);
        let (batch, embeddings) = (cfg.batch, cfg.embeddings);
        let model = std::thread::spawn(move || model_loop(&loaded, &drx, batch, embeddings));
        Pipeline {
            tx: Some(tx),
            next: 0,
            decoders,
            model: Some(model),
        }
    }

    /// Queues one photo (blocks while the queue is full).
    pub fn push(&mut self, key: String, offset: u64, bytes: Vec<u8>) {
        let seq = self.next;
        self.next += 1;
        if let Some(tx) = &self.tx {
            // A closed queue means the model thread stopped; `finish` reports why.
            let _ = tx.send(Item {
                seq,
                key,
                offset,
                bytes,
            });
        }
    }

    /// Waits for every queued photo and returns the results.
    pub fn finish(mut self) -> Inference {
        self.tx = None;
        for d in self.decoders.drain(..) {
            let _ = d.join();
        }
        match self.model.take().map(JoinHandle::join) {
            Some(Ok(inference)) => inference,
            _ => Inference {
                error: Some("the model thread panicked".into()),
                ..Inference::default()
            },
        }
    }
}

fn decode_loop(rx: &Mutex<Receiver<Item>>, tx: &SyncSender<Decoded>, limits: Limits) {
    let mut pre = Preprocessor::new(limits);
    loop {
        let item = match rx.lock().unwrap_or_else(|e| e.into_inner()).recv() {
            Ok(item) => item,
            Err(_) => return,
        };
        let mut pixels = vec![0f32; IMAGE_FLOATS];
        let pixels = pre
            .run(&item.bytes, &mut pixels)
            .map(|()| pixels)
            .map_err(|e| e.to_string());
        let out = Decoded {
            seq: item.seq,
            key: item.key,
            offset: item.offset,
            pixels,
        };
        if tx.send(out).is_err() {
            return;
        }
    }
}

fn model_loop(
    loaded: &Loaded,
    rx: &Receiver<Decoded>,
    batch: usize,
    embeddings: bool,
) -> Inference {
    let mut inf = Inference {
        batch,
        ..Inference::default()
    };
    let forward = forward_fn(loaded, embeddings);
    let mut pending: BTreeMap<u64, Decoded> = BTreeMap::new();
    let (mut next, mut closed) = (0u64, false);
    let mut keys: Vec<(String, u64)> = Vec::with_capacity(batch);
    let mut pixels: Vec<f32> = Vec::with_capacity(batch * IMAGE_FLOATS);
    loop {
        // Gather the next photos in input order; decoders finish out of order.
        while keys.len() < inf.batch {
            if let Some(d) = pending.remove(&next) {
                next += 1;
                match d.pixels {
                    Ok(p) => {
                        keys.push((d.key, d.offset));
                        pixels.extend_from_slice(&p);
                    }
                    Err(e) => inf.photos.push(Scored {
                        key: d.key,
                        offset: d.offset,
                        result: Err(e),
                    }),
                }
                continue;
            }
            if closed {
                break;
            }
            let t = Instant::now();
            match rx.recv() {
                Ok(d) => {
                    inf.waited += t.elapsed();
                    pending.insert(d.seq, d);
                }
                Err(_) => closed = true,
            }
        }
        if keys.is_empty() {
            break;
        }
        if inf.error.is_none() {
            let t = Instant::now();
            if let Err(e) = run_batch(&forward, &mut inf, &keys, &pixels) {
                inf.error = Some(e);
            }
            inf.busy += t.elapsed();
        }
        keys.clear();
        pixels.clear();
    }
    inf
}

/// One model call: a batch of `n` images' pixels to each image's class probabilities and,
/// when asked for, pooled features.
type Forward<'a> =
    dyn Fn(&[f32], usize) -> candle_core::Result<(Vec<Vec<f32>>, Option<Vec<Vec<f32>>>)> + 'a;

/// The model call of `loaded`.
fn forward_fn(
    loaded: &Loaded,
    embeddings: bool,
) -> impl Fn(&[f32], usize) -> candle_core::Result<(Vec<Vec<f32>>, Option<Vec<Vec<f32>>>)> + '_ {
    move |pixels, n| {
        let x = Tensor::from_slice(pixels, (n, 3, INPUT_SIZE, INPUT_SIZE), &loaded.device)?;
        let o = loaded.net.forward(&x)?;
        let probs = o.probs.to_vec2::<f32>()?;
        let feats = if embeddings {
            Some(o.features.to_vec2::<f32>()?)
        } else {
            None
        };
        Ok((probs, feats))
    }
}

/// Whether a device error is an out-of-memory error (CUDA's, cuBLAS's or the host's).
fn is_oom(e: &candle_core::Error) -> bool {
    let m = e.to_string().to_ascii_lowercase();
    m.contains("out of memory") || m.contains("out_of_memory") || m.contains("alloc_failed")
}

/// Runs the model over `keys`' images; on an out-of-memory error halves the batch size and
/// runs the same photos again in halves.
fn run_batch(
    forward: &Forward<'_>,
    inf: &mut Inference,
    keys: &[(String, u64)],
    pixels: &[f32],
) -> Result<(), String> {
    let n = keys.len();
    match forward(pixels, n) {
        Ok((probs, feats)) => {
            inf.batches += 1;
            for (i, ((key, offset), p)) in keys.iter().zip(probs).enumerate() {
                let emb = feats.as_ref().map(|f| {
                    debug_assert_eq!(f[i].len(), FEATURES);
                    f[i].clone()
                });
                inf.photos.push(Scored {
                    key: key.clone(),
                    offset: *offset,
                    result: Ok((top5(&p), emb)),
                });
            }
            Ok(())
        }
        Err(e) if n > 1 && is_oom(&e) => {
            inf.halvings += 1;
            let half = n / 2;
            inf.batch = inf.batch.min(half);
            tracing::warn!(
                from = n,
                to = half,
                "device out of memory: halving the batch"
            );
            run_batch(forward, inf, &keys[..half], &pixels[..half * IMAGE_FLOATS])?;
            run_batch(forward, inf, &keys[half..], &pixels[half * IMAGE_FLOATS..])
        }
        Err(e) => Err(format!("model: {e}")),
    }
}

/// The five most likely classes, ties broken by class index.
pub fn top5(probs: &[f32]) -> Vec<(usize, f32)> {
    let mut idx: Vec<usize> = (0..probs.len()).collect();
    idx.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]).then(a.cmp(&b)));
    idx.truncate(5);
    idx.into_iter().map(|i| (i, probs[i])).collect()
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
}

impl Photos {
    fn emit_line(&self, ctx: &mut MapContext<'_, Self>, key: &str, line: &Line<'_>) {
        let mut k = vec![PHOTO];
        k.extend_from_slice(key.as_bytes());
        let json = serde_json::to_string(line).expect("a photo line serialises");
        ctx.emit(&k, Val::Line(json));
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
        let read = |p: &str| {
            task.read_file(p)
                .map_err(|e| jobs::runtime::error_chain(&e))
        };
        self.model = Some(load(&self.cfg, &read)?);
        Ok(())
    }

    fn map(&self, record: &[u8], ctx: &mut MapContext<'_, Self>) {
        let Some(loaded) = &self.model else {
            panic!("photos: map called before setup loaded the model");
        };
        let mut guard = self.running.lock().unwrap_or_else(|e| e.into_inner());
        let run = guard.get_or_insert_with(|| Running {
            pipeline: Pipeline::start(&self.cfg, loaded.clone()),
            meta: HashMap::new(),
            skipped: Vec::new(),
        });
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
                run.pipeline
                    .push(key.to_string(), ctx.offset(), record.to_vec())
            }
            "json" => match serde_json::from_slice::<serde_json::Value>(record) {
                Ok(v) => {
                    run.meta.insert(key.to_string(), v);
                }
                Err(_) => ctx.count("invalid_metadata", 1),
            },
            _ => ctx.count("ignored_members", 1),
        }
    }

    fn map_end(&self, ctx: &mut MapContext<'_, Self>) {
        let Some(run) = self
            .running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        else {
            return;
        };
        let inf = run.pipeline.finish();
        if let Some(e) = &inf.error {
            // Fails the attempt; it is retried like any failed attempt.
            panic!("photos: {e}");
        }
        let loaded = self.model.as_ref().expect("setup ran");
        for (key, offset, why) in &run.skipped {
            tracing::warn!(key = %key, reason = %why, "photo skipped");
            ctx.count("invalid_images", 1);
            ctx.list_skipped(*offset, &format!("{key}: {why}"));
            self.emit_line(
                ctx,
                key,
                &Line {
                    key,
                    top5: None,
                    error: Some(why),
                    embedding: None,
                    meta: None,
                },
            );
        }
        let mut index_key = Vec::new();
        for p in &inf.photos {
            let meta = run.meta.get(&p.key);
            match &p.result {
                Ok((top, emb)) => {
                    ctx.count("photos", 1);
                    let labels = top
                        .iter()
                        .map(|&(c, s)| Label {
                            label: &loaded.labels[c],
                            score: (f64::from(s) * 10_000.0).round() / 10_000.0,
                        })
                        .collect();
                    let line = Line {
                        key: &p.key,
                        top5: Some(labels),
                        error: None,
                        embedding: emb.as_deref(),
                        meta,
                    };
                    self.emit_line(ctx, &p.key, &line);
                    for (rank, &(c, s)) in top.iter().enumerate() {
                        if rank == 0 || s >= self.cfg.index_min_score {
                            index_key.clear();
                            index_key.push(INDEX);
                            index_key.extend_from_slice(loaded.labels[c].as_bytes());
                            ctx.emit(&index_key, Val::Key(p.key.clone()));
                        }
                    }
                }
                Err(why) => {
                    tracing::warn!(key = %p.key, reason = %why, "photo skipped");
                    ctx.count("invalid_images", 1);
                    ctx.list_skipped(p.offset, &format!("{}: {why}", p.key));
                    self.emit_line(
                        ctx,
                        &p.key,
                        &Line {
                            key: &p.key,
                            top5: None,
                            error: Some(why),
                            embedding: None,
                            meta,
                        },
                    );
                }
            }
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
                for v in values {
                    if let Val::Line(line) = v {
                        out.write_line(line.as_bytes());
                    }
                }
            }
        }
    }
}

/// The share of time the model waited for decoded input, in percent.
pub fn starved_pct(waited: Duration, busy: Duration) -> f64 {
    let total = (waited + busy).as_secs_f64();
    if total == 0.0 {
        0.0
    } else {
        (waited.as_secs_f64() / total * 1000.0).round() / 10.0
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
    fn top5_is_ordered_and_breaks_ties_by_class() {
        let p = [0.1, 0.3, 0.05, 0.3, 0.2, 0.0, 0.05];
        assert_eq!(
            top5(&p).iter().map(|t| t.0).collect::<Vec<_>>(),
            vec![1, 3, 4, 0, 2]
        );
    }

    #[test]
    fn an_out_of_memory_error_halves_the_batch_and_reruns_the_same_photos() {
        // A device that fits at most 3 photos per call; photo i's class is i.
        let forward = |pixels: &[f32],
                       n: usize|
         -> candle_core::Result<(Vec<Vec<f32>>, Option<Vec<Vec<f32>>>)> {
            if n > 3 {
                return Err(candle_core::Error::Msg(
                    "DriverError(CUDA_ERROR_OUT_OF_MEMORY, \"out of memory\")".into(),
                ));
            }
            let probs = (0..n)
                .map(|i| {
                    let mut p = vec![0f32; 10];
                    p[pixels[i * IMAGE_FLOATS] as usize] = 1.0;
                    p
                })
                .collect();
            Ok((probs, None))
        };
        let keys: Vec<(String, u64)> = (0..8).map(|i| (format!("p{i}"), i * 512)).collect();
        let mut pixels = vec![0f32; 8 * IMAGE_FLOATS];
        for i in 0..8 {
            pixels[i * IMAGE_FLOATS] = i as f32;
        }
        let mut inf = Inference {
            batch: 8,
            ..Inference::default()
        };
        run_batch(&forward, &mut inf, &keys, &pixels).unwrap();
        assert_eq!(inf.batch, 2, "8 -> 4 -> 2");
        assert_eq!(inf.batches, 4);
        let got: Vec<(String, usize)> = inf
            .photos
            .iter()
            .map(|s| (s.key.clone(), s.result.as_ref().unwrap().0[0].0))
            .collect();
        assert_eq!(
            got,
            (0..8).map(|i| (format!("p{i}"), i)).collect::<Vec<_>>()
        );
        // Any other error stops the model.
        let broken =
            |_: &[f32], _: usize| -> candle_core::Result<(Vec<Vec<f32>>, Option<Vec<Vec<f32>>>)> {
                Err(candle_core::Error::Msg("device lost".into()))
            };
        let mut inf = Inference {
            batch: 8,
            ..Inference::default()
        };
        assert!(run_batch(&broken, &mut inf, &keys, &pixels)
            .unwrap_err()
            .contains("device lost"));
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
            (c.batch, c.device, c.embeddings),
            (32, DeviceChoice::Auto, false)
        );
        assert!(Config::from_params(&p(&[("model", "m"), ("batch", "0")])).is_err());
        assert!(Config::from_params(&p(&[("model", "m"), ("device", "tpu")])).is_err());
        assert!(Config::from_params(&p(&[("model", "m"), ("colour", "red")])).is_err());
        assert_eq!(IMAGENET_CLASSES.lines().count(), 1000);
    }
}
