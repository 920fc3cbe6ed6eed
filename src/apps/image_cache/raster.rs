//! Decoded pixels and every operation on them: geometry (`fit`, `gravity`),
//! resizing (fast_image_resize, Lanczos3, SIMD on wasm), and the pixel
//! filters. Filters follow Pillow's definitions, so that Pillow can serve as
//! the independent reference in the tests (tests/fixtures/images/reference.py).

use fast_image_resize as fr;

use super::options::{Fit, Flip, Gravity};

/// 8-bit pixels, 3 (RGB) or 4 (RGBA) channels (1 for a plane of
/// [`Planes`]), rows top to bottom.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Raster {
    pub width: u32,
    pub height: u32,
    pub channels: usize,
    pub data: Vec<u8>,
}

/// How a resize maps the source onto the output.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Geometry {
    pub out_width: u32,
    pub out_height: u32,
    /// The part of the source that is scaled to fill the output (or, with
    /// `pad`, the inner box): all of it unless `cover`/`crop` cut it.
    pub window: (f64, f64),
    /// `pad`: the scaled image's size inside the output.
    pub inner: Option<(u32, u32)>,
}

/// The output geometry for a `sw`×`sh` source, Cloudflare's `fit` rules.
/// With one side given, the other keeps the source's aspect ratio.
pub fn geometry(sw: u32, sh: u32, width: Option<u32>, height: Option<u32>, fit: Fit) -> Geometry {
    let (swf, shf) = (f64::from(sw), f64::from(sh));
    let identity = Geometry { out_width: sw, out_height: sh, window: (swf, shf), inner: None };
    let (w, h) = match (width, height) {
        (Some(w), Some(h)) => (f64::from(w), f64::from(h)),
        (Some(w), None) => (f64::from(w), (f64::from(w) * shf / swf).round().max(1.0)),
        (None, Some(h)) => ((f64::from(h) * swf / shf).round().max(1.0), f64::from(h)),
        (None, None) => return identity,
    };
    let px = |v: f64| v.round().max(1.0) as u32;
    let scaled = |s: f64| Geometry { out_width: px(swf * s), out_height: px(shf * s), window: (swf, shf), inner: None };
    match fit {
        Fit::ScaleDown => scaled((w / swf).min(h / shf).min(1.0)),
        Fit::Contain => scaled((w / swf).min(h / shf)),
        Fit::Squeeze => Geometry { out_width: px(w), out_height: px(h), window: (swf, shf), inner: None },
        Fit::Cover => {
            let s = (w / swf).max(h / shf);
            Geometry { out_width: px(w), out_height: px(h), window: ((w / s).min(swf), (h / s).min(shf)), inner: None }
        }
        Fit::Crop => {
            let s = (w / swf).max(h / shf).min(1.0);
            let (ow, oh) = (px(w).min(px(swf * s)), px(h).min(px(shf * s)));
            Geometry { out_width: ow, out_height: oh, window: ((f64::from(ow) / s).min(swf), (f64::from(oh) / s).min(shf)), inner: None }
        }
        Fit::Pad => {
            let s = (w / swf).min(h / shf);
            Geometry { out_width: px(w), out_height: px(h), window: (swf, shf), inner: Some((px(swf * s), px(shf * s))) }
        }
    }
}

impl Raster {
    pub fn new(width: u32, height: u32, channels: usize, data: Vec<u8>) -> Raster {
        debug_assert_eq!(data.len(), width as usize * height as usize * channels);
        Raster { width, height, channels, data }
    }

    pub fn filled(width: u32, height: u32, channels: usize, pixel: &[u8]) -> Raster {
        Raster::new(width, height, channels, pixel[..channels].repeat(width as usize * height as usize))
    }

    pub fn has_alpha(&self) -> bool {
        self.channels == 4
    }

    /// The image with an alpha channel (opaque where there was none).
    pub fn with_alpha(self) -> Raster {
        if self.has_alpha() {
            return self;
        }
        let data = self.data.chunks_exact(3).flat_map(|p| [p[0], p[1], p[2], 255]).collect();
        Raster::new(self.width, self.height, 4, data)
    }

    /// Composes transparency over `background` and drops the alpha channel.
    pub fn flatten(self, background: [u8; 4]) -> Raster {
        if !self.has_alpha() {
            return self;
        }
        let blend = |c: u8, a: u8, b: u8| ((u32::from(c) * u32::from(a) + u32::from(b) * (255 - u32::from(a)) + 127) / 255) as u8;
        let data = self.data.chunks_exact(4).flat_map(|p| [blend(p[0], p[3], background[0]), blend(p[1], p[3], background[1]), blend(p[2], p[3], background[2])]).collect();
        Raster::new(self.width, self.height, 3, data)
    }

