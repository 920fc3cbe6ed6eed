//! Does loop filtering on webp lossy images

#[inline]
fn c(val: i32) -> i32 {
    val.clamp(-128, 127)
}

//unsigned to signed
#[inline]
fn u2s(val: u8) -> i32 {
    i32::from(val) - 128
}

//signed to unsigned
#[inline]
fn s2u(val: i32) -> u8 {
    (c(val) + 128) as u8
}

#[inline]
const fn diff(val1: u8, val2: u8) -> u8 {
    u8::abs_diff(val1, val2)
}

/// Used in both the simple and normal filters described in 15.2 and 15.3
///
/// Adjusts the 2 middle pixels in a vertical loop filter
fn common_adjust_vertical(
    use_outer_taps: bool,
    pixels: &mut [u8],
    point: usize,
    stride: usize,
) -> i32 {
    let p1 = u2s(pixels[point - 2 * stride]);
    let p0 = u2s(pixels[point - stride]);
    let q0 = u2s(pixels[point]);
    let q1 = u2s(pixels[point + stride]);

    //value for the outer 2 pixels
    let outer = if use_outer_taps { c(p1 - q1) } else { 0 };

    let a = c(outer + 3 * (q0 - p0));

    let b = (c(a + 3)) >> 3;

    let a = (c(a + 4)) >> 3;

    pixels[point] = s2u(q0 - a);
    pixels[point - stride] = s2u(p0 + b);

    a
}

/// Used in both the simple and normal filters described in 15.2 and 15.3
///
/// Adjusts the 2 middle pixels in a horizontal loop filter
fn common_adjust_horizontal(use_outer_taps: bool, pixels: &mut [u8]) -> i32 {
    let p1 = u2s(pixels[2]);
    let p0 = u2s(pixels[3]);
    let q0 = u2s(pixels[4]);
    let q1 = u2s(pixels[5]);

    //value for the outer 2 pixels
    let outer = if use_outer_taps { c(p1 - q1) } else { 0 };

    let a = c(outer + 3 * (q0 - p0));

    let b = (c(a + 3)) >> 3;

    let a = (c(a + 4)) >> 3;

    pixels[4] = s2u(q0 - a);
    pixels[3] = s2u(p0 + b);

    a
}

#[inline]
fn simple_threshold_vertical(
    filter_limit: i32,
    pixels: &[u8],
    point: usize,
    stride: usize,
) -> bool {
    i32::from(diff(pixels[point - stride], pixels[point])) * 2
        + i32::from(diff(pixels[point - 2 * stride], pixels[point + stride])) / 2
        <= filter_limit
}

#[inline]
fn simple_threshold_horizontal(filter_limit: i32, pixels: &[u8]) -> bool {
    assert!(pixels.len() >= 6); // one bounds check up front eliminates all subsequent checks in this function
    i32::from(diff(pixels[3], pixels[4])) * 2 + i32::from(diff(pixels[2], pixels[5])) / 2
        <= filter_limit
}

fn should_filter_vertical(
    interior_limit: u8,
    edge_limit: u8,
    pixels: &[u8],
    point: usize,
    stride: usize,
) -> bool {
    simple_threshold_vertical(i32::from(edge_limit), pixels, point, stride)
        // this looks like an erroneous way to compute differences between 8 points, but isn't:
        // there are actually only 6 diff comparisons required as per the spec:
        // https://www.rfc-editor.org/rfc/rfc6386#section-20.6
        && diff(pixels[point - 4 * stride], pixels[point - 3 * stride]) <= interior_limit
        && diff(pixels[point - 3 * stride], pixels[point - 2 * stride]) <= interior_limit
        && diff(pixels[point - 2 * stride], pixels[point - stride]) <= interior_limit
        && diff(pixels[point + 3 * stride], pixels[point + 2 * stride]) <= interior_limit
        && diff(pixels[point + 2 * stride], pixels[point + stride]) <= interior_limit
        && diff(pixels[point + stride], pixels[point]) <= interior_limit
}

