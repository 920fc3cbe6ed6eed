//! Utilities for doing the YUV -> RGB conversion
//! The images are encoded in the Y'CbCr format as detailed here: <https://en.wikipedia.org/wiki/YCbCr>
//! so need to be converted to RGB to be displayed
//! To do the YUV -> RGB conversion we need to first decide how to map the yuv values to the pixels
//! The y buffer is the same size as the pixel buffer so that maps 1-1 but the
//! u and v buffers are half the size of the pixel buffer so we need to scale it up
//! The simple way to upscale is just to take each u/v value and associate it with the 4
//! pixels around it e.g. for a 4x4 image:
//!
//! ||||||
//! |yyyy|
//! |yyyy|
//! |yyyy|
//! |yyyy|
//! ||||||
//!
//! |||||||
//! |uu|vv|
//! |uu|vv|
//! |||||||
//!
//! Then each of the 2x2 pixels would match the u/v from the same quadrant
//!
//! However fancy upsampling is the default for libwebp which does a little more work to make the values smoother
//! It interpolates u and v so that for e.g. the pixel 1 down and 1 from the left the u value
//! would be (9*u0 + 3*u1 + 3*u2 + u3 + 8) / 16 and similar for the other pixels
//! The edges are mirrored, so for the pixel 1 down and 0 from the left it uses (9*u0 + 3*u2 + 3*u0 + u2 + 8) / 16

/// `_mm_mulhi_epu16` emulation
fn mulhi(v: u8, coeff: u16) -> i32 {
    ((u32::from(v) * u32::from(coeff)) >> 8) as i32
}

/// This function has been rewritten to encourage auto-vectorization.
///
/// Based on [src/dsp/yuv.h](https://github.com/webmproject/libwebp/blob/8534f53960befac04c9631e6e50d21dcb42dfeaf/src/dsp/yuv.h#L79)
/// from the libwebp source.
/// ```text
/// const YUV_FIX2: i32 = 6;
/// const YUV_MASK2: i32 = (256 << YUV_FIX2) - 1;
/// fn clip(v: i32) -> u8 {
///     if (v & !YUV_MASK2) == 0 {
///         (v >> YUV_FIX2) as u8
///     } else if v < 0 {
///         0
///     } else {
///         255
///     }
/// }
/// ```
// Clippy suggests the clamp method, but it seems to optimize worse as of rustc 1.82.0 nightly.
#[allow(clippy::manual_clamp)]
fn clip(v: i32) -> u8 {
    const YUV_FIX2: i32 = 6;
    (v >> YUV_FIX2).max(0).min(255) as u8
}

#[inline(always)]
fn yuv_to_r(y: u8, v: u8) -> u8 {
    clip(mulhi(y, 19077) + mulhi(v, 26149) - 14234)
}

#[inline(always)]
fn yuv_to_g(y: u8, u: u8, v: u8) -> u8 {
    clip(mulhi(y, 19077) - mulhi(u, 6419) - mulhi(v, 13320) + 8708)
}

#[inline(always)]
fn yuv_to_b(y: u8, u: u8) -> u8 {
    clip(mulhi(y, 19077) + mulhi(u, 33050) - 17685)
}

