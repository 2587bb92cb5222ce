//! torchvision's ImageNet MobileNetV2 on candle-nn, for inference.
//!
//! The weights are read from a safetensors file with torchvision's tensor names
//! (`features.N...`, `classifier.1...`); any file with those names and shapes loads, so a
//! retrained model is a configuration change. Batch norm is folded into the convolution
//! before it at load time (inference only), which saves a pass over every activation.
//!
//! Depthwise convolutions are the one layer candle does not run well: its grouped
//! convolution splits the input into one convolution per channel. They are written out
//! here instead: a direct CPU kernel (one pass, bias and ReLU6 fused), and on other devices
//! nine shifted multiply-adds over the padded input, which any candle backend runs.

use candle_core::{CpuStorage, CustomOp1, DType, Device, Layout, Module, Shape, Tensor, D};
use candle_nn::{Conv2d, Conv2dConfig, Linear, VarBuilder};

/// The network's input side, in pixels.
pub const INPUT_SIZE: usize = 224;
/// Width of the pooled features (the embedding).
pub const FEATURES: usize = 1280;
const BN_EPS: f64 = 1e-5;
/// (expansion, output channels, repeats, first stride), from the MobileNetV2 paper.
const SETTINGS: [(usize, usize, usize, usize); 7] = [
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
];

/// The errors of loading or running the model.
pub type Result<T> = candle_core::Result<T>;

/// A loaded MobileNetV2.
pub struct MobileNetV2 {
    stem: Conv2d,
    blocks: Vec<Block>,
    head: Pointwise,
    classifier: Linear,
    classes: usize,
    dtype: DType,
}

/// What one forward pass gives per image.
pub struct Output {
    /// Class probabilities, `[batch, classes]`.
    pub probs: Tensor,
    /// Pooled features, `[batch, 1280]`.
    pub features: Tensor,
}

struct Block {
    expand: Option<Pointwise>,
    depthwise: Depthwise,
    project: Pointwise,
    residual: bool,
}

/// A 1x1 convolution (with folded batch norm) as a batched matrix product.
struct Pointwise {
    weight: Tensor,
    bias: Tensor,
    relu6: bool,
}

/// A 3x3 depthwise convolution with padding 1 (with folded batch norm) and ReLU6.
struct Depthwise {
    weight: Tensor,
    bias: Tensor,
    cpu: DepthwiseCpu,
    stride: usize,
}

/// Folds batch norm `prefix` into a convolution weight `[out, ...]`, returning the scaled
/// weight and the bias.
fn fold_bn(weight: Tensor, vb: &VarBuilder, prefix: &str) -> Result<(Tensor, Tensor)> {
    let out = weight.dim(0)?;
    let vb = vb.pp(prefix);
    let gamma = vb.get(out, "weight")?;
    let beta = vb.get(out, "bias")?;
    let mean = vb.get(out, "running_mean")?;
    let var = vb.get(out, "running_var")?;
    let scale = gamma.div(&(var + BN_EPS)?.sqrt()?)?;
    let mut shape = vec![out];
    shape.resize(weight.rank(), 1);
    let weight = weight.broadcast_mul(&scale.reshape(shape)?)?;
    let bias = beta.sub(&mean.mul(&scale)?)?;
    Ok((weight, bias))
}