fn should_filter_horizontal(interior_limit: u8, edge_limit: u8, pixels: &[u8]) -> bool {
    assert!(pixels.len() >= 8); // one bounds check up front eliminates all subsequent checks in this function
    simple_threshold_horizontal(i32::from(edge_limit), pixels)
        // this looks like an erroneous way to compute differences between 8 points, but isn't:
        // there are actually only 6 diff comparisons required as per the spec:
        // https://www.rfc-editor.org/rfc/rfc6386#section-20.6
        && diff(pixels[0], pixels[1]) <= interior_limit
        && diff(pixels[1], pixels[2]) <= interior_limit
        && diff(pixels[2], pixels[3]) <= interior_limit
        && diff(pixels[7], pixels[6]) <= interior_limit
        && diff(pixels[6], pixels[5]) <= interior_limit
        && diff(pixels[5], pixels[4]) <= interior_limit
}

#[inline]
fn high_edge_variance_vertical(threshold: u8, pixels: &[u8], point: usize, stride: usize) -> bool {
    diff(pixels[point - 2 * stride], pixels[point - stride]) > threshold
        || diff(pixels[point + stride], pixels[point]) > threshold
}

#[inline]
fn high_edge_variance_horizontal(threshold: u8, pixels: &[u8]) -> bool {
    diff(pixels[2], pixels[3]) > threshold || diff(pixels[5], pixels[4]) > threshold
}

/// Part of the simple filter described in 15.2 in the specification
///
/// Affects 4 pixels on an edge(2 each side)
pub(crate) fn simple_segment_vertical(
    edge_limit: u8,
    pixels: &mut [u8],
    point: usize,
    stride: usize,
) {
    if simple_threshold_vertical(i32::from(edge_limit), pixels, point, stride) {
        common_adjust_vertical(true, pixels, point, stride);
    }
}

/// Part of the simple filter described in 15.2 in the specification
///
/// Affects 4 pixels on an edge(2 each side)
pub(crate) fn simple_segment_horizontal(edge_limit: u8, pixels: &mut [u8]) {
    if simple_threshold_horizontal(i32::from(edge_limit), pixels) {
        common_adjust_horizontal(true, pixels);
    }
}

/// Part of the normal filter described in 15.3 in the specification
///
/// Filters on the 8 pixels on the edges between subblocks inside a macroblock
pub(crate) fn subblock_filter_vertical(
    hev_threshold: u8,
    interior_limit: u8,
    edge_limit: u8,
    pixels: &mut [u8],
    point: usize,
    stride: usize,
) {
    if should_filter_vertical(interior_limit, edge_limit, pixels, point, stride) {
        let hv = high_edge_variance_vertical(hev_threshold, pixels, point, stride);

        let a = (common_adjust_vertical(hv, pixels, point, stride) + 1) >> 1;

        if !hv {
            pixels[point + stride] = s2u(u2s(pixels[point + stride]) - a);
            pixels[point - 2 * stride] = s2u(u2s(pixels[point - 2 * stride]) + a);
        }
    }
}

/// Part of the normal filter described in 15.3 in the specification
///
/// Filters on the 8 pixels on the edges between subblocks inside a macroblock
pub(crate) fn subblock_filter_horizontal(
    hev_threshold: u8,
    interior_limit: u8,
    edge_limit: u8,
    pixels: &mut [u8],
) {
    if should_filter_horizontal(interior_limit, edge_limit, pixels) {
        let hv = high_edge_variance_horizontal(hev_threshold, pixels);

        let a = (common_adjust_horizontal(hv, pixels) + 1) >> 1;

        if !hv {
            pixels[5] = s2u(u2s(pixels[5]) - a);
            pixels[2] = s2u(u2s(pixels[2]) + a);
        }
    }
}