/// Fills an rgb buffer with the image from the yuv buffers
/// Size of the buffer is assumed to be correct
/// BPP is short for bytes per pixel, allows both rgb and rgba to be decoded
pub(crate) fn fill_rgb_buffer_fancy<const BPP: usize>(
    buffer: &mut [u8],
    y_buffer: &[u8],
    u_buffer: &[u8],
    v_buffer: &[u8],
    width: usize,
    height: usize,
    buffer_width: usize,
) {
    // buffer width is always even so don't need to do div_ceil
    let chroma_buffer_width = buffer_width / 2;
    let chroma_width = width.div_ceil(2);

    // fill top row first since it only uses the top u/v row
    let top_row_y = &y_buffer[..width];
    let top_row_u = &u_buffer[..chroma_width];
    let top_row_v = &v_buffer[..chroma_width];
    let top_row_buffer = &mut buffer[..width * BPP];
    fill_row_fancy_with_1_uv_row::<BPP>(top_row_buffer, top_row_y, top_row_u, top_row_v);

    let mut main_row_chunks = buffer[width * BPP..].chunks_exact_mut(width * BPP * 2);
    // the y buffer iterator limits the end of the row iterator so we need this end index
    let end_y_index = height * buffer_width;
    let mut main_y_chunks = y_buffer[buffer_width..end_y_index].chunks_exact(buffer_width * 2);
    let mut main_u_windows = u_buffer
        .windows(chroma_buffer_width * 2)
        .step_by(chroma_buffer_width);
    let mut main_v_windows = v_buffer
        .windows(chroma_buffer_width * 2)
        .step_by(chroma_buffer_width);

    for (((row_buffer, y_rows), u_rows), v_rows) in (&mut main_row_chunks)
        .zip(&mut main_y_chunks)
        .zip(&mut main_u_windows)
        .zip(&mut main_v_windows)
    {
        let (u_row_1, u_row_2) = u_rows.split_at(chroma_buffer_width);
        let (v_row_1, v_row_2) = v_rows.split_at(chroma_buffer_width);
        let (row_buf_1, row_buf_2) = row_buffer.split_at_mut(width * BPP);
        let (y_row_1, y_row_2) = y_rows.split_at(buffer_width);
        fill_row_fancy_with_2_uv_rows::<BPP>(
            row_buf_1,
            &y_row_1[..width],
            &u_row_1[..chroma_width],
            &u_row_2[..chroma_width],
            &v_row_1[..chroma_width],
            &v_row_2[..chroma_width],
        );
        fill_row_fancy_with_2_uv_rows::<BPP>(
            row_buf_2,
            &y_row_2[..width],
            &u_row_2[..chroma_width],
            &u_row_1[..chroma_width],
            &v_row_2[..chroma_width],
            &v_row_1[..chroma_width],
        );
    }

    let final_row_buffer = main_row_chunks.into_remainder();

    // if the image has even height there will be one final row with only one u/v row matching it
    if !final_row_buffer.is_empty() {
        let final_y_row = main_y_chunks.remainder();

        let chroma_height = height.div_ceil(2);
        let start_chroma_index = (chroma_height - 1) * chroma_buffer_width;

        let final_u_row = &u_buffer[start_chroma_index..];
        let final_v_row = &v_buffer[start_chroma_index..];
        fill_row_fancy_with_1_uv_row::<BPP>(
            final_row_buffer,
            &final_y_row[..width],
            &final_u_row[..chroma_width],
            &final_v_row[..chroma_width],
        );
    }
}

/// Fills a row with the fancy interpolation as detailed
fn fill_row_fancy_with_2_uv_rows<const BPP: usize>(
    row_buffer: &mut [u8],
    y_row: &[u8],
    u_row_1: &[u8],
    u_row_2: &[u8],
    v_row_1: &[u8],
    v_row_2: &[u8],
) {
    // need to do left pixel separately since it will only have one u/v value
    {
        let rgb1 = &mut row_buffer[0..3];
        let y_value = y_row[0];
        // first pixel uses the first u/v as the main one
        let u_value = get_fancy_chroma_value(u_row_1[0], u_row_1[0], u_row_2[0], u_row_2[0]);
        let v_value = get_fancy_chroma_value(v_row_1[0], v_row_1[0], v_row_2[0], v_row_2[0]);
        set_pixel(rgb1, y_value, u_value, v_value);
    }

    let rest_row_buffer = &mut row_buffer[BPP..];
    let rest_y_row = &y_row[1..];

    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    let (rest_row_buffer, rest_y_row, u_row_1, u_row_2, v_row_1, v_row_2) = {
        let done = simd::fill_pairs::<BPP>(
            rest_row_buffer,
            rest_y_row,
            u_row_1,
            u_row_2,
            v_row_1,
            v_row_2,
        );
        (
            &mut rest_row_buffer[done * 2 * BPP..],
            &rest_y_row[done * 2..],
            &u_row_1[done..],
            &u_row_2[done..],
            &v_row_1[done..],
            &v_row_2[done..],
        )
    };

    // we do two pixels at a time since they share the same u/v values
    let mut main_row_chunks = rest_row_buffer.chunks_exact_mut(BPP * 2);
    let mut main_y_chunks = rest_y_row.chunks_exact(2);

    for (((((rgb, y_val), u_val_1), u_val_2), v_val_1), v_val_2) in (&mut main_row_chunks)
        .zip(&mut main_y_chunks)
        .zip(u_row_1.windows(2))
        .zip(u_row_2.windows(2))
        .zip(v_row_1.windows(2))
        .zip(v_row_2.windows(2))
    {
        {
            let rgb1 = &mut rgb[0..3];
            let y_value = y_val[0];
            // first pixel uses the first u/v as the main one
            let u_value = get_fancy_chroma_value(u_val_1[0], u_val_1[1], u_val_2[0], u_val_2[1]);
            let v_value = get_fancy_chroma_value(v_val_1[0], v_val_1[1], v_val_2[0], v_val_2[1]);
            set_pixel(rgb1, y_value, u_value, v_value);
        }
        {
            let rgb2 = &mut rgb[BPP..];
            let y_value = y_val[1];
            let u_value = get_fancy_chroma_value(u_val_1[1], u_val_1[0], u_val_2[1], u_val_2[0]);
            let v_value = get_fancy_chroma_value(v_val_1[1], v_val_1[0], v_val_2[1], v_val_2[0]);
            set_pixel(rgb2, y_value, u_value, v_value);
        }
    }

    let final_pixel = main_row_chunks.into_remainder();
    let final_y = main_y_chunks.remainder();

    if let (rgb, [y_value]) = (final_pixel, final_y) {
        let final_u_1 = *u_row_1.last().unwrap();
        let final_u_2 = *u_row_2.last().unwrap();

        let final_v_1 = *v_row_1.last().unwrap();
        let final_v_2 = *v_row_2.last().unwrap();

        let rgb1 = &mut rgb[0..3];
        // first pixel uses the first u/v as the main one
        let u_value = get_fancy_chroma_value(final_u_1, final_u_1, final_u_2, final_u_2);
        let v_value = get_fancy_chroma_value(final_v_1, final_v_1, final_v_2, final_v_2);
        set_pixel(rgb1, *y_value, u_value, v_value);
    }
}