impl Pointwise {
    fn load(
        vb: &VarBuilder,
        conv: &str,
        bn: &str,
        (cin, cout): (usize, usize),
        relu6: bool,
        dtype: DType,
    ) -> Result<Self> {
        let w = vb.get((cout, cin, 1, 1), &format!("{conv}.weight"))?;
        let (w, b) = fold_bn(w, vb, bn)?;
        Ok(Pointwise {
            weight: w.reshape((cout, cin))?.to_dtype(dtype)?,
            bias: b.reshape((cout, 1))?.to_dtype(dtype)?,
            relu6,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (n, c, h, w) = x.dims4()?;
        let x = x.reshape((n, c, h * w))?;
        let y = self
            .weight
            .broadcast_left(n)?
            .matmul(&x)?
            .broadcast_add(&self.bias)?;
        let y = if self.relu6 { y.clamp(0f32, 6f32)? } else { y };
        y.reshape((n, (), h, w))
    }
}

impl Depthwise {
    fn load(
        vb: &VarBuilder,
        conv: &str,
        bn: &str,
        c: usize,
        stride: usize,
        dtype: DType,
    ) -> Result<Self> {
        let w = vb.get((c, 1, 3, 3), &format!("{conv}.weight"))?;
        let (w, b) = fold_bn(w, vb, bn)?;
        let cpu = DepthwiseCpu {
            weight: w.flatten_all()?.to_device(&Device::Cpu)?.to_vec1()?,
            bias: b.to_device(&Device::Cpu)?.to_vec1()?,
            stride,
        };
        Ok(Depthwise {
            weight: w.reshape((c, 9))?.to_dtype(dtype)?,
            bias: b.reshape((c, 1, 1))?.to_dtype(dtype)?,
            cpu,
            stride,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if x.device().is_cpu() && x.dtype() == DType::F32 {
            x.contiguous()?.apply_op1_no_bwd(&self.cpu)
        } else {
            self.forward_generic(x)
        }
    }

    /// The device-independent form: nine shifted multiply-adds over the padded input, at
    /// stride 1; stride 2 keeps every other row and column of that (with padding 1, output
    /// (i, j) at stride 2 is output (2i, 2j) at stride 1).
    fn forward_generic(&self, x: &Tensor) -> Result<Tensor> {
        let (n, c, h, w) = x.dims4()?;
        let padded = x.pad_with_zeros(2, 1, 1)?.pad_with_zeros(3, 1, 1)?;
        let mut acc: Option<Tensor> = None;
        for i in 0..3 {
            for j in 0..3 {
                let tap = self.weight.narrow(1, i * 3 + j, 1)?.reshape((c, 1, 1))?;
                let term = padded
                    .narrow(2, i, h)?
                    .narrow(3, j, w)?
                    .broadcast_mul(&tap)?;
                acc = Some(match acc {
                    None => term,
                    Some(a) => (a + term)?,
                });
            }
        }
        let mut y = acc
            .expect("nine taps")
            .broadcast_add(&self.bias)?
            .clamp(0f32, 6f32)?;
        if self.stride == 2 {
            y = y
                .reshape((n, c, h / 2, 2, w / 2, 2))?
                .narrow(3, 0, 1)?
                .narrow(5, 0, 1)?
                .reshape((n, c, h / 2, w / 2))?;
        }
        Ok(y)
    }
}

/// The CPU depthwise kernel: one pass per output plane, bias and ReLU6 fused.
struct DepthwiseCpu {
    weight: Vec<f32>,
    bias: Vec<f32>,
    stride: usize,
}

impl CustomOp1 for DepthwiseCpu {
    fn name(&self) -> &'static str {
        "depthwise3x3"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        use rayon::prelude::*;
        let (n, c, h, w) = layout.shape().dims4()?;
        let input = match (storage, layout.contiguous_offsets()) {
            (CpuStorage::F32(v), Some((a, b))) => &v[a..b],
            _ => candle_core::bail!("depthwise3x3 wants a contiguous f32 input"),
        };
        let s = self.stride;
        let (ho, wo) = ((h - 1) / s + 1, (w - 1) / s + 1);
        let mut out = vec![0f32; n * c * ho * wo];
        out.par_chunks_mut(ho * wo)
            .enumerate()
            .for_each(|(plane, dst)| {
                let ch = plane % c;
                let src = &input[plane * h * w..(plane + 1) * h * w];
                let k = &self.weight[ch * 9..ch * 9 + 9];
                let bias = self.bias[ch];
                for oy in 0..ho {
                    let row = &mut dst[oy * wo..(oy + 1) * wo];
                    row.fill(bias);
                    for ky in 0..3 {
                        let iy = (oy * s + ky) as isize - 1;
                        if iy < 0 || iy >= h as isize {
                            continue;
                        }
                        let line = &src[iy as usize * w..(iy as usize + 1) * w];
                        for kx in 0..3 {
                            let kv = k[ky * 3 + kx];
                            // Output columns whose input column ox*s + kx - 1 is inside the row.
                            let first = if kx == 0 { 1 } else { 0 };
                            let last = if kx > w {
                                0
                            } else {
                                ((w - kx) / s + 1).min(wo)
                            };
                            for ox in first..last {
                                row[ox] += kv * line[ox * s + kx - 1];
                            }
                        }
                    }
                    for v in row.iter_mut() {
                        *v = v.clamp(0.0, 6.0);
                    }
                }
            });
        Ok((CpuStorage::F32(out), Shape::from((n, c, ho, wo))))
    }
}

impl MobileNetV2 {
    /// Loads the model from safetensors bytes onto `device`, to compute in `dtype` (`F32`,
    /// or `F16`/`BF16` for half precision). Batch norm is folded in `F32` either way; the
    /// input is converted to `dtype` and the outputs come back as `F32`.
    ///
    /// # Errors
    /// A missing tensor or a tensor of the wrong shape, naming it; a `dtype` other than
    /// those three.
    pub fn from_safetensors(bytes: Vec<u8>, device: &Device, dtype: DType) -> Result<Self> {
        if !matches!(dtype, DType::F32 | DType::F16 | DType::BF16) {
            candle_core::bail!("the model computes in f32, f16 or bf16, not {dtype:?}");
        }
        let vb = VarBuilder::from_buffered_safetensors(bytes, DType::F32, device)?;
        let stem_w = vb.get((32, 3, 3, 3), "features.0.0.weight")?;
        let (stem_w, stem_b) = fold_bn(stem_w, &vb, "features.0.1")?;
        let stem = Conv2d::new(
            stem_w.to_dtype(dtype)?,
            Some(stem_b.to_dtype(dtype)?),
            Conv2dConfig {
                padding: 1,
                stride: 2,
                ..Default::default()
            },
        );
        let mut blocks = Vec::new();
        let (mut idx, mut cin) = (1, 32);
        for (t, cout, n, s) in SETTINGS {
            for r in 0..n {
                let stride = if r == 0 { s } else { 1 };
                let p = format!("features.{idx}.conv");
                let hidden = cin * t;
                let (expand, layer) = if t == 1 {
                    (None, 0)
                } else {
                    let e = Pointwise::load(
                        &vb,
                        &format!("{p}.0.0"),
                        &format!("{p}.0.1"),
                        (cin, hidden),
                        true,
                        dtype,
                    )?;
                    (Some(e), 1)
                };
                let depthwise = Depthwise::load(
                    &vb,
                    &format!("{p}.{layer}.0"),
                    &format!("{p}.{layer}.1"),
                    hidden,
                    stride,
                    dtype,
                )?;
                let project = Pointwise::load(
                    &vb,
                    &format!("{p}.{}", layer + 1),
                    &format!("{p}.{}", layer + 2),
                    (hidden, cout),
                    false,
                    dtype,
                )?;
                blocks.push(Block {
                    expand,
                    depthwise,
                    project,
                    residual: stride == 1 && cin == cout,
                });
                cin = cout;
                idx += 1;
            }
        }
        let head = Pointwise::load(
            &vb,
            "features.18.0",
            "features.18.1",
            (cin, FEATURES),
            true,
            dtype,
        )?;
        let classes = vb.get_unchecked("classifier.1.bias")?.dim(0)?;
        let fc = vb.pp("classifier.1");
        let classifier = Linear::new(
            fc.get((classes, FEATURES), "weight")?.to_dtype(dtype)?,
            Some(fc.get(classes, "bias")?.to_dtype(dtype)?),
        );
        Ok(MobileNetV2 {
            stem,
            blocks,
            head,
            classifier,
            classes,
            dtype,
        })
    }

    /// The number of classes the classifier scores.
    pub fn classes(&self) -> usize {
        self.classes
    }

    /// Runs a batch `[n, 3, 224, 224]` of normalised images.
    ///
    /// # Errors
    /// Device errors (out of memory among them).
    pub fn forward(&self, x: &Tensor) -> Result<Output> {
        let mut x = self
            .stem
            .forward(&x.to_dtype(self.dtype)?)?
            .clamp(0f32, 6f32)?;
        for b in &self.blocks {
            let mut y = match &b.expand {
                Some(e) => e.forward(&x)?,
                None => x.clone(),
            };
            y = b.depthwise.forward(&y)?;
            y = b.project.forward(&y)?;
            x = if b.residual { (x + y)? } else { y };
        }
        let x = self.head.forward(&x)?;
        let features = x.mean(D::Minus1)?.mean(D::Minus1)?;
        let logits = self.classifier.forward(&features)?.to_dtype(DType::F32)?;
        let probs = candle_nn::ops::softmax_last_dim(&logits)?;
        let features = features.to_dtype(DType::F32)?;
        Ok(Output { probs, features })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The CPU kernel and the device-independent form (what a GPU runs) agree.
    #[test]
    fn depthwise_cpu_kernel_matches_the_generic_form() -> Result<()> {
        let dev = Device::Cpu;
        for (stride, h, w) in [(1, 7, 5), (2, 8, 6), (1, 1, 1), (2, 2, 2)] {
            let c = 3;
            let weight = Tensor::randn(0f32, 1.0, (c, 9), &dev)?;
            let bias = Tensor::randn(0f32, 1.0, (c, 1, 1), &dev)?;
            let d = Depthwise {
                cpu: DepthwiseCpu {
                    weight: weight.flatten_all()?.to_vec1()?,
                    bias: bias.flatten_all()?.to_vec1()?,
                    stride,
                },
                weight,
                bias,
                stride,
            };
            let x = Tensor::randn(0f32, 2.0, (2, c, h, w), &dev)?;
            let a = d.forward(&x)?;
            let b = d.forward_generic(&x)?;
            assert_eq!(a.dims(), b.dims());
            let diff = (a - b)?.abs()?.max_all()?.to_scalar::<f32>()?;
            assert!(diff < 1e-4, "stride {stride} {h}x{w}: {diff}");
        }
        Ok(())
    }
}