    /// `None` if the cut leaves nothing.
    pub fn trim(self, [top, right, bottom, left]: [u32; 4]) -> Option<Raster> {
        let width = self.width.checked_sub(left.checked_add(right)?).filter(|w| *w > 0)?;
        let height = self.height.checked_sub(top.checked_add(bottom)?).filter(|h| *h > 0)?;
        Some(self.cut(left, top, width, height))
    }

    fn cut(&self, left: u32, top: u32, width: u32, height: u32) -> Raster {
        let c = self.channels;
        let stride = self.width as usize * c;
        let mut data = Vec::with_capacity(width as usize * height as usize * c);
        for y in top..top + height {
            let start = y as usize * stride + left as usize * c;
            data.extend_from_slice(&self.data[start..start + width as usize * c]);
        }
        Raster::new(width, height, c, data)
    }

    pub fn flip(mut self, flip: Flip) -> Raster {
        let (w, h, c) = (self.width as usize, self.height as usize, self.channels);
        if matches!(flip, Flip::Horizontal | Flip::Both) {
            for row in self.data.chunks_exact_mut(w * c) {
                for x in 0..w / 2 {
                    for k in 0..c {
                        row.swap(x * c + k, (w - 1 - x) * c + k);
                    }
                }
            }
        }
        if matches!(flip, Flip::Vertical | Flip::Both) {
            for y in 0..h / 2 {
                let (upper, lower) = self.data.split_at_mut((h - 1 - y) * w * c);
                upper[y * w * c..(y + 1) * w * c].swap_with_slice(&mut lower[..w * c]);
            }
        }
        self
    }

    /// Clockwise by 90, 180 or 270 degrees.
    pub fn rotate(self, degrees: u16) -> Raster {
        let (w, h, c) = (self.width as usize, self.height as usize, self.channels);
        let (nw, nh) = if degrees == 180 { (w, h) } else { (h, w) };
        let source = |nx: usize, ny: usize| match degrees {
            90 => (ny, h - 1 - nx),
            180 => (w - 1 - nx, h - 1 - ny),
            _ => (w - 1 - ny, nx),
        };
        if degrees == 0 {
            return self;
        }
        let mut data = Vec::with_capacity(self.data.len());
        for ny in 0..nh {
            for nx in 0..nw {
                let (x, y) = source(nx, ny);
                let at = (y * w + x) * c;
                data.extend_from_slice(&self.data[at..at + c]);
            }
        }
        Raster::new(nw as u32, nh as u32, c, data)
    }

    /// The fractions of the overflow cut from the left and top that
    /// `gravity` asks for; `auto` keeps the busiest part of the image.
    pub fn focus(&self, gravity: Gravity, window: (f64, f64)) -> (f64, f64) {
        fixed_focus(gravity).unwrap_or_else(|| {
            let (columns, rows) = self.edge_energy();
            (busiest(&columns, window.0), busiest(&rows, window.1))
        })
    }

    /// Sums of absolute luminance differences per column and per row.
    fn edge_energy(&self) -> (Vec<f64>, Vec<f64>) {
        let (w, h, c) = (self.width as usize, self.height as usize, self.channels);
        let luma = |x: usize, y: usize| {
            let p = &self.data[(y * w + x) * c..];
            (u32::from(p[0]) * 299 + u32::from(p[1]) * 587 + u32::from(p[2]) * 114) as f64 / 1000.0
        };
        let (mut columns, mut rows) = (vec![0.0; w], vec![0.0; h]);
        // Every other pixel is plenty to find where the detail is.
        for y in (1..h).step_by(2) {
            for x in (1..w).step_by(2) {
                let here = luma(x, y);
                let e = (here - luma(x - 1, y)).abs() + (here - luma(x, y - 1)).abs();
                columns[x] += e;
                rows[y] += e;
            }
        }
        (columns, rows)
    }

    /// Scales `window` (a box of the source placed by `focus`) to `out`.
    pub fn resize(self, out: (u32, u32), window: (f64, f64), focus: (f64, f64)) -> Raster {
        let area = place(self.width, self.height, window, focus);
        self.resize_box(out, area)
    }

    /// Scales the box `(left, top, width, height)` to `out`. A large
    /// reduction is done in two steps, as Pillow's `thumbnail` does
    /// (`reducing_gap`): a box filter down to at least [`REDUCING_GAP`]
    /// times the output, then Lanczos3. Lanczos3's work grows with the
    /// reduction (its kernel spans 6 source pixels per output pixel per
    /// axis, times the scale); the box filter's is one read per source pixel.
    fn resize_box(self, out: (u32, u32), (left, top, width, height): (f64, f64, f64, f64)) -> Raster {
        if out == (self.width, self.height) && (width, height) == (f64::from(self.width), f64::from(self.height)) {
            return self;
        }
        let reduction = (width / f64::from(out.0)).min(height / f64::from(out.1));
        if reduction >= 2.0 * REDUCING_GAP {
            let factor = (reduction / REDUCING_GAP).floor();
            let between = ((width / factor).round() as u32, (height / factor).round() as u32);
            let reduced = self.scale(between, (left, top, width, height), fr::FilterType::Box);
            return reduced.scale(out, (0.0, 0.0, f64::from(between.0), f64::from(between.1)), fr::FilterType::Lanczos3);
        }
        self.scale(out, (left, top, width, height), fr::FilterType::Lanczos3)
    }

