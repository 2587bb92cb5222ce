//! The map side's decode-and-infer pipeline: photos are decoded and preprocessed on CPU
//! threads while the model runs on its own thread (a bounded queue between them), in batches
//! of consecutive photos, so a shard always gives the same batches, and the same bytes.

use std::collections::BTreeMap;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use candle_core::Tensor;

use crate::job::{Config, Loaded};
use crate::model::{FEATURES, INPUT_SIZE};
use crate::preprocess::{Limits, Preprocessor, IMAGE_FLOATS};

/// One photo's outcome.
pub struct Scored {
    /// The photo key.
    pub key: String,
    /// The offset of its member in the shard.
    pub offset: u64,
    /// Its labels, or why it has none.
    pub outcome: Outcome,
}

/// What became of one photo.
pub enum Outcome {
    /// The model scored it.
    Labelled {
        /// Top-5 (class, probability).
        top5: Vec<(usize, f32)>,
        /// The pooled features, when asked for.
        embedding: Option<Vec<f32>>,
    },
    /// It could not be decoded or prepared: why.
    Unreadable(String),
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
                        outcome: Outcome::Unreadable(e),
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
                    outcome: Outcome::Labelled {
                        top5: top5(&p),
                        embedding: emb,
                    },
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
            .map(|s| match &s.outcome {
                Outcome::Labelled { top5, .. } => (s.key.clone(), top5[0].0),
                Outcome::Unreadable(why) => panic!("{why}"),
            })
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
}
