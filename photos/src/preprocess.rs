//! Photo bytes to the model's input, as torchvision prepares it for this model: decode,
//! convert to RGB, resize the short side to 256 (bilinear, antialiased), center-crop 224,
//! scale to [0, 1] and normalise with the ImageNet mean and std, channels first.
//!
//! Only the 224x224 window that survives the crop is resampled: resizing the matching
//! source box straight into 224x224 gives the same pixels as resizing the whole image and
//! cropping (the filter's scale is the same), for less work.

use std::io::Cursor;

use fast_image_resize::{images::Image, FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};
use image::{ImageFormat, ImageReader};

use crate::model::INPUT_SIZE;

/// The version of this preprocessing, part of every result key of the result store: bump it
/// whenever a change here changes what the model sees, so no earlier result is reused.
pub const VERSION: u32 = 1;
/// The short side photos are resized to before the center crop.
pub const RESIZE_SHORT: u32 = 256;
const MEAN: [f32; 3] = [0.485, 0.456, 0.406];
const STD: [f32; 3] = [0.229, 0.224, 0.225];
/// Floats in one preprocessed image.
pub const IMAGE_FLOATS: usize = 3 * INPUT_SIZE * INPUT_SIZE;

/// Bounds on what a photo may declare before anything is allocated for it.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Largest width or height, in pixels.
    pub max_side: u32,
    /// Largest decoded size, in bytes.
    pub max_alloc: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_side: 16_384,
            max_alloc: 1 << 30,
        }
    }
}

/// Why a photo was skipped.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BadImage {
    /// Not a format the job reads (JPEG, PNG), judging by its first bytes.
    #[error("not a JPEG or PNG image")]
    Format,
    /// The image declares dimensions beyond the limits (a decompression bomb, or junk).
    #[error("declared size {width}x{height} is beyond the limits (parameters max-side and max-decoded-mib)")]
    TooLarge {
        /// Declared width.
        width: u32,
        /// Declared height.
        height: u32,
    },
    /// The bytes do not decode (truncated or corrupt).
    #[error("cannot decode: {0}")]
    Decode(String),
}

/// Per-thread resizing state.
#[derive(Default)]
pub struct Preprocessor {
    resizer: Resizer,
    limits: Limits,
}

impl Preprocessor {
    /// A preprocessor with these limits.
    pub fn new(limits: Limits) -> Self {
        Preprocessor {
            resizer: Resizer::new(),
            limits,
        }
    }

    /// Decodes `bytes` and writes the normalised CHW image into `out`
    /// ([`IMAGE_FLOATS`] floats).
    ///
    /// # Errors
    /// [`BadImage`] for anything that is not a decodable JPEG or PNG within the limits.
    pub fn run(&mut self, bytes: &[u8], out: &mut [f32]) -> Result<(), BadImage> {
        let format = image::guess_format(bytes).map_err(|_| BadImage::Format)?;
        if !matches!(format, ImageFormat::Jpeg | ImageFormat::Png) {
            return Err(BadImage::Format);
        }
        if format == ImageFormat::Jpeg && !jpeg_complete(bytes) {
            // The decoder would fill the missing rows with grey and carry on.
            return Err(BadImage::Decode(
                "truncated JPEG: no end-of-image marker".into(),
            ));
        }
        let mut reader = ImageReader::with_format(Cursor::new(bytes), format);
        let mut limits = image::Limits::default();
        limits.max_image_width = Some(self.limits.max_side);
        limits.max_image_height = Some(self.limits.max_side);
        limits.max_alloc = Some(self.limits.max_alloc);
        reader.limits(limits);
        let (width, height) = ImageReader::with_format(Cursor::new(bytes), format)
            .into_dimensions()
            .map_err(|e| BadImage::Decode(e.to_string()))?;
        if width > self.limits.max_side
            || height > self.limits.max_side
            || u64::from(width) * u64::from(height) * 4 > self.limits.max_alloc
        {
            return Err(BadImage::TooLarge { width, height });
        }
        if width == 0 || height == 0 {
            return Err(BadImage::Decode("empty image".into()));
        }
        let rgb = reader
            .decode()
            .map_err(|e| match e {
                image::ImageError::Limits(_) => BadImage::TooLarge { width, height },
                e => BadImage::Decode(e.to_string()),
            })?
            .into_rgb8();
        self.resize_crop(rgb.width(), rgb.height(), rgb.into_raw(), out)
    }