    /// Scales the box `(left, top, width, height)` of this image to `out` with `filter`.
    fn scale(&self, out: (u32, u32), (left, top, width, height): (f64, f64, f64, f64), filter: fr::FilterType) -> Raster {
        if self.channels == 1 {
            return self.scale_plane(out, (left, top, width, height), filter);
        }
        let options = fr::ResizeOptions::new().resize_alg(fr::ResizeAlg::Convolution(filter)).crop(left, top, width, height);
        let mut data = vec![0; out.0 as usize * out.1 as usize * self.channels];
        // Typed, not `Resizer::resize`: its run-time dispatch over every pixel
        // type links a 512 KiB table for 16-bit alpha into the component.
        if self.has_alpha() {
            resize_typed::<fr::pixels::U8x4>(self, out, &mut data, &options);
        } else {
            resize_typed::<fr::pixels::U8x3>(self, out, &mut data, &options);
        }
        Raster::new(out.0, out.1, self.channels, data)
    }

    /// [`Raster::scale`] for one channel, a pass at a time. fast_image_resize
    /// filters a one-channel row slowly (per output pixel, across the taps:
    /// 4.4 ms natively for a 1184x880 plane to 800 wide), four-channel rows
    /// fast (0.55 ms): so the rows are filtered four at a time, as the
    /// channels of one image a quarter as tall, then the columns.
    fn scale_plane(&self, out: (u32, u32), (left, top, width, height): (f64, f64, f64, f64), filter: fr::FilterType) -> Raster {
        let (w, h) = (self.width as usize, self.height as usize);
        let mut packed = vec![0; w * h.next_multiple_of(4)];
        for (group, pixels) in packed.chunks_exact_mut(4 * w).enumerate() {
            // The last group repeats the last row where the height is not a multiple of four.
            let row = |k: usize| &self.data[(4 * group + k).min(h - 1) * w..][..w];
            interleave4([row(0), row(1), row(2), row(3)], pixels);
        }
        let groups = Raster::new(self.width, h.div_ceil(4) as u32, 4, packed);
        let convolution = fr::ResizeOptions::new().resize_alg(fr::ResizeAlg::Convolution(filter));
        // Four rows, not colour and alpha: nothing to premultiply.
        let options = convolution.clone().use_alpha(false).crop(left, 0.0, width, f64::from(groups.height));
        let ow = out.0 as usize;
        let mut rows = vec![0; ow * 4 * groups.height as usize];
        resize_typed::<fr::pixels::U8x4>(&groups, (out.0, groups.height), &mut rows, &options);
        // Each pass writes into the memory the pass before last read (the
        // wasm arena reuses none by itself, and fresh pages cost faults).
        let mut unpacked = reuse(groups.data, ow * h);
        for (pixels, four_rows) in rows.chunks_exact(4 * ow).zip(unpacked.chunks_mut(4 * ow)) {
            if four_rows.len() == 4 * ow {
                let (r0, rest) = four_rows.split_at_mut(ow);
                let (r1, rest) = rest.split_at_mut(ow);
                let (r2, r3) = rest.split_at_mut(ow);
                deinterleave4(pixels, [r0, r1, r2, r3]);
            } else {
                // The last rows, fewer than four.
                for (k, row) in four_rows.chunks_exact_mut(ow).enumerate() {
                    for (v, pixel) in row.iter_mut().zip(pixels.chunks_exact(4)) {
                        *v = pixel[k];
                    }
                }
            }
        }
        let columns = Raster::new(out.0, self.height, 1, unpacked);
        let options = convolution.crop(0.0, top, f64::from(out.0), height);
        let mut data = reuse(rows, ow * out.1 as usize);
        resize_typed::<fr::pixels::U8>(&columns, out, &mut data, &options);
        Raster::new(out.0, out.1, 1, data)
    }

    /// This image centred on a `width`×`height` canvas of `background`.
    pub fn pad(self, width: u32, height: u32, background: [u8; 4]) -> Raster {
        let image = if background[3] < 255 { self.with_alpha() } else { self };
        let c = image.channels;
        let mut canvas = Raster::filled(width, height, c, &background);
        let (x0, y0) = ((width - image.width.min(width)) / 2, (height - image.height.min(height)) / 2);
        let row = image.width.min(width) as usize * c;
        for y in 0..image.height.min(height) as usize {
            let at = ((y0 as usize + y) * width as usize + x0 as usize) * c;
            canvas.data[at..at + row].copy_from_slice(&image.data[y * image.width as usize * c..][..row]);
        }
        canvas
    }