/// Part of the normal filter described in 15.3 in the specification
///
/// Filters on the 8 pixels on the vertical edges between macroblocks\
/// The point passed in must be the first vertical pixel on the bottom macroblock
pub(crate) fn macroblock_filter_vertical(
    hev_threshold: u8,
    interior_limit: u8,
    edge_limit: u8,
    pixels: &mut [u8],
    point: usize,
    stride: usize,
) {
    if should_filter_vertical(interior_limit, edge_limit, pixels, point, stride) {
        if !high_edge_variance_vertical(hev_threshold, pixels, point, stride) {
            // p0-3 are the pixels on the left macroblock from right to left
            let p2 = u2s(pixels[point - 3 * stride]);
            let p1 = u2s(pixels[point - 2 * stride]);
            let p0 = u2s(pixels[point - stride]);
            // q0-3 are the pixels on the right macroblock from left to right
            let q0 = u2s(pixels[point]);
            let q1 = u2s(pixels[point + stride]);
            let q2 = u2s(pixels[point + 2 * stride]);

            let w = c(c(p1 - q1) + 3 * (q0 - p0));

            let a = c((27 * w + 63) >> 7);

            pixels[point] = s2u(q0 - a);
            pixels[point - stride] = s2u(p0 + a);

            let a = c((18 * w + 63) >> 7);

            pixels[point + stride] = s2u(q1 - a);
            pixels[point - 2 * stride] = s2u(p1 + a);

            let a = c((9 * w + 63) >> 7);

            pixels[point + 2 * stride] = s2u(q2 - a);
            pixels[point - 3 * stride] = s2u(p2 + a);
        } else {
            common_adjust_vertical(true, pixels, point, stride);
        }
    }
}

/// Part of the normal filter described in 15.3 in the specification
///
/// Filters on the 8 pixels on the horizontal edges between macroblocks\
/// The pixels passed in must be a slice containing the 4 pixels on each macroblock
pub(crate) fn macroblock_filter_horizontal(
    hev_threshold: u8,
    interior_limit: u8,
    edge_limit: u8,
    pixels: &mut [u8],
) {
    assert!(pixels.len() >= 8);
    if should_filter_horizontal(interior_limit, edge_limit, pixels) {
        if !high_edge_variance_horizontal(hev_threshold, pixels) {
            // p0-3 are the pixels on the left macroblock from right to left
            let p2 = u2s(pixels[1]);
            let p1 = u2s(pixels[2]);
            let p0 = u2s(pixels[3]);
            // q0-3 are the pixels on the right macroblock from left to right
            let q0 = u2s(pixels[4]);
            let q1 = u2s(pixels[5]);
            let q2 = u2s(pixels[6]);

            let w = c(c(p1 - q1) + 3 * (q0 - p0));

            let a = c((27 * w + 63) >> 7);

            pixels[4] = s2u(q0 - a);
            pixels[3] = s2u(p0 + a);

            let a = c((18 * w + 63) >> 7);

            pixels[5] = s2u(q1 - a);
            pixels[2] = s2u(p1 + a);

            let a = c((9 * w + 63) >> 7);

            pixels[6] = s2u(q2 - a);
            pixels[1] = s2u(p2 + a);
        } else {
            common_adjust_horizontal(true, pixels);
        }
    }
}

#[cfg(all(test, feature = "_benchmarks"))]
mod benches {
    use super::*;
    use test::{black_box, Bencher};

    #[rustfmt::skip]
    const TEST_DATA: [u8; 8 * 8] = [
        177, 192, 179, 181, 185, 174, 186, 193,
        185, 180, 175, 179, 175, 190, 189, 190,
        185, 181, 177, 190, 190, 174, 176, 188,
        192, 179, 186, 175, 190, 184, 190, 175,
        175, 183, 183, 190, 187, 186, 176, 181,
        183, 177, 182, 185, 183, 179, 178, 181,
        191, 183, 188, 181, 180, 193, 185, 180,
        177, 182, 177, 178, 179, 178, 191, 178,
    ];