fn fill_row_fancy_with_1_uv_row<const BPP: usize>(
    row_buffer: &mut [u8],
    y_row: &[u8],
    u_row: &[u8],
    v_row: &[u8],
) {
    // doing left pixel first
    {
        let rgb1 = &mut row_buffer[0..3];
        let y_value = y_row[0];

        let u_value = u_row[0];
        let v_value = v_row[0];
        set_pixel(rgb1, y_value, u_value, v_value);
    }

    // two pixels at a time since they share the same u/v value
    let mut main_row_chunks = row_buffer[BPP..].chunks_exact_mut(BPP * 2);
    let mut main_y_row_chunks = y_row[1..].chunks_exact(2);

    for (((rgb, y_val), u_val), v_val) in (&mut main_row_chunks)
        .zip(&mut main_y_row_chunks)
        .zip(u_row.windows(2))
        .zip(v_row.windows(2))
    {
        {
            let rgb1 = &mut rgb[0..3];
            let y_value = y_val[0];
            // first pixel uses the first u/v as the main one
            let u_value = get_fancy_chroma_value(u_val[0], u_val[1], u_val[0], u_val[1]);
            let v_value = get_fancy_chroma_value(v_val[0], v_val[1], v_val[0], v_val[1]);
            set_pixel(rgb1, y_value, u_value, v_value);
        }
        {
            let rgb2 = &mut rgb[BPP..];
            let y_value = y_val[1];
            let u_value = get_fancy_chroma_value(u_val[1], u_val[0], u_val[1], u_val[0]);
            let v_value = get_fancy_chroma_value(v_val[1], v_val[0], v_val[1], v_val[0]);
            set_pixel(rgb2, y_value, u_value, v_value);
        }
    }

    let final_pixel = main_row_chunks.into_remainder();
    let final_y = main_y_row_chunks.remainder();

    if let (rgb, [final_y]) = (final_pixel, final_y) {
        let final_u = *u_row.last().unwrap();
        let final_v = *v_row.last().unwrap();

        set_pixel(rgb, *final_y, final_u, final_v);
    }
}

#[inline]
fn get_fancy_chroma_value(main: u8, secondary1: u8, secondary2: u8, tertiary: u8) -> u8 {
    let val0 = u16::from(main);
    let val1 = u16::from(secondary1);
    let val2 = u16::from(secondary2);
    let val3 = u16::from(tertiary);
    ((9 * val0 + 3 * val1 + 3 * val2 + val3 + 8) / 16) as u8
}

#[inline]
fn set_pixel(rgb: &mut [u8], y: u8, u: u8, v: u8) {
    rgb[0] = yuv_to_r(y, v);
    rgb[1] = yuv_to_g(y, u, v);
    rgb[2] = yuv_to_b(y, u);
}