    /// Per channel value maps (alpha untouched).
    fn map_colour(&mut self, f: impl Fn(usize, f32) -> f32) {
        let c = self.channels;
        for px in self.data.chunks_exact_mut(c) {
            for (k, v) in px.iter_mut().take(3).enumerate() {
                *v = f(k, f32::from(*v)).round().clamp(0.0, 255.0) as u8;
            }
        }
    }

    /// Pillow's `ImageEnhance.Brightness`: a blend with black.
    pub fn brightness(&mut self, factor: f32) {
        self.map_colour(|_, v| v * factor);
    }

    /// Pillow's `ImageEnhance.Contrast`: a blend with the mean grey.
    pub fn contrast(&mut self, factor: f32) {
        let n = (self.width as usize * self.height as usize).max(1) as f64;
        let mean = (self.data.chunks_exact(self.channels).map(|p| f64::from(luma(p))).sum::<f64>() / n + 0.5).floor() as f32;
        self.map_colour(|_, v| mean + (v - mean) * factor);
    }

    /// `255·(v/255)^(1/gamma)`: above 1 brightens.
    pub fn gamma(&mut self, gamma: f32) {
        let table: Vec<f32> = (0..256).map(|v| 255.0 * (v as f32 / 255.0).powf(1.0 / gamma)).collect();
        self.map_colour(|_, v| table[v as usize]);
    }

    /// Pillow's `ImageEnhance.Color`: a blend with the grey image; 0 is grey.
    pub fn saturation(&mut self, factor: f32) {
        let c = self.channels;
        for px in self.data.chunks_exact_mut(c) {
            let grey = f32::from(luma(px));
            for v in px.iter_mut().take(3) {
                *v = (grey + (f32::from(*v) - grey) * factor).round().clamp(0.0, 255.0) as u8;
            }
        }
    }

    /// A Gaussian blur of standard deviation `sigma`, as Pillow computes it:
    /// three passes of a box blur with a fractional radius each way.
    pub fn gaussian_blur(&mut self, sigma: f32) {
        let radius = box_radius(sigma, 3);
        let (w, h, c) = (self.width as usize, self.height as usize, self.channels);
        let mut line = vec![0f32; w.max(h)];
        let mut out = vec![0f32; w.max(h)];
        // Rows first (neighbours `c` bytes apart), then columns (a row apart).
        for (lines, len, step, line_step) in [(h, w, c, w * c), (w, h, w * c, c)] {
            for _ in 0..3 {
                for l in 0..lines {
                    for k in 0..c {
                        let at = |i: usize| l * line_step + k + i * step;
                        for (i, v) in line[..len].iter_mut().enumerate() {
                            *v = f32::from(self.data[at(i)]);
                        }
                        box_blur_line(&line[..len], &mut out[..len], radius);
                        for (i, v) in out[..len].iter().enumerate() {
                            self.data[at(i)] = v.round().clamp(0.0, 255.0) as u8;
                        }
                    }
                }
            }
        }
    }

    /// Pillow's `UnsharpMask(radius=1, percent=amount·100, threshold=0)`.
    pub fn sharpen(&mut self, amount: f32) {
        let mut blurred = self.clone();
        blurred.gaussian_blur(1.0);
        let percent = (amount * 100.0).round();
        let c = self.channels;
        for (i, (v, b)) in self.data.iter_mut().zip(&blurred.data).enumerate() {
            if c == 4 && i % 4 == 3 {
                continue;
            }
            let diff = f32::from(*v) - f32::from(*b);
            *v = (f32::from(*v) + diff * percent / 100.0).round().clamp(0.0, 255.0) as u8;
        }
    }
}

/// [`Raster::focus`] where it does not depend on the pixels (all but `auto`).
pub fn fixed_focus(gravity: Gravity) -> Option<(f64, f64)> {
    match gravity {
        Gravity::Center => Some((0.5, 0.5)),
        Gravity::Point(x, y) => Some((f64::from(x), f64::from(y))),
        Gravity::Auto => None,
    }
}

/// The box `window` of a `width`×`height` source placed by `focus`, as
/// `(left, top, width, height)`. Clamped, so that rounding never puts the
/// box a hair outside the source.
fn place(width: u32, height: u32, window: (f64, f64), focus: (f64, f64)) -> (f64, f64, f64, f64) {
    let (sw, sh) = (f64::from(width), f64::from(height));
    let window = (window.0.clamp(1.0, sw), window.1.clamp(1.0, sh));
    let left = ((sw - window.0) * focus.0).clamp(0.0, sw - window.0);
    let top = ((sh - window.1) * focus.1).clamp(0.0, sh - window.1);
    (left, top, window.0, window.1)
}

