//! AVIF: one AV1 still picture from rav1e, in the container its project's
//! avif-serialize writes. As ravif (rav1e's own AVIF wrapper) encodes 8-bit
//! RGB: YCbCr with BT.601's matrix, full range, 4:4:4 (avif-serialize's
//! author advises against subsampling AVIF), and ravif's mapping from
//! `quality` to rav1e's quantizer. ravif itself is not used: on the core's
//! target it turns on rav1e's wasm-bindgen glue.

use rav1e::prelude::*;

use super::raster::Raster;

/// rav1e's fastest preset: an 800×600 picture still takes about half a
/// second natively (docs/image-cache.md, "Formats").
pub const SPEED: u8 = 10;

/// The AVIF of an opaque `raster` at `quality` (1-100).
pub fn encode(raster: &Raster, quality: u8) -> Result<Vec<u8>, String> {
    let (width, height) = (raster.width as usize, raster.height as usize);
    let channels = raster.channels;
    let quantizer = quantizer(quality);
    let config = Config::new().with_encoder_config(EncoderConfig {
        width,
        height,
        bit_depth: 8,
        chroma_sampling: ChromaSampling::Cs444,
        pixel_range: PixelRange::Full,
        color_description: Some(ColorDescription {
            transfer_characteristics: TransferCharacteristics::SRGB,
            color_primaries: ColorPrimaries::BT709,
            matrix_coefficients: MatrixCoefficients::BT601,
        }),
        still_picture: true,
        quantizer,
        min_quantizer: u8::try_from(quantizer).unwrap_or(u8::MAX),
        tune: Tune::Psychovisual,
        ..EncoderConfig::with_speed_preset(SPEED)
    });
    let mut context: Context<u8> = config.new_context().map_err(|e| format!("rav1e: {e}"))?;
    let mut frame = context.new_frame();
    let mut planes = [vec![0u8; width * height], vec![0u8; width * height], vec![0u8; width * height]];
    for (i, pixel) in raster.data.chunks_exact(channels).enumerate() {
        let (r, g, b) = (f32::from(pixel[0]), f32::from(pixel[1]), f32::from(pixel[2]));
        let to_u8 = |v: f32| v.round().clamp(0.0, 255.0) as u8;
        planes[0][i] = to_u8(0.299 * r + 0.587 * g + 0.114 * b);
        planes[1][i] = to_u8(128.0 - 0.168_736 * r - 0.331_264 * g + 0.5 * b);
        planes[2][i] = to_u8(128.0 + 0.5 * r - 0.418_688 * g - 0.081_312 * b);
    }
    for (plane, data) in frame.planes.iter_mut().zip(&planes) {
        plane.copy_from_raw_u8(data, width, 1);
    }
    context.send_frame(frame).map_err(|e| format!("rav1e: {e}"))?;
    context.flush();
    let mut av1 = Vec::new();
    // As ravif reads them: the key frame's packets, until rav1e says it is done.
    loop {
        match context.receive_packet() {
            Ok(mut packet) if packet.frame_type == FrameType::KEY => av1.append(&mut packet.data),
            Ok(_) => continue,
            Err(EncoderStatus::Encoded | EncoderStatus::LimitReached) => break,
            Err(e) => return Err(format!("rav1e: {e}")),
        }
    }
    let mut container = avif_serialize::Aviffy::new();
    container.set_matrix_coefficients(avif_serialize::constants::MatrixCoefficients::Bt601).set_full_color_range(true);
    Ok(container.to_vec(&av1, None, raster.width, raster.height, 8))
}

/// ravif's mapping from `quality` (1-100) to rav1e's quantizer (0-255).
fn quantizer(quality: u8) -> usize {
    let q = f32::from(quality.clamp(1, 100)) / 100.0;
    let x = if q >= 0.82 { (1.0 - q) * 2.6 } else if q > 0.25 { q.mul_add(-0.5, 1.0 - 0.125) } else { 1.0 - q };
    (x * 255.0).round() as usize
}
