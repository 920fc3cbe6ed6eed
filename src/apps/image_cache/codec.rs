//! Bytes to pixels and back. Formats are recognised by their magic bytes,
//! never by a `Content-Type` someone else wrote; sizes are read from the
//! header and checked before anything is allocated for the pixels.
//!
//! The codec crates are used directly: `png`, `zune-jpeg`, `image_webp`
//! (vaam-image-webp: image-rs's WebP decoder and lossless encoder with the
//! lossy VP8 encoder no image-webp release has yet, vendored with our speed
//! patches in vendor/vaam-image-webp) and `jpeg-encoder` (the
//! fastest and smallest pure-Rust JPEG encoder measured in wasm). The `image`
//! crate would add a colour-management engine whose tables tripled the
//! component's memory image.

use std::io::Cursor;

use super::raster::{Planes, Raster};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Png,
    Jpeg,
    Webp,
    /// Encoded only (avif.rs); never an original.
    Avif,
}

impl Kind {
    pub fn mime(self) -> &'static str {
        match self {
            Kind::Png => "image/png",
            Kind::Jpeg => "image/jpeg",
            Kind::Webp => "image/webp",
            Kind::Avif => "image/avif",
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
    } else if bytes.len() >= 12 && &bytes[4..8] == b"ftyp" && &bytes[8..12] == b"avif" {
        Some(Kind::Avif)
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

fn broken(e: impl std::fmt::Display) -> DecodeError {
    DecodeError::Broken(e.to_string())
}

/// Width, height and whether there is an alpha channel, from the header.
pub fn header(bytes: &[u8]) -> Result<(u32, u32, bool), DecodeError> {
    match sniff(bytes).ok_or(DecodeError::NotAnImage)? {
        // No AVIF decoder here (a pure-Rust one would be rav1d's size again).
        Kind::Avif => Err(DecodeError::NotAnImage),
        Kind::Png => {
            // The IHDR chunk only: `read_info` would already check the
            // declared size against the decoder's memory limit.
            let mut decoder = png_decoder(bytes, usize::MAX);
            let info = decoder.read_header_info().map_err(broken)?;
            // A palette's transparency (tRNS) comes later; such images are
            // treated as opaque when choosing a format, and flattened.
            let alpha = matches!(info.color_type, png::ColorType::Rgba | png::ColorType::GrayscaleAlpha);
            Ok((info.width, info.height, alpha))
        }
        Kind::Jpeg => {
            let mut decoder = jpeg_decoder(bytes);
            decoder.decode_headers().map_err(broken)?;
            let (w, h) = decoder.dimensions().ok_or_else(|| broken("no JPEG frame header"))?;
            Ok((w as u32, h as u32, false))
        }
        Kind::Webp => {
            let decoder = image_webp::WebPDecoder::new(Cursor::new(bytes)).map_err(broken)?;
            let (w, h) = decoder.dimensions();
            Ok((w, h, decoder.has_alpha()))
        }
    }
}

fn png_decoder(bytes: &[u8], max_bytes: usize) -> png::Decoder<Cursor<&[u8]>> {
    let mut decoder = png::Decoder::new_with_limits(Cursor::new(bytes), png::Limits { bytes: max_bytes });
    // Palettes and low bit depths to 8-bit RGB(A) or grey; 16-bit to 8.
    decoder.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
    decoder
}

/// On the heap: the decoder holds its Huffman tables inline (some 30 KiB),
/// and the core's stack is 64 KiB.
#[inline(never)]
fn jpeg_decoder(bytes: &[u8]) -> Box<zune_jpeg::JpegDecoder<zune_jpeg::zune_core::bytestream::ZCursor<&[u8]>>> {
    let options = zune_jpeg::zune_core::options::DecoderOptions::default().jpeg_set_out_colorspace(zune_jpeg::zune_core::colorspace::ColorSpace::RGB);
    Box::new(zune_jpeg::JpegDecoder::new_with_options(zune_jpeg::zune_core::bytestream::ZCursor::new(bytes), options))
}

/// The size `bytes`' header declares, if at most `max_pixels`, and the
/// memory its decoder may use: the pixels as RGBA8, plus the decoder's own
/// working memory.
fn checked_size(bytes: &[u8], max_pixels: u64) -> Result<(u32, u32, usize), DecodeError> {
    let (width, height, _) = header(bytes)?;
    if u64::from(width) * u64::from(height) > max_pixels || width == 0 || height == 0 {
        return Err(DecodeError::TooLarge(width, height));
    }
    Ok((width, height, (u64::from(width) * u64::from(height) * 4) as usize + (16 << 20)))
}

/// Decoded pixels, in the form the transform takes them.
#[derive(Debug)]
pub enum Decoded {
    /// An opaque lossy WebP's Y'CbCr planes, not yet converted.
    Planes(Planes),
    /// RGB or RGBA.
    Pixels(Raster),
}

/// [`decode`], or where `planes_will_do` and the image is an opaque lossy
/// WebP, its planes before the conversion to RGB.
pub fn decode_for(bytes: &[u8], max_pixels: u64, planes_will_do: bool) -> Result<Decoded, DecodeError> {
    if planes_will_do && sniff(bytes) == Some(Kind::Webp) {
        let (_, _, budget) = checked_size(bytes, max_pixels)?;
        let mut decoder = image_webp::WebPDecoder::new(Cursor::new(bytes)).map_err(broken)?;
        decoder.set_memory_limit(budget);
        if let Some(yuv) = decoder.read_yuv420().map_err(broken)? {
            return Ok(Decoded::Planes(Planes::new(yuv)));
        }
    }
    decode(bytes, max_pixels).map(Decoded::Pixels)
}

/// Decodes `bytes` if the header declares at most `max_pixels`.
pub fn decode(bytes: &[u8], max_pixels: u64) -> Result<Raster, DecodeError> {
    let (width, height, budget) = checked_size(bytes, max_pixels)?;
    match sniff(bytes).expect("header() sniffed it") {
        Kind::Avif => Err(DecodeError::NotAnImage),
        Kind::Png => {
            let mut reader = png_decoder(bytes, budget).read_info().map_err(broken)?;
            let size = reader.output_buffer_size().ok_or_else(|| broken("PNG too large"))?;
            let mut data = vec![0; size];
            let frame = reader.next_frame(&mut data).map_err(broken)?;
            data.truncate(frame.buffer_size());
            let channels = match frame.color_type {
                png::ColorType::Grayscale => {
                    data = data.iter().flat_map(|&v| [v, v, v]).collect();
                    3
                }
                png::ColorType::GrayscaleAlpha => {
                    data = data.chunks_exact(2).flat_map(|p| [p[0], p[0], p[0], p[1]]).collect();
                    4
                }
                png::ColorType::Rgb => 3,
                png::ColorType::Rgba => 4,
                png::ColorType::Indexed => return Err(broken("palette left unexpanded")),
            };
            Ok(Raster::new(frame.width, frame.height, channels, data))
        }
        Kind::Jpeg => {
            let mut decoder = jpeg_decoder(bytes);
            let data = decoder.decode().map_err(broken)?;
            if data.len() != width as usize * height as usize * 3 {
                return Err(broken("JPEG decoded to an unexpected size"));
            }
            Ok(Raster::new(width, height, 3, data))
        }
        Kind::Webp => {
            let mut decoder = image_webp::WebPDecoder::new(Cursor::new(bytes)).map_err(broken)?;
            decoder.set_memory_limit(budget);
            let size = decoder.output_buffer_size().ok_or_else(|| broken("WebP too large"))?;
            let mut data = vec![0; size];
            decoder.read_image(&mut data).map_err(broken)?;
            Ok(Raster::new(width, height, if decoder.has_alpha() { 4 } else { 3 }, data))
        }
    }
}

/// Whether `kind` at `quality` keeps chroma at half resolution (4:2:0),
/// so that [`encode_decoded`] writes it straight from [`Planes`]: lossy
/// WebP, and JPEG below quality 90 (jpeg-encoder's 4:4:4 threshold).
pub fn takes_planes(kind: Kind, quality: u8) -> bool {
    match kind {
        Kind::Jpeg => quality < 90,
        Kind::Webp => quality < 100,
        Kind::Png | Kind::Avif => false,
    }
}

/// [`encode`] for either form of pixels; planes are written as they are
/// where [`takes_planes`], else converted to RGB first.
pub fn encode_decoded(image: Decoded, kind: Kind, quality: u8, background: [u8; 4]) -> Result<Vec<u8>, String> {
    let planes = match image {
        Decoded::Planes(planes) if takes_planes(kind, quality) => planes,
        Decoded::Planes(planes) => return encode(planes.into_rgb(), kind, quality, background),
        Decoded::Pixels(raster) => return encode(raster, kind, quality, background),
    };
    let mut out = output_buffer(planes.width(), planes.height());
    if kind == Kind::Jpeg {
        jpeg_encoder::Encoder::new(&mut out, quality).encode_image(JfifPlanes::new(planes)?).map_err(|e| e.to_string())?;
    } else {
        let mut encoder = image_webp::WebPEncoder::new(&mut out);
        encoder.set_params(webp_params(quality));
        encoder.encode_yuv420(&planes.into_yuv420()).map_err(|e| e.to_string())?;
    }
    Ok(out)
}

/// An encoder's output, with room for a lossy one's bytes from the start:
/// grown by doubling, each step would be a copy (the wasm arena reuses
/// nothing), and room never written costs nothing.
fn output_buffer(width: u32, height: u32) -> Vec<u8> {
    Vec::with_capacity(width as usize * height as usize / 2)
}

/// Planes as a JPEG takes Y'CbCr (JFIF: the same BT.601 matrix, full range),
/// each chroma sample given for its 2x2 pixels, which the encoder's 4:2:0
/// subsampling then keeps as it is.
struct JfifPlanes {
    planes: Planes,
    width: u16,
    height: u16,
    /// Limited range (luma 16-235, chroma 16-240) to full, applied as the
    /// encoder takes each row.
    luma: [u8; 256],
    chroma: [u8; 256],
}

impl JfifPlanes {
    fn new(planes: Planes) -> Result<Self, String> {
        let (Ok(width), Ok(height)) = (u16::try_from(planes.width()), u16::try_from(planes.height())) else {
            return Err("JPEG cannot be wider or taller than 65535 pixels".into());
        };
        let table = |f: fn(f64) -> f64| -> [u8; 256] { std::array::from_fn(|v| f(v as f64).round().clamp(0.0, 255.0) as u8) };
        let (luma, chroma) = (table(|y| (y - 16.0) * 255.0 / 219.0), table(|c| (c - 128.0) * 255.0 / 224.0 + 128.0));
        Ok(JfifPlanes { planes, width, height, luma, chroma })
    }
}

impl jpeg_encoder::ImageBuffer for JfifPlanes {
    fn get_jpeg_color_type(&self) -> jpeg_encoder::JpegColorType {
        jpeg_encoder::JpegColorType::Ycbcr
    }

    fn width(&self) -> u16 {
        self.width
    }

    fn height(&self) -> u16 {
        self.height
    }

    fn fill_buffers(&self, y: u16, buffers: &mut [Vec<u8>; 4]) {
        let Planes { y: luma, u, v } = &self.planes;
        fn row(plane: &Raster, y: usize) -> &[u8] {
            &plane.data[y * plane.width as usize..][..plane.width as usize]
        }
        let (y, width) = (usize::from(y), usize::from(self.width));
        // Sized first and written by index: `extend` with a mapping pushed
        // byte by byte in the wasm build.
        let buffer = &mut buffers[0];
        let start = buffer.len();
        buffer.resize(start + width, 0);
        for (out, &v) in buffer[start..].iter_mut().zip(row(luma, y)) {
            *out = self.luma[usize::from(v)];
        }
        for (buffer, plane) in [(1, u), (2, v)] {
            let buffer = &mut buffers[buffer];
            let start = buffer.len();
            buffer.resize(start + width.next_multiple_of(2), 0);
            for (pair, &c) in buffer[start..].chunks_exact_mut(2).zip(row(plane, y / 2)) {
                let c = self.chroma[usize::from(c)];
                (pair[0], pair[1]) = (c, c);
            }
            buffer.truncate(start + width);
        }
    }
}

/// Encodes `raster` as `kind`. JPEG has no alpha: transparency is composed
/// over `background` first. `quality` (1-100) applies to JPEG and WebP.
pub fn encode(raster: Raster, kind: Kind, quality: u8, background: [u8; 4]) -> Result<Vec<u8>, String> {
    let mut out = output_buffer(raster.width, raster.height);
    match kind {
        Kind::Jpeg => {
            let raster = raster.flatten(background);
            let (w, h) = (u16::try_from(raster.width), u16::try_from(raster.height));
            let (Ok(w), Ok(h)) = (w, h) else { return Err("JPEG cannot be wider or taller than 65535 pixels".into()) };
            jpeg_encoder::Encoder::new(&mut out, quality).encode(&raster.data, w, h, jpeg_encoder::ColorType::Rgb).map_err(|e| e.to_string())?;
        }
        Kind::Png => {
            let mut encoder = png::Encoder::new(&mut out, raster.width, raster.height);
            encoder.set_color(if raster.has_alpha() { png::ColorType::Rgba } else { png::ColorType::Rgb });
            encoder.set_depth(png::BitDepth::Eight);
            encoder.set_compression(png::Compression::Fast);
            let mut writer = encoder.write_header().map_err(|e| e.to_string())?;
            writer.write_image_data(&raster.data).map_err(|e| e.to_string())?;
            writer.finish().map_err(|e| e.to_string())?;
        }
        // Opaque only: callers choose AVIF for opaque images (transform::output_kind).
        Kind::Avif => out = super::avif::encode(&raster.flatten(background), quality)?,
        Kind::Webp => {
            let color = if raster.has_alpha() { image_webp::ColorType::Rgba8 } else { image_webp::ColorType::Rgb8 };
            let mut encoder = image_webp::WebPEncoder::new(&mut out);
            encoder.set_params(webp_params(quality));
            encoder.encode(&raster.data, raster.width, raster.height, color).map_err(|e| e.to_string())?;
        }
    }
    Ok(out)
}

/// WebP at `quality`: lossless (VP8L) at 100, as Cloudflare's
/// `format=webp,quality=100`; lossy (VP8, alpha kept losslessly) below.
/// The encoder's own scale is steeper than libwebp's: its `50 + q/2` gave
/// the SSIM of libwebp's `q` on photographs, at about 1.1x the bytes
/// (docs/image-cache.md, "Formats"), so `quality` means what it means to
/// libwebp, Pillow and Cloudflare.
fn webp_params(quality: u8) -> image_webp::EncoderParams {
    let mut params = image_webp::EncoderParams::default();
    if quality < 100 {
        params.use_lossy = true;
        params.lossy_quality = 50 + quality.min(100) / 2;
    }
    params
}

/// The encoder and settings that make `kind` at `quality`: part of a
/// stored variant's name, so that another encoder, or another meaning of
/// its settings, never serves bytes stored under the old one.
pub fn encoding_name(kind: Kind, quality: u8) -> String {
    match kind {
        Kind::Jpeg => format!("jpeg-encoder-0.7/q{quality}"),
        Kind::Png => "png-0.18/fast".into(),
        Kind::Webp if quality >= 100 => "vaam-image-webp-0.1/vp8l".into(),
        // rd4: our patch's mode search (vendor/vaam-image-webp/PATCHES.md).
        Kind::Webp => format!("vaam-image-webp-0.1/vp8-rd4/q{}", webp_params(quality).lossy_quality),
        Kind::Avif => format!("rav1e-0.8/444/s{}/q{quality}", super::avif::SPEED),
    }
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

    /// A photo-like 161x121 test card: gradients under squares.
    fn card() -> Raster {
        let (w, h) = (161u32, 121u32);
        let data = (0..h)
            .flat_map(|y| (0..w).flat_map(move |x| {
                let square = if (x / 12 + y / 12) % 2 == 0 { 180 } else { 60 };
                [(square + x / 4) as u8, (y * 2) as u8, (255 - square - y / 3) as u8]
            }))
            .collect();
        Raster::new(w, h, 3, data)
    }

    #[test]
    fn an_odd_sized_lossy_webp_keeps_its_last_row_and_column() {
        // Smooth, so that every row and column should come back about as well.
        let (w, h) = (161usize, 121usize);
        let data = (0..h).flat_map(|y| (0..w).flat_map(move |x| [(x + y / 2) as u8, (y * 2) as u8, (250 - x) as u8])).collect();
        let source = Raster::new(w as u32, h as u32, 3, data);
        let back = decode(&encode(source.clone(), Kind::Webp, 90, [255; 4]).unwrap(), 1 << 20).unwrap();
        let diff = |pixels: &[(usize, usize)]| {
            let at = |r: &Raster, (x, y): (usize, usize)| r.data[(y * w + x) * 3..][..3].to_vec();
            pixels.iter().flat_map(|&p| at(&source, p).into_iter().zip(at(&back, p)).map(|(a, b)| f64::from(a.abs_diff(b)))).sum::<f64>() / (pixels.len() * 3) as f64
        };
        let edges: Vec<_> = (0..h).map(|y| (w - 1, y)).chain((0..w).map(|x| (x, h - 1))).collect();
        let inside: Vec<_> = (0..h - 1).flat_map(|y| (0..w - 1).map(move |x| (x, y))).collect();
        let (edges, inside) = (diff(&edges), diff(&inside));
        assert!(edges < 2.0 * inside + 1.0, "mean |diff| {edges} on the last column and row, {inside} inside");
    }

    #[test]
    fn an_opaque_lossy_webp_is_resized_as_planes_and_encoded_as_well_as_from_rgb() {
        let lossy = encode(card(), Kind::Webp, 80, [255; 4]).unwrap();
        let Ok(Decoded::Planes(planes)) = decode_for(&lossy, 1 << 20, true) else { panic!("planes for an opaque lossy WebP") };
        let pixels = decode(&lossy, 1 << 20).unwrap();
        assert_eq!(planes.clone().into_rgb(), pixels, "unresized, the very pixels decode() gives");
        let mean_diff = |a: &Raster, b: &Raster| a.data.iter().zip(&b.data).map(|(a, b)| f64::from(a.abs_diff(*b))).sum::<f64>() / a.data.len() as f64;
        // Odd sizes and an off-centre box: the chroma box must follow the luma's.
        for (out, window, focus) in [((75, 53), (140.0, 99.0), (0.3, 0.7)), ((160, 120), (161.0, 121.0), (0.5, 0.5)), ((30, 31), (121.0, 121.0), (1.0, 0.0))] {
            // Both encoders keep chroma at half resolution: from planes it is
            // resized once, from RGB upsampled, resized and averaged again.
            let ideal = pixels.clone().resize(out, window, focus);
            for kind in [Kind::Jpeg, Kind::Webp] {
                let roundtrip = |image| decode(&encode_decoded(image, kind, 80, [255; 4]).unwrap(), 1 << 20).unwrap();
                let from_planes = roundtrip(Decoded::Planes(planes.clone().resize(out, window, focus)));
                let from_rgb = roundtrip(Decoded::Pixels(ideal.clone()));
                assert_eq!((from_planes.width, from_planes.height), out);
                let (ours, theirs) = (mean_diff(&from_planes, &ideal), mean_diff(&from_rgb, &ideal));
                assert!(ours < theirs + 0.5, "{kind:?} {out:?}: mean |diff| from planes {ours}, from RGB {theirs}");
            }
        }
        assert!(matches!(decode_for(&lossy, 1 << 20, false), Ok(Decoded::Pixels(_))), "planes only when they will do");
        let lossless = encode(card(), Kind::Webp, 100, [255; 4]).unwrap();
        assert!(matches!(decode_for(&lossless, 1 << 20, true), Ok(Decoded::Pixels(_))), "lossless WebP is RGB already");
        let transparent = encode(card().with_alpha(), Kind::Webp, 80, [255; 4]).unwrap();
        assert!(matches!(decode_for(&transparent, 1 << 20, true), Ok(Decoded::Pixels(p)) if p.has_alpha()));
        assert_eq!(decode_for(&lossy, 100, true).err(), Some(DecodeError::TooLarge(161, 121)), "the pixel cap holds");
    }

    /// The WebP chunk after `RIFF....WEBP` (and after `VP8X` when there is alpha).
    fn webp_chunks(bytes: &[u8]) -> Vec<String> {
        let mut chunks = Vec::new();
        let mut at = 12;
        while at + 8 <= bytes.len() {
            chunks.push(String::from_utf8_lossy(&bytes[at..at + 4]).into_owned());
            let len = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().unwrap()) as usize;
            at += 8 + len + (len & 1);
        }
        chunks
    }

    #[test]
    fn webp_is_lossy_vp8_below_quality_100_and_lossless_vp8l_at_100() {
        let opaque = Raster::filled(64, 48, 3, &[10, 200, 30]);
        assert_eq!(webp_chunks(&encode(opaque.clone(), Kind::Webp, 80, [255; 4]).unwrap()), ["VP8 "]);
        assert_eq!(webp_chunks(&encode(opaque, Kind::Webp, 100, [255; 4]).unwrap()), ["VP8L"]);
        let transparent = Raster::filled(64, 48, 4, &[10, 200, 30, 128]);
        let lossy = encode(transparent, Kind::Webp, 80, [255; 4]).unwrap();
        assert_eq!(webp_chunks(&lossy), ["VP8X", "ALPH", "VP8 "], "lossy colour, alpha kept");
        assert_eq!(decode(&lossy, 1 << 20).unwrap().data[3], 128);
    }

    #[test]
    fn avif_is_an_avif_file_of_the_pictures_size() {
        let bytes = encode(Raster::filled(64, 48, 3, &[10, 200, 30]), Kind::Avif, 60, [255; 4]).unwrap();
        assert_eq!(sniff(&bytes), Some(Kind::Avif));
        assert_eq!(&bytes[4..12], b"ftypavif");
        let ispe = bytes.windows(4).position(|w| w == b"ispe").expect("an ispe box");
        let size = |at: usize| u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap());
        assert_eq!((size(ispe + 8), size(ispe + 12)), (64, 48));
        assert_eq!(decode(&bytes, 1 << 20), Err(DecodeError::NotAnImage), "never decoded");
    }

    #[test]
    fn each_encoders_settings_name_its_variants() {
        assert_ne!(encoding_name(Kind::Webp, 80), encoding_name(Kind::Webp, 100));
        assert_ne!(encoding_name(Kind::Webp, 80), encoding_name(Kind::Webp, 70));
        assert_eq!(encoding_name(Kind::Webp, 80), "vaam-image-webp-0.1/vp8-rd4/q90");
        assert_ne!(encoding_name(Kind::Jpeg, 80), encoding_name(Kind::Jpeg, 85));
    }

    #[test]
    fn a_header_over_the_pixel_cap_is_refused_before_decoding() {
        let bytes = encode(Raster::filled(100, 100, 3, &[0, 0, 0]), Kind::Png, 80, [255; 4]).unwrap();
        assert_eq!(decode(&bytes, 9_999), Err(DecodeError::TooLarge(100, 100)));
        assert_eq!(decode(b"<html>", 1 << 20), Err(DecodeError::NotAnImage));
        assert!(matches!(decode(&bytes[..bytes.len() / 2], 1 << 20), Err(DecodeError::Broken(_))));
    }
}