/// An opaque image still in Y'CbCr 4:2:0, as a lossy WebP decodes: luma, and
/// two chroma planes of half its size each way. Resizing it before the
/// conversion to RGB touches 1.5 samples a pixel instead of 3, and converts
/// only the output's pixels: what libwebp's scaled decoding, and so
/// libvips' shrink-on-load, does.
#[derive(Clone, Debug)]
pub struct Planes {
    /// Luma, 16-235 (BT.601, limited range).
    pub y: Raster,
    /// Blue-difference chroma, 16-240, half the luma's size (rounded up).
    pub u: Raster,
    /// Red-difference chroma, as `u`.
    pub v: Raster,
}

impl Planes {
    /// The planes out of the decoder's rows (copied only where they are
    /// padded past the picture's width).
    pub fn new(image: image_webp::Yuv420) -> Planes {
        let plane = |mut data: Vec<u8>, stride: usize, width: u32, height: u32| {
            let (width_bytes, rows) = (width as usize, height as usize);
            if stride != width_bytes {
                data = data.chunks_exact(stride).take(rows).fold(Vec::with_capacity(width_bytes * rows), |mut plane, row| {
                    plane.extend_from_slice(&row[..width_bytes]);
                    plane
                });
            }
            data.truncate(width_bytes * rows);
            Raster::new(width, height, 1, data)
        };
        let (cw, ch) = (image.width.div_ceil(2), image.height.div_ceil(2));
        Planes {
            y: plane(image.y, image.stride, image.width, image.height),
            u: plane(image.u, image.stride / 2, cw, ch),
            v: plane(image.v, image.stride / 2, cw, ch),
        }
    }

    pub fn width(&self) -> u32 {
        self.y.width
    }

    pub fn height(&self) -> u32 {
        self.y.height
    }

    /// [`Raster::resize`] for each plane: chroma takes the luma's box, halved,
    /// to half the output (rounded up, as the output's own chroma would be).
    pub fn resize(self, out: (u32, u32), window: (f64, f64), focus: (f64, f64)) -> Planes {
        let (left, top, width, height) = place(self.width(), self.height(), window, focus);
        let chroma_out = (out.0.div_ceil(2), out.1.div_ceil(2));
        // A chroma sample of the output spans two of its luma pixels.
        let chroma_side = |side: f64, out: u32, chroma_out: u32, room: f64| (side * f64::from(chroma_out) / f64::from(out)).min(room);
        let chroma_box = (
            left / 2.0,
            top / 2.0,
            chroma_side(width, out.0, chroma_out.0, f64::from(self.u.width) - left / 2.0),
            chroma_side(height, out.1, chroma_out.1, f64::from(self.u.height) - top / 2.0),
        );
        Planes {
            y: self.y.resize_box(out, (left, top, width, height)),
            u: self.u.resize_box(chroma_out, chroma_box),
            v: self.v.resize_box(chroma_out, chroma_box),
        }
    }

    /// RGB, converted as the WebP decoder converts (libwebp's).
    pub fn into_rgb(self) -> Raster {
        let (width, height) = (self.width(), self.height());
        Raster::new(width, height, 3, self.into_yuv420().to_rgb8())
    }

    /// The planes in the WebP codec's layout.
    pub fn into_yuv420(self) -> image_webp::Yuv420 {
        let (width, height) = (self.width(), self.height());
        // Luma rows twice as long as chroma rows: one pad byte when the width is odd.
        let stride = 2 * self.u.width as usize;
        let y = if stride == width as usize {
            self.y.data
        } else {
            self.y.data.chunks_exact(width as usize).fold(Vec::with_capacity(stride * height as usize), |mut y, row| {
                y.extend_from_slice(row);
                y.push(0);
                y
            })
        };
        image_webp::Yuv420 { width, height, stride, y, u: self.u.data, v: self.v.data }
    }
}

/// `buffer`'s memory as `len` zeros.
fn reuse(mut buffer: Vec<u8>, len: usize) -> Vec<u8> {
    buffer.clear();
    buffer.resize(len, 0);
    buffer
}

/// Four rows of one channel as the four channels of one row:
/// `pixels[4 * i + k] = rows[k][i]`.
fn interleave4(rows: [&[u8]; 4], pixels: &mut [u8]) {
    let n = pixels.len() / 4;
    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    let done = simd::interleave4(rows, pixels);
    #[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
    let done = 0;
    for i in done..n {
        for (k, row) in rows.iter().enumerate() {
            pixels[4 * i + k] = row[i];
        }
    }
}

/// [`interleave4`] undone.
fn deinterleave4(pixels: &[u8], rows: [&mut [u8]; 4]) {
    let n = pixels.len() / 4;
    let [r0, r1, r2, r3] = rows;
    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    let done = simd::deinterleave4(pixels, [&mut *r0, &mut *r1, &mut *r2, &mut *r3]);
    #[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
    let done = 0;
    for i in done..n {
        [r0[i], r1[i], r2[i], r3[i]] = [pixels[4 * i], pixels[4 * i + 1], pixels[4 * i + 2], pixels[4 * i + 3]];
    }
}