/// Simple conversion, not currently used but could add a config to allow for using the simple
#[allow(unused)]
pub(crate) fn fill_rgb_buffer_simple<const BPP: usize>(
    buffer: &mut [u8],
    y_buffer: &[u8],
    u_buffer: &[u8],
    v_buffer: &[u8],
    width: usize,
    chroma_width: usize,
    buffer_width: usize,
) {
    let u_row_twice_iter = u_buffer
        .chunks_exact(buffer_width / 2)
        .flat_map(|n| std::iter::repeat(n).take(2));
    let v_row_twice_iter = v_buffer
        .chunks_exact(buffer_width / 2)
        .flat_map(|n| std::iter::repeat(n).take(2));

    for (((row, y_row), u_row), v_row) in buffer
        .chunks_exact_mut(width * BPP)
        .zip(y_buffer.chunks_exact(buffer_width))
        .zip(u_row_twice_iter)
        .zip(v_row_twice_iter)
    {
        fill_rgba_row_simple::<BPP>(
            &y_row[..width],
            &u_row[..chroma_width],
            &v_row[..chroma_width],
            row,
        );
    }
}

fn fill_rgba_row_simple<const BPP: usize>(
    y_vec: &[u8],
    u_vec: &[u8],
    v_vec: &[u8],
    rgba: &mut [u8],
) {
    // Fill 2 pixels per iteration: these pixels share `u` and `v` components
    let mut rgb_chunks = rgba.chunks_exact_mut(BPP * 2);
    let mut y_chunks = y_vec.chunks_exact(2);
    let mut u_iter = u_vec.iter();
    let mut v_iter = v_vec.iter();

    for (((rgb, y), &u), &v) in (&mut rgb_chunks)
        .zip(&mut y_chunks)
        .zip(&mut u_iter)
        .zip(&mut v_iter)
    {
        let coeffs = [
            mulhi(v, 26149),
            mulhi(u, 6419),
            mulhi(v, 13320),
            mulhi(u, 33050),
        ];

        let get_r = |y: u8| clip(mulhi(y, 19077) + coeffs[0] - 14234);
        let get_g = |y: u8| clip(mulhi(y, 19077) - coeffs[1] - coeffs[2] + 8708);
        let get_b = |y: u8| clip(mulhi(y, 19077) + coeffs[3] - 17685);

        let rgb1 = &mut rgb[0..3];
        rgb1[0] = get_r(y[0]);
        rgb1[1] = get_g(y[0]);
        rgb1[2] = get_b(y[0]);

        let rgb2 = &mut rgb[BPP..];
        rgb2[0] = get_r(y[1]);
        rgb2[1] = get_g(y[1]);
        rgb2[2] = get_b(y[1]);
    }

    let remainder = rgb_chunks.into_remainder();
    if remainder.len() >= 3 {
        if let (Some(&y), Some(&u), Some(&v)) = (
            y_chunks.remainder().iter().next(),
            u_iter.next(),
            v_iter.next(),
        ) {
            let coeffs = [
                mulhi(v, 26149),
                mulhi(u, 6419),
                mulhi(v, 13320),
                mulhi(u, 33050),
            ];

            remainder[0] = clip(mulhi(y, 19077) + coeffs[0] - 14234);
            remainder[1] = clip(mulhi(y, 19077) - coeffs[1] - coeffs[2] + 8708);
            remainder[2] = clip(mulhi(y, 19077) + coeffs[3] - 17685);
        }
    }
}

// constants used for yuv -> rgb conversion, using ones from libwebp
const YUV_FIX: i32 = 16;
const YUV_HALF: i32 = 1 << (YUV_FIX - 1);