    #[bench]
    fn measure_horizontal_macroblock_filter(b: &mut Bencher) {
        let hev_threshold = 5;
        let interior_limit = 15;
        let edge_limit = 15;

        let mut data = TEST_DATA.clone();
        let stride = 8;

        b.iter(|| {
            for y in 0..8 {
                black_box(macroblock_filter_horizontal(
                    hev_threshold,
                    interior_limit,
                    edge_limit,
                    &mut data[y * stride..][..8],
                ));
            }
        });
    }

    #[bench]
    fn measure_vertical_macroblock_filter(b: &mut Bencher) {
        let hev_threshold = 5;
        let interior_limit = 15;
        let edge_limit = 15;

        let mut data = TEST_DATA.clone();
        let stride = 8;

        b.iter(|| {
            for x in 0..8 {
                black_box(macroblock_filter_vertical(
                    hev_threshold,
                    interior_limit,
                    edge_limit,
                    &mut data,
                    4 * stride + x,
                    stride,
                ));
            }
        });
    }

    #[bench]
    fn measure_horizontal_subblock_filter(b: &mut Bencher) {
        let hev_threshold = 5;
        let interior_limit = 15;
        let edge_limit = 15;

        let mut data = TEST_DATA.clone();
        let stride = 8;

        b.iter(|| {
            for y in 0usize..8 {
                black_box(subblock_filter_horizontal(
                    hev_threshold,
                    interior_limit,
                    edge_limit,
                    &mut data[y * stride..][..8],
                ))
            }
        });
    }

    #[bench]
    fn measure_vertical_subblock_filter(b: &mut Bencher) {
        let hev_threshold = 5;
        let interior_limit = 15;
        let edge_limit = 15;

        let mut data = TEST_DATA.clone();
        let stride = 8;

        b.iter(|| {
            for x in 0..8 {
                black_box(subblock_filter_vertical(
                    hev_threshold,
                    interior_limit,
                    edge_limit,
                    &mut data,
                    4 * stride + x,
                    stride,
                ))
            }
        });
    }

    #[bench]
    fn measure_simple_segment_horizontal_filter(b: &mut Bencher) {
        let edge_limit = 15;

        let mut data = TEST_DATA.clone();
        let stride = 8;

        b.iter(|| {
            for y in 0usize..8 {
                black_box(simple_segment_horizontal(
                    edge_limit,
                    &mut data[y * stride..][..8],
                ))
            }
        });
    }

    #[bench]
    fn measure_simple_segment_vertical_filter(b: &mut Bencher) {
        let edge_limit = 15;

        let mut data = TEST_DATA.clone();
        let stride = 8;

        b.iter(|| {
            for x in 0usize..16 {
                black_box(simple_segment_vertical(
                    edge_limit,
                    &mut data,
                    4 * stride + x,
                    stride,
                ))
            }
        });
    }
}

/// The normal filters a whole edge at a time with SIMD128 (edgeproxy patch).
///
/// An edge is 16 lanes with eight taps each, p3 p2 p1 p0 | q0 q1 q2 q3: a
/// luma edge, or the same chroma edge of U (lanes 0-7) and V (lanes 8-15),
/// whose filter parameters are the same. No lane reads what another writes, so
/// they are filtered side by side where the functions above decide and branch
/// pixel by pixel: the same bits, chosen with masks. This is how libwebp's SSE2
/// filters work (`dec_sse2.c`), down to the sum of three saturating additions
/// for `c(outer + 3 * (q0 - p0))`, and the transposes for vertical edges.
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
pub(crate) mod simd {
    use core::arch::wasm32::*;

    /// Where an edge is in a plane.
    #[derive(Clone, Copy)]
    pub(crate) struct Lanes {
        /// Tap p3 of lane 0.
        first: usize,
        /// The step to the next row of the plane: between taps for a
        /// horizontal edge, between lanes for a vertical one.
        stride: usize,
        across_columns: bool,
    }