    fn resize_crop(
        &mut self,
        w: u32,
        h: u32,
        rgb: Vec<u8>,
        out: &mut [f32],
    ) -> Result<(), BadImage> {
        // torchvision: the short side becomes 256, the long side int(256 * long / short).
        let (nw, nh) = if w <= h {
            (
                RESIZE_SHORT,
                (u64::from(RESIZE_SHORT) * u64::from(h) / u64::from(w)) as u32,
            )
        } else {
            (
                (u64::from(RESIZE_SHORT) * u64::from(w) / u64::from(h)) as u32,
                RESIZE_SHORT,
            )
        };
        let side = INPUT_SIZE as u32;
        // torchvision's center crop: int(round((size - 224) / 2)), halves rounded to even.
        let offset = |n: u32| ((f64::from(n) - f64::from(side)) / 2.0).round_ties_even() as f64;
        let (sx, sy) = (f64::from(w) / f64::from(nw), f64::from(h) / f64::from(nh));
        let src = Image::from_vec_u8(w, h, rgb, PixelType::U8x3)
            .map_err(|e| BadImage::Decode(e.to_string()))?;
        let mut dst = Image::new(side, side, PixelType::U8x3);
        let opts = ResizeOptions::new()
            .resize_alg(ResizeAlg::Convolution(FilterType::Bilinear))
            .crop(
                offset(nw) * sx,
                offset(nh) * sy,
                f64::from(side) * sx,
                f64::from(side) * sy,
            );
        self.resizer
            .resize(&src, &mut dst, &opts)
            .map_err(|e| BadImage::Decode(e.to_string()))?;
        let px = dst.buffer();
        let plane = INPUT_SIZE * INPUT_SIZE;
        for (i, p) in px.chunks_exact(3).enumerate() {
            for c in 0..3 {
                out[c * plane + i] = (f32::from(p[c]) / 255.0 - MEAN[c]) / STD[c];
            }
        }
        Ok(())
    }
}

/// Whether a JPEG's compressed data is followed by its end-of-image marker. Inside the
/// entropy-coded data a 0xFF byte is always stuffed (FF 00) or a restart marker (FF D0-D7),
/// so FF D9 after the first start-of-scan (FF DA) is the real end; metadata with thumbnails
/// comes before the first scan.
fn jpeg_complete(bytes: &[u8]) -> bool {
    let Some(sos) = bytes.windows(2).position(|w| w == [0xFF, 0xDA]) else {
        return false;
    };
    bytes[sos..].windows(2).rev().any(|w| w == [0xFF, 0xD9])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png(w: u32, h: u32) -> Vec<u8> {
        let img = image::RgbImage::from_fn(w, h, |x, y| {
            image::Rgb([(x % 256) as u8, (y % 256) as u8, 128])
        });
        let mut out = Cursor::new(Vec::new());
        img.write_to(&mut out, ImageFormat::Png).unwrap();
        out.into_inner()
    }

    #[test]
    fn bad_images_are_told_apart() {
        let mut p = Preprocessor::default();
        let mut out = vec![0f32; IMAGE_FLOATS];
        assert_eq!(p.run(b"GIF89a not wanted", &mut out), Err(BadImage::Format));
        assert_eq!(p.run(b"", &mut out), Err(BadImage::Format));
        let good = png(300, 260);
        assert!(p.run(&good, &mut out).is_ok());
        let truncated = &good[..good.len() / 2];
        assert!(matches!(
            p.run(truncated, &mut out),
            Err(BadImage::Decode(_))
        ));
        // A PNG header declaring 100000 x 100000 pixels: refused before decoding.
        let mut bomb = png(2, 2);
        bomb[16..20].copy_from_slice(&100_000u32.to_be_bytes());
        bomb[20..24].copy_from_slice(&100_000u32.to_be_bytes());
        let crc = crc32fast::hash(&bomb[12..29]);
        bomb[29..33].copy_from_slice(&crc.to_be_bytes());
        assert_eq!(
            p.run(&bomb, &mut out),
            Err(BadImage::TooLarge {
                width: 100_000,
                height: 100_000
            })
        );
    }

    #[test]
    fn truncated_jpegs_are_refused() {
        let img =
            image::RgbImage::from_fn(64, 48, |x, y| image::Rgb([x as u8 * 4, y as u8 * 5, 9]));
        let mut jpeg = Cursor::new(Vec::new());
        img.write_to(&mut jpeg, ImageFormat::Jpeg).unwrap();
        let jpeg = jpeg.into_inner();
        let mut p = Preprocessor::default();
        let mut out = vec![0f32; IMAGE_FLOATS];
        assert!(p.run(&jpeg, &mut out).is_ok());
        for cut in [jpeg.len() - 2, jpeg.len() * 2 / 3, 200] {
            assert!(
                matches!(p.run(&jpeg[..cut], &mut out), Err(BadImage::Decode(_))),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn output_is_normalised_chw() {
        let mut p = Preprocessor::default();
        let mut out = vec![f32::NAN; IMAGE_FLOATS];
        p.run(&png(224, 224), &mut out).unwrap();
        // The blue channel is 128 everywhere: (128/255 - 0.406) / 0.225.
        let blue = (128.0 / 255.0 - 0.406) / 0.225;
        let plane = INPUT_SIZE * INPUT_SIZE;
        assert!(out[2 * plane..].iter().all(|v| (v - blue).abs() < 0.02));
        assert!(out.iter().all(|v| v.is_finite()));
    }
}