/// converts the whole image to yuv data and adds values on the end to make it match the macroblock sizes
/// downscales the u/v data as well so it's half the width and height of the y data
pub(crate) fn convert_image_yuv<const BPP: usize>(
    image_data: &[u8],
    width: u16,
    height: u16,
) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let width = usize::from(width);
    let height = usize::from(height);
    let mb_width = width.div_ceil(16);
    let mb_height = height.div_ceil(16);
    let y_size = 16 * mb_width * 16 * mb_height;
    let luma_width = 16 * mb_width;
    let chroma_width = 8 * mb_width;
    let chroma_size = 8 * mb_width * 8 * mb_height;
    let mut y_bytes = vec![0u8; y_size];
    let mut u_bytes = vec![0u8; chroma_size];
    let mut v_bytes = vec![0u8; chroma_size];

    // loop through two rows at a time so that we can calculate the average of the 2x2 pixels
    // for averaging for the chroma pixels when downscaling. An odd last row
    // or column is paired with itself, as libwebp does, so that it is
    // converted too (the pairs alone left it black).
    for cy in 0..height.div_ceil(2) {
        let row = |y: usize| &image_data[y * BPP * width..][..BPP * width];
        let (image_row_1, image_row_2) = (row(2 * cy), row((2 * cy + 1).min(height - 1)));
        let (y_row_1, y_row_2) =
            y_bytes[2 * cy * luma_width..][..2 * luma_width].split_at_mut(luma_width);
        let u_row = &mut u_bytes[cy * chroma_width..][..chroma_width];
        let v_row = &mut v_bytes[cy * chroma_width..][..chroma_width];

        for (((((row_1, row_2), y_pixels_1), y_pixels_2), u_pixel), v_pixel) in image_row_1
            .chunks_exact(BPP * 2)
            .zip(image_row_2.chunks_exact(BPP * 2))
            .zip(y_row_1.chunks_exact_mut(2))
            .zip(y_row_2.chunks_exact_mut(2))
            .zip(u_row.iter_mut())
            .zip(v_row.iter_mut())
        {
            let (rgb1, rgb2) = row_1.split_at(BPP);
            let (rgb3, rgb4) = row_2.split_at(BPP);

            y_pixels_1[0] = rgb_to_y(rgb1);
            y_pixels_1[1] = rgb_to_y(rgb2);
            y_pixels_2[0] = rgb_to_y(rgb3);
            y_pixels_2[1] = rgb_to_y(rgb4);

            *u_pixel = rgb_to_u_avg(rgb1, rgb2, rgb3, rgb4);
            *v_pixel = rgb_to_v_avg(rgb1, rgb2, rgb3, rgb4);
        }

        if width % 2 == 1 {
            let last = width - 1;
            let (rgb1, rgb3) = (
                &image_row_1[last * BPP..][..BPP],
                &image_row_2[last * BPP..][..BPP],
            );
            y_row_1[last] = rgb_to_y(rgb1);
            y_row_2[last] = rgb_to_y(rgb3);
            u_row[last / 2] = rgb_to_u_avg(rgb1, rgb1, rgb3, rgb3);
            v_row[last / 2] = rgb_to_v_avg(rgb1, rgb1, rgb3, rgb3);
        }
    }
    // Past the picture, up to whole macroblocks: its last column and row
    // repeated, as libwebp pads. Zeros there would be a sharp edge inside
    // the edge blocks, whose quantisation error rings into the picture.
    replicate_edges(&mut y_bytes, luma_width, width, height);
    replicate_edges(
        &mut u_bytes,
        chroma_width,
        width.div_ceil(2),
        height.div_ceil(2),
    );
    replicate_edges(
        &mut v_bytes,
        chroma_width,
        width.div_ceil(2),
        height.div_ceil(2),
    );

    (y_bytes, u_bytes, v_bytes)
}

/// `picture`'s planes in whole macroblocks, as `convert_image_yuv` lays
/// them out; `None` if the planes are shorter than their layout says.
pub(crate) fn macroblock_planes(picture: &crate::Yuv420) -> Option<(Vec<u8>, Vec<u8>, Vec<u8>)> {
    let (width, height) = (picture.width as usize, picture.height as usize);
    let (chroma_width, chroma_height) = (width.div_ceil(2), height.div_ceil(2));
    let stride = picture.stride;
    if stride % 2 == 1 || stride < width || picture.y.len() < stride * height {
        return None;
    }
    if picture.u.len() < stride / 2 * chroma_height || picture.v.len() < stride / 2 * chroma_height
    {
        return None;
    }
    let (mb_width, mb_height) = (width.div_ceil(16), height.div_ceil(16));
    let plane = |source: &[u8], source_stride: usize, w: usize, h: usize, mb: usize| {
        let stride = mb * mb_width;
        let mut plane = vec![0u8; stride * mb * mb_height];
        for (row, source) in plane
            .chunks_exact_mut(stride)
            .zip(source.chunks(source_stride))
            .take(h)
        {
            row[..w].copy_from_slice(&source[..w]);
        }
        replicate_edges(&mut plane, stride, w, h);
        plane
    };
    Some((
        plane(&picture.y, stride, width, height, 16),
        plane(&picture.u, stride / 2, chroma_width, chroma_height, 8),
        plane(&picture.v, stride / 2, chroma_width, chroma_height, 8),
    ))
}

/// Fills a plane of rows `stride` apart beyond its `width`×`height` picture
/// with the picture's last column, then its last row.
fn replicate_edges(plane: &mut [u8], stride: usize, width: usize, height: usize) {
    if width == 0 || height == 0 {
        return;
    }
    for row in plane.chunks_exact_mut(stride).take(height) {
        let last = row[width - 1];
        row[width..].fill(last);
    }
    let (picture, below) = plane.split_at_mut(height * stride);
    let last_row = &picture[(height - 1) * stride..];
    for row in below.chunks_exact_mut(stride) {
        row.copy_from_slice(last_row);
    }
}