    impl Lanes {
        /// A horizontal edge (filtered vertically) whose q0 row starts at `point`.
        pub(crate) fn across_rows(point: usize, stride: usize) -> Lanes {
            Lanes { first: point - 4 * stride, stride, across_columns: false }
        }

        /// A vertical edge (filtered horizontally) whose q0 column starts at `point`.
        pub(crate) fn across_columns(point: usize, stride: usize) -> Lanes {
            Lanes { first: point - 4, stride, across_columns: true }
        }

        /// Where row `n` of the edge's 8x16 (or 16x8) block starts.
        fn row(self, n: usize) -> usize {
            self.first + n * self.stride
        }
    }

    /// The limits of one macroblock's filter.
    #[derive(Clone, Copy)]
    pub(crate) struct Limits {
        pub(crate) hev_threshold: u8,
        pub(crate) interior_limit: u8,
        pub(crate) edge_limit: u8,
    }

    /// Filters one luma edge: a macroblock edge (`macroblock_filter_*`) or a
    /// subblock edge (`subblock_filter_*`).
    pub(crate) fn filter_luma(plane: &mut [u8], at: Lanes, macroblock: bool, limits: Limits) {
        if at.across_columns {
            // Rows i and i + 8 side by side, transposed into taps and back.
            let rows = transpose(eight(|i| u64x2(read(plane, at.row(i)), read(plane, at.row(i + 8)))));
            let filtered = transpose(filter(rows, macroblock, limits).0);
            for (i, pair) in filtered.into_iter().enumerate() {
                write(plane, at.row(i), u64x2_extract_lane::<0>(pair));
                write(plane, at.row(i + 8), u64x2_extract_lane::<1>(pair));
            }
        } else {
            let taps = eight(|k| u64x2(read(plane, at.row(k)), read(plane, at.row(k) + 8)));
            let (filtered, changed) = filter(taps, macroblock, limits);
            for k in changed {
                write(plane, at.row(k), u64x2_extract_lane::<0>(filtered[k]));
                write(plane, at.row(k) + 8, u64x2_extract_lane::<1>(filtered[k]));
            }
        }
    }

    /// Filters the same edge of both chroma planes.
    pub(crate) fn filter_chroma(u: &mut [u8], v: &mut [u8], at: Lanes, macroblock: bool, limits: Limits) {
        // Row n of U and of V side by side: taps along a horizontal edge,
        // lanes (to transpose) across a vertical one.
        let rows = eight(|n| u64x2(read(u, at.row(n)), read(v, at.row(n))));
        let (rows, changed) = if at.across_columns {
            (transpose(filter(transpose(rows), macroblock, limits).0), 0..8)
        } else {
            filter(rows, macroblock, limits)
        };
        for n in changed {
            write(u, at.row(n), u64x2_extract_lane::<0>(rows[n]));
            write(v, at.row(n), u64x2_extract_lane::<1>(rows[n]));
        }
    }

    fn read(plane: &[u8], at: usize) -> u64 {
        u64::from_le_bytes(plane[at..at + 8].try_into().expect("8 bytes"))
    }

    fn write(plane: &mut [u8], at: usize, value: u64) {
        plane[at..at + 8].copy_from_slice(&value.to_le_bytes());
    }