/// The row (de)interleaving sixteen pixels at a time: byte-by-byte it was
/// a third of a plane's resize in wasm.
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
mod simd {
    use core::arch::wasm32::*;

    /// [`super::interleave4`] for whole groups of 16 pixels; how many were done.
    pub fn interleave4(rows: [&[u8]; 4], pixels: &mut [u8]) -> usize {
        let n = (pixels.len() / 4).min(rows.iter().map(|r| r.len()).min().unwrap_or(0));
        for i in (0..n - n % 16).step_by(16) {
            // (Spelt out, not `array::map`: its closure is left uninlined in wasm.)
            let load = |row: &[u8]| v128_load_16(&row[i..i + 16]);
            let [a, b, c, d] = [load(rows[0]), load(rows[1]), load(rows[2]), load(rows[3])];
            // Bytes of rows 0 and 1 paired, then of 2 and 3; then the pairs paired.
            let ab_lo = u8x16_shuffle::<0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23>(a, b);
            let ab_hi = u8x16_shuffle::<8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31>(a, b);
            let cd_lo = u8x16_shuffle::<0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23>(c, d);
            let cd_hi = u8x16_shuffle::<8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31>(c, d);
            let out = &mut pixels[4 * i..4 * i + 64];
            v128_store_16(&mut out[0..16], u16x8_shuffle::<0, 8, 1, 9, 2, 10, 3, 11>(ab_lo, cd_lo));
            v128_store_16(&mut out[16..32], u16x8_shuffle::<4, 12, 5, 13, 6, 14, 7, 15>(ab_lo, cd_lo));
            v128_store_16(&mut out[32..48], u16x8_shuffle::<0, 8, 1, 9, 2, 10, 3, 11>(ab_hi, cd_hi));
            v128_store_16(&mut out[48..64], u16x8_shuffle::<4, 12, 5, 13, 6, 14, 7, 15>(ab_hi, cd_hi));
        }
        n - n % 16
    }

    /// [`super::deinterleave4`] for whole groups of 16 pixels; how many were done.
    pub fn deinterleave4(pixels: &[u8], mut rows: [&mut [u8]; 4]) -> usize {
        let n = (pixels.len() / 4).min(rows.iter().map(|r| r.len()).min().unwrap_or(0));
        for i in (0..n - n % 16).step_by(16) {
            // Each vector's four pixels sorted by channel (four u32 lanes),
            // then the 4x4 matrix of lanes transposed.
            let sorted = |k: usize| {
                let v = v128_load_16(&pixels[4 * i + 16 * k..][..16]);
                u8x16_shuffle::<0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15>(v, v)
            };
            let [p0, p1, p2, p3] = [sorted(0), sorted(1), sorted(2), sorted(3)];
            let q0 = u32x4_shuffle::<0, 4, 1, 5>(p0, p1);
            let q1 = u32x4_shuffle::<2, 6, 3, 7>(p0, p1);
            let q2 = u32x4_shuffle::<0, 4, 1, 5>(p2, p3);
            let q3 = u32x4_shuffle::<2, 6, 3, 7>(p2, p3);
            let lanes = [u64x2_shuffle::<0, 2>(q0, q2), u64x2_shuffle::<1, 3>(q0, q2), u64x2_shuffle::<0, 2>(q1, q3), u64x2_shuffle::<1, 3>(q1, q3)];
            for (row, lane) in rows.iter_mut().zip(lanes) {
                v128_store_16(&mut row[i..i + 16], lane);
            }
        }
        n - n % 16
    }

    fn v128_load_16(bytes: &[u8]) -> v128 {
        assert_eq!(bytes.len(), 16);
        // SAFETY: 16 readable bytes; v128 loads are unaligned.
        unsafe { v128_load(bytes.as_ptr().cast::<v128>()) }
    }

    fn v128_store_16(bytes: &mut [u8], v: v128) {
        assert_eq!(bytes.len(), 16);
        // SAFETY: 16 writable bytes; v128 stores are unaligned.
        unsafe { v128_store(bytes.as_mut_ptr().cast::<v128>(), v) }
    }
}

/// How many times the output a large reduction's box-filter step leaves
/// for the Lanczos3 step (Pillow's `thumbnail` default).
const REDUCING_GAP: f64 = 2.0;

fn resize_typed<P: fr::PixelTrait>(image: &Raster, out: (u32, u32), data: &mut [u8], options: &fr::ResizeOptions) {
    let source = fr::images::TypedImageRef::<P>::from_buffer(image.width, image.height, &image.data).expect("a raster's buffer fits its size");
    let mut target = fr::images::TypedImage::<P>::from_buffer(out.0, out.1, data).expect("sized for the output");
    fr::Resizer::new().resize_typed(&source, &mut target, options).expect("a crop box inside the source");
}