pub(crate) fn convert_image_y<const BPP: usize>(
    image_data: &[u8],
    width: u16,
    height: u16,
) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let width = usize::from(width);
    let height = usize::from(height);
    let mb_width = width.div_ceil(16);
    let mb_height = height.div_ceil(16);
    let y_size = 16 * mb_width * 16 * mb_height;
    let luma_width = 16 * mb_width;
    let chroma_size = 8 * mb_width * 8 * mb_height;
    let mut y_bytes = vec![0u8; y_size];
    let u_bytes = vec![127u8; chroma_size];
    let v_bytes = vec![127u8; chroma_size];

    for (image_row, y_row) in image_data
        .chunks_exact(BPP * width)
        .zip(y_bytes.chunks_exact_mut(luma_width))
    {
        for (image_value, y_pixel) in image_row.chunks_exact(BPP).zip(y_row.iter_mut()) {
            *y_pixel = image_value[0];
        }
    }

    (y_bytes, u_bytes, v_bytes)
}

// values come from libwebp
// Y = 0.2568 * R + 0.5041 * G + 0.0979 * B + 16
// U = -0.1482 * R - 0.2910 * G + 0.4392 * B + 128
// V = 0.4392 * R - 0.3678 * G - 0.0714 * B + 128

// this is converted to 16 bit fixed point by multiplying by 2^16
// and shifting back

fn rgb_to_y(rgb: &[u8]) -> u8 {
    let luma = 16839 * i32::from(rgb[0]) + 33059 * i32::from(rgb[1]) + 6420 * i32::from(rgb[2]);
    ((luma + YUV_HALF + (16 << YUV_FIX)) >> YUV_FIX) as u8
}

// get the average of the four surrounding pixels
fn rgb_to_u_avg(rgb1: &[u8], rgb2: &[u8], rgb3: &[u8], rgb4: &[u8]) -> u8 {
    let u1 = rgb_to_u_raw(rgb1);
    let u2 = rgb_to_u_raw(rgb2);
    let u3 = rgb_to_u_raw(rgb3);
    let u4 = rgb_to_u_raw(rgb4);

    ((u1 + u2 + u3 + u4) >> (YUV_FIX + 2)) as u8
}

// get the average of the four surrounding pixels
fn rgb_to_v_avg(rgb1: &[u8], rgb2: &[u8], rgb3: &[u8], rgb4: &[u8]) -> u8 {
    let v1 = rgb_to_v_raw(rgb1);
    let v2 = rgb_to_v_raw(rgb2);
    let v3 = rgb_to_v_raw(rgb3);
    let v4 = rgb_to_v_raw(rgb4);

    ((v1 + v2 + v3 + v4) >> (YUV_FIX + 2)) as u8
}

fn rgb_to_u_raw(rgb: &[u8]) -> i32 {
    -9719 * i32::from(rgb[0]) - 19081 * i32::from(rgb[1])
        + 28800 * i32::from(rgb[2])
        + (128 << YUV_FIX)
}

fn rgb_to_v_raw(rgb: &[u8]) -> i32 {
    28800 * i32::from(rgb[0]) - 24116 * i32::from(rgb[1]) - 4684 * i32::from(rgb[2])
        + (128 << YUV_FIX)
}

/// Fancy upsampling and the conversion to RGB, 16 pixels at a time with
/// SIMD128 (edgeproxy patch): `fill_row_fancy_with_2_uv_rows`' loop over
/// pixel pairs, with the same arithmetic in lanes, bit for bit.
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
mod simd {
    use core::arch::wasm32::*;

    /// Pairs of pixels per step: 16 pixels, 9 chroma samples of each row.
    const PAIRS: usize = 8;

