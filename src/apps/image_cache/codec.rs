//! Bytes to pixels and back. Formats are recognised by their magic bytes,
//! never by a `Content-Type` someone else wrote; sizes are read from the
//! header and checked before anything is allocated for the pixels.
//!
//! Decoding: PNG, JPEG (zune-jpeg) and WebP, lossy and lossless (image-webp),
//! all through the `image` crate. Encoding: JPEG with `jpeg-encoder` (the
//! fastest and smallest pure-Rust encoder measured), PNG, and lossless WebP
//! (no released pure-Rust crate encodes lossy WebP).

use std::io::Cursor;

use image::{ImageDecoder, ImageEncoder, ImageFormat, ImageReader};

use super::raster::Raster;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Png,
    Jpeg,
    Webp,
}

impl Kind {
    pub fn mime(self) -> &'static str {
        match self {
            Kind::Png => "image/png",
            Kind::Jpeg => "image/jpeg",
            Kind::Webp => "image/webp",
        }
    }

    fn format(self) -> ImageFormat {
        match self {
            Kind::Png => ImageFormat::Png,
            Kind::Jpeg => ImageFormat::Jpeg,
            Kind::Webp => ImageFormat::WebP,
        }
    }
}

/// The image format of `bytes`, by magic number.
pub fn sniff(bytes: &[u8]) -> Option<Kind> {
    if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some(Kind::Png)
    } else if bytes.starts_with(&[0xff, 0xd8, 0xff]) {
        Some(Kind::Jpeg)
    } else if bytes.len() >= 12 && &bytes[..4] == b"RIFF" && &bytes[8..12] == b"WEBP" {
        Some(Kind::Webp)
    } else {
        None
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// Not PNG, JPEG or WebP.
    NotAnImage,
    /// The header declares more pixels than allowed: `(width, height)`.
    TooLarge(u32, u32),
    /// Truncated or corrupt.
    Broken(String),
}

/// Width and height from the header alone.
pub fn dimensions(bytes: &[u8]) -> Result<(u32, u32), DecodeError> {
    let kind = sniff(bytes).ok_or(DecodeError::NotAnImage)?;
    ImageReader::with_format(Cursor::new(bytes), kind.format()).into_dimensions().map_err(|e| DecodeError::Broken(e.to_string()))
}

/// Width, height and whether there is an alpha channel, from the header.
pub fn header(bytes: &[u8]) -> Result<(u32, u32, bool), DecodeError> {
    let kind = sniff(bytes).ok_or(DecodeError::NotAnImage)?;
    let decoder = ImageReader::with_format(Cursor::new(bytes), kind.format()).into_decoder().map_err(|e| DecodeError::Broken(e.to_string()))?;
    let (width, height) = decoder.dimensions();
    Ok((width, height, decoder.color_type().has_alpha()))
}

/// Decodes `bytes` if the header declares at most `max_pixels`.
pub fn decode(bytes: &[u8], max_pixels: u64) -> Result<Raster, DecodeError> {
    let kind = sniff(bytes).ok_or(DecodeError::NotAnImage)?;
    let (width, height) = dimensions(bytes)?;
    if u64::from(width) * u64::from(height) > max_pixels || width == 0 || height == 0 {
        return Err(DecodeError::TooLarge(width, height));
    }
    let broken = |e: image::ImageError| DecodeError::Broken(e.to_string());
    let mut reader = ImageReader::with_format(Cursor::new(bytes), kind.format());
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(width);
    limits.max_image_height = Some(height);
    // The pixels, as RGBA8, plus the decoder's own working memory.
    limits.max_alloc = Some(u64::from(width) * u64::from(height) * 4 * 2 + (16 << 20));
    reader.limits(limits);
    let decoder = reader.into_decoder().map_err(broken)?;
    let has_alpha = decoder.color_type().has_alpha();
    let image = image::DynamicImage::from_decoder(decoder).map_err(broken)?;
    Ok(if has_alpha {
        let rgba = image.into_rgba8();
        Raster::new(width, height, 4, rgba.into_raw())
    } else {
        let rgb = image.into_rgb8();
        Raster::new(width, height, 3, rgb.into_raw())
    })
}

/// Encodes `raster` as `kind`. JPEG has no alpha: transparency is composed
/// over `background` first. `quality` applies to JPEG only.
pub fn encode(raster: Raster, kind: Kind, quality: u8, background: [u8; 4]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    match kind {
        Kind::Jpeg => {
            let raster = raster.flatten(background);
            let (w, h) = (u16::try_from(raster.width), u16::try_from(raster.height));
            let (Ok(w), Ok(h)) = (w, h) else { return Err("JPEG cannot be wider or taller than 65535 pixels".into()) };
            jpeg_encoder::Encoder::new(&mut out, quality).encode(&raster.data, w, h, jpeg_encoder::ColorType::Rgb).map_err(|e| e.to_string())?;
        }
        Kind::Png => {
            let encoder = image::codecs::png::PngEncoder::new_with_quality(&mut out, image::codecs::png::CompressionType::Fast, image::codecs::png::FilterType::Adaptive);
            encoder.write_image(&raster.data, raster.width, raster.height, color_type(&raster)).map_err(|e| e.to_string())?;
        }
        Kind::Webp => {
            let encoder = image::codecs::webp::WebPEncoder::new_lossless(&mut out);
            encoder.write_image(&raster.data, raster.width, raster.height, color_type(&raster)).map_err(|e| e.to_string())?;
        }
    }
    Ok(out)
}

fn color_type(raster: &Raster) -> image::ExtendedColorType {
    if raster.has_alpha() { image::ExtendedColorType::Rgba8 } else { image::ExtendedColorType::Rgb8 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_encoding_decodes_back_to_its_size_and_kind() {
        let raster = Raster::filled(33, 17, 3, &[10, 200, 30]);
        for kind in [Kind::Jpeg, Kind::Png, Kind::Webp] {
            let bytes = encode(raster.clone(), kind, 80, [255; 4]).unwrap();
            assert_eq!(sniff(&bytes), Some(kind));
            let back = decode(&bytes, 1 << 20).unwrap();
            assert_eq!((back.width, back.height), (33, 17), "{kind:?}");
        }
    }

    #[test]
    fn a_header_over_the_pixel_cap_is_refused_before_decoding() {
        let bytes = encode(Raster::filled(100, 100, 3, &[0, 0, 0]), Kind::Png, 80, [255; 4]).unwrap();
        assert_eq!(decode(&bytes, 9_999), Err(DecodeError::TooLarge(100, 100)));
        assert_eq!(decode(b"<html>", 1 << 20), Err(DecodeError::NotAnImage));
        assert!(matches!(decode(&bytes[..bytes.len() / 2], 1 << 20), Err(DecodeError::Broken(_))));
    }
}