/// ITU-R 601 luma, as Pillow's `convert("L")`.
fn luma(p: &[u8]) -> u8 {
    ((u32::from(p[0]) * 19595 + u32::from(p[1]) * 38470 + u32::from(p[2]) * 7471 + 0x8000) >> 16) as u8
}

/// Where a window of `size` over `energy` holds the most of it, as the
/// fraction of the overflow cut before it.
fn busiest(energy: &[f64], size: f64) -> f64 {
    let n = energy.len();
    let span = (size.round() as usize).clamp(1, n.max(1));
    if span >= n {
        return 0.5;
    }
    let mut sum: f64 = energy[..span].iter().sum();
    let (mut best, mut best_start) = (sum, 0);
    for start in 1..=n - span {
        sum += energy[start + span - 1] - energy[start - 1];
        if sum > best {
            (best, best_start) = (sum, start);
        }
    }
    best_start as f64 / (n - span) as f64
}

/// Pillow's `_gaussian_blur_radius`: the box radius whose `passes`-fold
/// repetition has variance `sigma²` (Gwosdek et al., "Theoretical
/// foundations of Gaussian convolution by extended box filtering", 2011).
fn box_radius(sigma: f32, passes: u32) -> f32 {
    let sigma2 = sigma * sigma / passes as f32;
    let length = (12.0 * sigma2 + 1.0).sqrt();
    let l = ((length - 1.0) / 2.0).floor();
    let a = (2.0 * l + 1.0) * (l * (l + 1.0) - 3.0 * sigma2) / (6.0 * (sigma2 - (l + 1.0) * (l + 1.0)));
    l + a
}