    /// Converts the leading pixel pairs of a row (after its first pixel) in
    /// steps of `PAIRS`; returns how many pairs it converted. The arguments
    /// are `fill_row_fancy_with_2_uv_rows`' after its first pixel.
    pub(super) fn fill_pairs<const BPP: usize>(
        rgb: &mut [u8],
        y: &[u8],
        u_row_1: &[u8],
        u_row_2: &[u8],
        v_row_1: &[u8],
        v_row_2: &[u8],
    ) -> usize {
        let pairs = (y.len() / 2)
            .min(rgb.len() / (2 * BPP))
            .min(u_row_1.len().saturating_sub(1));
        let mut done = 0;
        while done + PAIRS <= pairs {
            let j = done;
            let (u_first, u_second) = fancy(&u_row_1[j..j + PAIRS + 1], &u_row_2[j..j + PAIRS + 1]);
            let (v_first, v_second) = fancy(&v_row_1[j..j + PAIRS + 1], &v_row_2[j..j + PAIRS + 1]);
            let u = interleave(u_first, u_second);
            let v = interleave(v_first, v_second);
            let y = load16(&y[2 * j..2 * j + 16]);
            let [r, g, b] = to_rgb(y, u, v);
            store::<BPP>(&mut rgb[2 * j * BPP..(2 * j + 16) * BPP], r, g, b);
            done += PAIRS;
        }
        done
    }

    fn load8(bytes: &[u8]) -> v128 {
        u64x2(
            u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes")),
            0,
        )
    }

    fn load16(bytes: &[u8]) -> v128 {
        u64x2(
            u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes")),
            u64::from_le_bytes(bytes[8..16].try_into().expect("8 bytes")),
        )
    }

    /// `get_fancy_chroma_value` for the first and the second pixel of 8
    /// pairs, as u16 lanes: (9 main + 3 secondary1 + 3 secondary2 +
    /// tertiary + 8) / 16.
    fn fancy(row_1: &[u8], row_2: &[u8]) -> (v128, v128) {
        let a = u16x8_extend_low_u8x16(load8(&row_1[..8]));
        let b = u16x8_extend_low_u8x16(load8(&row_1[1..9]));
        let c = u16x8_extend_low_u8x16(load8(&row_2[..8]));
        let d = u16x8_extend_low_u8x16(load8(&row_2[1..9]));
        let weigh = |main, near1, near2, far| {
            let sum = i16x8_add(
                i16x8_add(
                    i16x8_mul(main, u16x8_splat(9)),
                    i16x8_mul(i16x8_add(near1, near2), u16x8_splat(3)),
                ),
                i16x8_add(far, u16x8_splat(8)),
            );
            u16x8_shr(sum, 4)
        };
        (weigh(a, b, c, d), weigh(b, a, d, c))
    }

    /// 16 u8 lanes: first0, second0, first1, second1, ...
    fn interleave(first: v128, second: v128) -> v128 {
        let first = u8x16_narrow_i16x8(first, first);
        let second = u8x16_narrow_i16x8(second, second);
        i8x16_shuffle::<0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23>(first, second)
    }

    /// `yuv_to_r`, `yuv_to_g` and `yuv_to_b` of 16 pixels.
    fn to_rgb(y: v128, u: v128, v: v128) -> [v128; 3] {
        let halves = |x: v128| [u16x8_extend_low_u8x16(x), u16x8_extend_high_u8x16(x)];
        let (y, u, v) = (halves(y), halves(u), halves(v));
        // mulhi: (x * coeff) >> 8, for the quarter q (4 lanes) of the 16.
        let mulhi = |x: &[v128; 2], q: usize, coeff: u16| {
            let half = x[q / 2];
            let product = if q % 2 == 0 {
                u32x4_extmul_low_u16x8(half, u16x8_splat(coeff))
            } else {
                u32x4_extmul_high_u16x8(half, u16x8_splat(coeff))
            };
            u32x4_shr(product, 8)
        };
        let clip =
            |x: v128| i32x4_min(i32x4_max(i32x4_shr(x, 6), i32x4_splat(0)), i32x4_splat(255));
        let mut out = [[i32x4_splat(0); 4]; 3];
        for q in 0..4 {
            let luma = mulhi(&y, q, 19077);
            out[0][q] = clip(i32x4_sub(
                i32x4_add(luma, mulhi(&v, q, 26149)),
                i32x4_splat(14234),
            ));
            out[1][q] = clip(i32x4_add(
                i32x4_sub(i32x4_sub(luma, mulhi(&u, q, 6419)), mulhi(&v, q, 13320)),
                i32x4_splat(8708),
            ));
            out[2][q] = clip(i32x4_sub(
                i32x4_add(luma, mulhi(&u, q, 33050)),
                i32x4_splat(17685),
            ));
        }
        // (Spelt out: `array::map`'s closure is left uninlined in the wasm build.)
        let bytes = |[q0, q1, q2, q3]: [v128; 4]| u8x16_narrow_i16x8(i16x8_narrow_i32x4(q0, q1), i16x8_narrow_i32x4(q2, q3));
        [bytes(out[0]), bytes(out[1]), bytes(out[2])]
    }