    /// Two 8x8 byte transposes at once, one in each half of the vectors:
    /// byte j of row i becomes byte i of row j. Its own inverse.
    fn transpose(a: [v128; 8]) -> [v128; 8] {
        // Interleave bytes, then pairs, then quadruples, as SSE2's unpacks do.
        let bytes_lo = |x, y| i8x16_shuffle::<0, 16, 1, 17, 2, 18, 3, 19, 8, 24, 9, 25, 10, 26, 11, 27>(x, y);
        let bytes_hi = |x, y| i8x16_shuffle::<4, 20, 5, 21, 6, 22, 7, 23, 12, 28, 13, 29, 14, 30, 15, 31>(x, y);
        let pairs_lo = |x, y| i8x16_shuffle::<0, 1, 16, 17, 2, 3, 18, 19, 8, 9, 24, 25, 10, 11, 26, 27>(x, y);
        let pairs_hi = |x, y| i8x16_shuffle::<4, 5, 20, 21, 6, 7, 22, 23, 12, 13, 28, 29, 14, 15, 30, 31>(x, y);
        let quads_lo = |x, y| i8x16_shuffle::<0, 1, 2, 3, 16, 17, 18, 19, 8, 9, 10, 11, 24, 25, 26, 27>(x, y);
        let quads_hi = |x, y| i8x16_shuffle::<4, 5, 6, 7, 20, 21, 22, 23, 12, 13, 14, 15, 28, 29, 30, 31>(x, y);
        // b[2m] and b[2m + 1]: bytes 0-3 and 4-7 of rows 2m and 2m + 1, interleaved.
        let b = eight(|j| if j % 2 == 0 { bytes_lo(a[j], a[j + 1]) } else { bytes_hi(a[j - 1], a[j]) });
        // c[4h + n]: bytes 2n and 2n + 1 of rows 4h to 4h + 3.
        let c = eight(|j| {
            let (h, n) = (j / 4, j % 4);
            let (x, y) = (b[4 * h + n / 2], b[4 * h + n / 2 + 2]);
            if n % 2 == 0 { pairs_lo(x, y) } else { pairs_hi(x, y) }
        });
        eight(|k| if k % 2 == 0 { quads_lo(c[k / 2], c[k / 2 + 4]) } else { quads_hi(c[k / 2], c[k / 2 + 4]) })
    }

    /// `[f(0), .., f(7)]`, spelt out: in the wasm build `array::from_fn`'s
    /// closures are left uninlined, a call per element.
    #[inline(always)]
    fn eight(f: impl Fn(usize) -> v128) -> [v128; 8] {
        [f(0), f(1), f(2), f(3), f(4), f(5), f(6), f(7)]
    }

    /// Filters all 16 lanes of `taps` (pixels); returns them with the range
    /// of taps that may have changed.
    fn filter(taps: [v128; 8], macroblock: bool, limits: Limits) -> ([v128; 8], core::ops::Range<usize>) {
        let filter = normal_mask(&taps, limits);
        let hev = high_edge_variance(&taps, limits.hev_threshold);
        let [p3, p2, p1, p0, q0, q1, q2, q3] = taps.map(signed);
        if macroblock {
            let [p2, p1, p0, q0, q1, q2] = macroblock_filter(filter, hev, [p2, p1, p0, q0, q1, q2]);
            ([p3, p2, p1, p0, q0, q1, q2, q3].map(signed), 1..7)
        } else {
            let [p1, p0, q0, q1] = subblock_filter(filter, hev, [p1, p0, q0, q1]);
            ([p3, p2, p1, p0, q0, q1, q2, q3].map(signed), 2..6)
        }
    }

    /// `subblock_filter_*` on signed taps p1..q1.
    fn subblock_filter(filter: v128, hev: v128, [p1, p0, q0, q1]: [v128; 4]) -> [v128; 4] {
        let w = filter_value(v128_and(i8x16_sub_sat(p1, q1), hev), p0, q0);
        let (a, b) = (shift3(i8x16_add_sat(w, i8x16_splat(4))), shift3(i8x16_add_sat(w, i8x16_splat(3))));
        let q0 = v128_bitselect(i8x16_sub_sat(q0, a), q0, filter);
        let p0 = v128_bitselect(i8x16_add_sat(p0, b), p0, filter);
        // a is within -16..=15, so a + 1 cannot wrap.
        let a = i8x16_shr(i8x16_add(a, i8x16_splat(1)), 1);
        let inner = v128_andnot(filter, hev);
        let q1 = v128_bitselect(i8x16_sub_sat(q1, a), q1, inner);
        let p1 = v128_bitselect(i8x16_add_sat(p1, a), p1, inner);
        [p1, p0, q0, q1]
    }