/// One box-blur pass with a fractional radius; edges repeat the last pixel.
fn box_blur_line(line: &[f32], out: &mut [f32], radius: f32) {
    let n = line.len() as isize;
    let whole = radius.floor() as isize;
    let fraction = radius - whole as f32;
    let at = |i: isize| line[i.clamp(0, n - 1) as usize];
    let scale = 1.0 / (2.0 * radius + 1.0);
    let mut sum: f32 = (-whole..=whole).map(at).sum();
    for x in 0..n {
        out[x as usize] = (sum + fraction * (at(x - whole - 1) + at(x + whole + 1))) * scale;
        sum += at(x + whole + 1) - at(x - whole);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g(sw: u32, sh: u32, w: Option<u32>, h: Option<u32>, fit: Fit) -> (u32, u32) {
        let g = geometry(sw, sh, w, h, fit);
        (g.out_width, g.out_height)
    }

    #[test]
    fn fit_modes_follow_cloudflare() {
        assert_eq!(g(1000, 500, Some(400), Some(400), Fit::ScaleDown), (400, 200));
        assert_eq!(g(100, 50, Some(400), Some(400), Fit::ScaleDown), (100, 50), "never enlarges");
        assert_eq!(g(100, 50, Some(400), Some(400), Fit::Contain), (400, 200));
        assert_eq!(g(1000, 500, Some(400), Some(400), Fit::Cover), (400, 400));
        assert_eq!(geometry(1000, 500, Some(400), Some(400), Fit::Cover).window, (500.0, 500.0));
        assert_eq!(g(1000, 500, Some(800), Some(800), Fit::Crop), (800, 500), "crop never enlarges");
        assert_eq!(g(100, 50, Some(400), Some(400), Fit::Crop), (100, 50));
        assert_eq!(g(1000, 500, Some(400), Some(400), Fit::Pad), (400, 400));
        assert_eq!(geometry(1000, 500, Some(400), Some(400), Fit::Pad).inner, Some((400, 200)));
        assert_eq!(g(1000, 500, Some(300), Some(400), Fit::Squeeze), (300, 400));
        assert_eq!(g(1000, 500, Some(400), None, Fit::Cover), (400, 200), "one side keeps the aspect ratio");
        assert_eq!(g(1000, 500, None, None, Fit::Cover), (1000, 500));
    }

    #[test]
    fn a_large_reduction_in_two_steps_stays_close_to_one_lanczos_pass() {
        // Squares of 48 pixels over a gradient: detail that survives a 12x reduction.
        let (w, h) = (960u32, 720u32);
        let data: Vec<u8> = (0..h)
            .flat_map(|y| {
                (0..w).flat_map(move |x| {
                    let square = if (x / 48 + y / 48) % 2 == 0 { 200.0 } else { 40.0 };
                    let v = square * 0.7 + f64::from(x + y) / f64::from(w + h) * 255.0 * 0.3;
                    [v as u8, (255.0 - v) as u8, (v / 2.0) as u8]
                })
            })
            .collect();
        let image = Raster::new(w, h, 3, data);
        let two_steps = image.clone().resize((80, 60), (960.0, 720.0), (0.5, 0.5));
        let one_pass = image.scale((80, 60), (0.0, 0.0, 960.0, 720.0), fr::FilterType::Lanczos3);
        let diff = two_steps.data.iter().zip(&one_pass.data).map(|(a, b)| f64::from(a.abs_diff(*b))).sum::<f64>() / two_steps.data.len() as f64;
        assert!(diff < 2.0, "mean |diff| {diff}");
    }

    #[test]
    fn a_plane_resized_four_rows_at_a_time_matches_one_pass() {
        // 123 rows: the last group of four is short.
        let (w, h) = (161u32, 123u32);
        let plane = Raster::new(w, h, 1, (0..h).flat_map(|y| (0..w).map(move |x| ((x * 3 + y * 2) % 256) as u8)).collect());
        let window = (6.5, 9.25, 140.0, 99.0);
        let ours = plane.scale((75, 53), window, fr::FilterType::Lanczos3);
        let options = fr::ResizeOptions::new().resize_alg(fr::ResizeAlg::Convolution(fr::FilterType::Lanczos3)).crop(window.0, window.1, window.2, window.3);
        let mut one_pass = vec![0; 75 * 53];
        resize_typed::<fr::pixels::U8>(&plane, (75, 53), &mut one_pass, &options);
        let diff = ours.data.iter().zip(&one_pass).map(|(a, b)| f64::from(a.abs_diff(*b))).sum::<f64>() / one_pass.len() as f64;
        assert!(diff < 1.0, "mean |diff| {diff}");
    }

    #[test]
    fn four_rows_interleave_into_pixels_and_back() {
        // 37 pixels: two groups of sixteen (SIMD on wasm) and five more.
        let rows: Vec<Vec<u8>> = (0..4u8).map(|k| (0..37u8).map(|i| k * 64 + i).collect()).collect();
        let mut pixels = vec![0; 4 * 37];
        interleave4([&rows[0], &rows[1], &rows[2], &rows[3]], &mut pixels);
        assert_eq!(&pixels[..8], [0, 64, 128, 192, 1, 65, 129, 193]);
        assert_eq!(&pixels[4 * 36..], [36, 100, 164, 228]);
        let mut back: [Vec<u8>; 4] = Default::default();
        back.iter_mut().for_each(|row| row.resize(37, 0));
        deinterleave4(&pixels, back.each_mut().map(Vec::as_mut_slice));
        assert_eq!(back.to_vec(), rows);
    }

    #[test]
    fn rotation_is_clockwise() {
        // 2×1: red, blue. Clockwise 90°: 1×2, red on top.
        let r = Raster::new(2, 1, 3, vec![255, 0, 0, 0, 0, 255]).rotate(90);
        assert_eq!((r.width, r.height, r.data), (1, 2, vec![255, 0, 0, 0, 0, 255]));
        let r = Raster::new(2, 1, 3, vec![255, 0, 0, 0, 0, 255]).rotate(270);
        assert_eq!(r.data, vec![0, 0, 255, 255, 0, 0]);
    }

    #[test]
    fn flips_and_trims() {
        let r = Raster::new(2, 2, 3, (0..12).collect()).flip(Flip::Both);
        assert_eq!(r.data, vec![9, 10, 11, 6, 7, 8, 3, 4, 5, 0, 1, 2]);
        assert!(Raster::filled(4, 4, 3, &[0, 0, 0]).trim([2, 0, 2, 0]).is_none());
        let t = Raster::filled(4, 4, 3, &[0, 0, 0]).trim([1, 1, 0, 2]).unwrap();
        assert_eq!((t.width, t.height), (1, 3));
    }

    #[test]
    fn blur_keeps_a_flat_image_flat_and_the_box_radius_matches_pillow() {
        let mut r = Raster::filled(16, 16, 3, &[100, 150, 200]);
        r.gaussian_blur(3.0);
        assert!(r.data.chunks_exact(3).all(|p| p == [100, 150, 200]));
        // Pillow's _gaussian_blur_radius(2.0, 3): l = 1, a = 0.375.
        assert!((box_radius(2.0, 3) - 1.375).abs() < 0.001, "{}", box_radius(2.0, 3));
    }

    #[test]
    fn auto_gravity_finds_the_detail() {
        // Flat left half, stripes on the right: a square crop keeps the right.
        let mut r = Raster::filled(200, 100, 3, &[128, 128, 128]);
        for y in 0..100 {
            for x in 100..200 {
                let v = if x % 2 == 0 { 0 } else { 255 };
                r.data[(y * 200 + x) * 3..][..3].copy_from_slice(&[v, v, v]);
            }
        }
        let (fx, _) = r.focus(Gravity::Auto, (100.0, 100.0));
        assert!(fx > 0.9, "{fx}");
    }
}