    /// 16 pixels of R, G and B lanes as RGB or RGBA bytes.
    fn store<const BPP: usize>(out: &mut [u8], r: v128, g: v128, b: v128) {
        let vectors: [v128; 4] = if BPP == 3 {
            // Bytes 0-15, 16-31 and 32-47 of r0 g0 b0 r1 g1 b1 ...
            let t0 = i8x16_shuffle::<0, 16, 0, 1, 17, 0, 2, 18, 0, 3, 19, 0, 4, 20, 0, 5>(r, g);
            let o0 =
                i8x16_shuffle::<0, 1, 16, 3, 4, 17, 6, 7, 18, 9, 10, 19, 12, 13, 20, 15>(t0, b);
            let t1 = i8x16_shuffle::<21, 0, 6, 22, 0, 7, 23, 0, 8, 24, 0, 9, 25, 0, 10, 26>(r, g);
            let o1 =
                i8x16_shuffle::<0, 21, 2, 3, 22, 5, 6, 23, 8, 9, 24, 11, 12, 25, 14, 15>(t1, b);
            let t2 =
                i8x16_shuffle::<0, 11, 27, 0, 12, 28, 0, 13, 29, 0, 14, 30, 0, 15, 31, 0>(r, g);
            let o2 =
                i8x16_shuffle::<26, 1, 2, 27, 4, 5, 28, 7, 8, 29, 10, 11, 30, 13, 14, 31>(t2, b);
            [o0, o1, o2, o2]
        } else {
            let a = u8x16_splat(255);
            let rg_low =
                i8x16_shuffle::<0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23>(r, g);
            let rg_high =
                i8x16_shuffle::<8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31>(r, g);
            let ba_low =
                i8x16_shuffle::<0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23>(b, a);
            let ba_high =
                i8x16_shuffle::<8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31>(b, a);
            [
                i16x8_shuffle::<0, 8, 1, 9, 2, 10, 3, 11>(rg_low, ba_low),
                i16x8_shuffle::<4, 12, 5, 13, 6, 14, 7, 15>(rg_low, ba_low),
                i16x8_shuffle::<0, 8, 1, 9, 2, 10, 3, 11>(rg_high, ba_high),
                i16x8_shuffle::<4, 12, 5, 13, 6, 14, 7, 15>(rg_high, ba_high),
            ]
        };
        for (chunk, vector) in out.chunks_exact_mut(16).zip(vectors) {
            chunk[..8].copy_from_slice(&u64x2_extract_lane::<0>(vector).to_le_bytes());
            chunk[8..].copy_from_slice(&u64x2_extract_lane::<1>(vector).to_le_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_fancy_grid() {
        #[rustfmt::skip]
        let y_buffer = [
            77, 162, 202, 185,
            28, 13, 199, 182,
            135, 147, 164, 135, 
            66, 27, 171, 130,
        ];

        #[rustfmt::skip]
        let u_buffer = [
            34, 101, 
            123, 163
        ];

        #[rustfmt::skip]
        let v_buffer = [
            97, 167,
            149, 23,
        ];

        let mut rgb_buffer = [0u8; 16 * 3];
        fill_rgb_buffer_fancy::<3>(&mut rgb_buffer, &y_buffer, &u_buffer, &v_buffer, 4, 4, 4);

        #[rustfmt::skip]
        let upsampled_u_buffer = [
            34, 51, 84, 101,
            56, 71, 101, 117,
            101, 112, 136, 148,
            123, 133, 153, 163,
        ];

        #[rustfmt::skip]
        let upsampled_v_buffer = [
            97, 115, 150, 167,
            110, 115, 126, 131,
            136, 117, 78, 59,
            149, 118, 55, 23,
        ];

        let mut upsampled_rgb_buffer = [0u8; 16 * 3];
        for (((rgb_val, y), u), v) in upsampled_rgb_buffer
            .chunks_exact_mut(3)
            .zip(y_buffer)
            .zip(upsampled_u_buffer)
            .zip(upsampled_v_buffer)
        {
            rgb_val[0] = yuv_to_r(y, v);
            rgb_val[1] = yuv_to_g(y, u, v);
            rgb_val[2] = yuv_to_b(y, u);
        }

        assert_eq!(rgb_buffer, upsampled_rgb_buffer);
    }

    #[test]
    fn test_yuv_conversions() {
        let (y, u, v) = (203, 40, 42);

        assert_eq!(yuv_to_r(y, v), 80);
        assert_eq!(yuv_to_g(y, u, v), 255);
        assert_eq!(yuv_to_b(y, u), 40);
    }
}