    /// `macroblock_filter_*` on signed taps p2..q2.
    fn macroblock_filter(filter: v128, hev: v128, [p2, p1, p0, q0, q1, q2]: [v128; 6]) -> [v128; 6] {
        let w = filter_value(i8x16_sub_sat(p1, q1), p0, q0);

        // High edge variance: common_adjust, p0 and q0 only.
        let narrow = v128_and(filter, hev);
        let (a, b) = (shift3(i8x16_add_sat(w, i8x16_splat(4))), shift3(i8x16_add_sat(w, i8x16_splat(3))));
        let q0 = v128_bitselect(i8x16_sub_sat(q0, a), q0, narrow);
        let p0 = v128_bitselect(i8x16_add_sat(p0, b), p0, narrow);

        // Otherwise: c((k * w + 63) >> 7) for k = 27, 18, 9, in 16 bits.
        let wide = v128_andnot(filter, hev);
        let (low, high) = (i16x8_extend_low_i8x16(w), i16x8_extend_high_i8x16(w));
        let tap = |k: i16| {
            let scaled = |half: v128| i16x8_shr(i16x8_add(i16x8_mul(half, i16x8_splat(k)), i16x8_splat(63)), 7);
            i8x16_narrow_i16x8(scaled(low), scaled(high))
        };
        let (a27, a18, a9) = (tap(27), tap(18), tap(9));
        [
            v128_bitselect(i8x16_add_sat(p2, a9), p2, wide),
            v128_bitselect(i8x16_add_sat(p1, a18), p1, wide),
            v128_bitselect(i8x16_add_sat(p0, a27), p0, wide),
            v128_bitselect(i8x16_sub_sat(q0, a27), q0, wide),
            v128_bitselect(i8x16_sub_sat(q1, a18), q1, wide),
            v128_bitselect(i8x16_sub_sat(q2, a9), q2, wide),
        ]
    }

    /// u8 <-> the signed value (pixel - 128), both ways.
    fn signed(v: v128) -> v128 {
        v128_xor(v, u8x16_splat(0x80))
    }

    fn abs_diff(a: v128, b: v128) -> v128 {
        v128_or(u8x16_sub_sat(a, b), u8x16_sub_sat(b, a))
    }

    /// Lanes passing `should_filter_*`: the simple threshold and the interior limit.
    fn normal_mask(t: &[v128; 8], limits: Limits) -> v128 {
        let [p3, p2, p1, p0, q0, q1, q2, q3] = *t;
        // 2 * |p0 - q0| + |p1 - q1| / 2, saturating at 255: above any edge limit (at most 193).
        let edge = u8x16_add_sat(u8x16_add_sat(abs_diff(p0, q0), abs_diff(p0, q0)), u8x16_shr(abs_diff(p1, q1), 1));
        let interior = [abs_diff(p2, p1), abs_diff(p1, p0), abs_diff(q3, q2), abs_diff(q2, q1), abs_diff(q1, q0)]
            .into_iter()
            .fold(abs_diff(p3, p2), |a, b| u8x16_max(a, b));
        v128_and(u8x16_le(edge, u8x16_splat(limits.edge_limit)), u8x16_le(interior, u8x16_splat(limits.interior_limit)))
    }

    fn high_edge_variance(t: &[v128; 8], threshold: u8) -> v128 {
        let [_, _, p1, p0, q0, q1, _, _] = *t;
        u8x16_gt(u8x16_max(abs_diff(p1, p0), abs_diff(q1, q0)), u8x16_splat(threshold))
    }

    /// c(outer + 3 * (q0 - p0)), as three saturating additions of c(q0 - p0).
    fn filter_value(outer: v128, p0: v128, q0: v128) -> v128 {
        let d = i8x16_sub_sat(q0, p0);
        i8x16_add_sat(i8x16_add_sat(i8x16_add_sat(outer, d), d), d)
    }

    fn shift3(v: v128) -> v128 {
        i8x16_shr(v, 3)
    }
}
