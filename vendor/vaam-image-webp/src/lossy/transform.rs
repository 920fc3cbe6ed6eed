/// 16 bit fixed point version of cos(PI/8) * sqrt(2) - 1
const CONST1: i64 = 20091;
/// 16 bit fixed point version of sin(PI/8) * sqrt(2)
const CONST2: i64 = 35468;

// inverse discrete cosine transform, used in decoding
pub(crate) fn idct4x4(block: &mut [i32]) {
    // The intermediate results may overflow the types, so we stretch the type.
    fn fetch(block: &[i32], idx: usize) -> i64 {
        i64::from(block[idx])
    }

    // Perform one length check up front to avoid subsequent bounds checks in this function
    assert!(block.len() >= 16);

    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    if simd::idct4x4(block) {
        return;
    }

    for i in 0usize..4 {
        let a1 = fetch(block, i) + fetch(block, 8 + i);
        let b1 = fetch(block, i) - fetch(block, 8 + i);

        let t1 = (fetch(block, 4 + i) * CONST2) >> 16;
        let t2 = fetch(block, 12 + i) + ((fetch(block, 12 + i) * CONST1) >> 16);
        let c1 = t1 - t2;

        let t1 = fetch(block, 4 + i) + ((fetch(block, 4 + i) * CONST1) >> 16);
        let t2 = (fetch(block, 12 + i) * CONST2) >> 16;
        let d1 = t1 + t2;

        block[i] = (a1 + d1) as i32;
        block[4 + i] = (b1 + c1) as i32;
        block[4 * 3 + i] = (a1 - d1) as i32;
        block[4 * 2 + i] = (b1 - c1) as i32;
    }

    for i in 0usize..4 {
        let a1 = fetch(block, 4 * i) + fetch(block, 4 * i + 2);
        let b1 = fetch(block, 4 * i) - fetch(block, 4 * i + 2);

        let t1 = (fetch(block, 4 * i + 1) * CONST2) >> 16;
        let t2 = fetch(block, 4 * i + 3) + ((fetch(block, 4 * i + 3) * CONST1) >> 16);
        let c1 = t1 - t2;

        let t1 = fetch(block, 4 * i + 1) + ((fetch(block, 4 * i + 1) * CONST1) >> 16);
        let t2 = (fetch(block, 4 * i + 3) * CONST2) >> 16;
        let d1 = t1 + t2;

        block[4 * i] = ((a1 + d1 + 4) >> 3) as i32;
        block[4 * i + 3] = ((a1 - d1 + 4) >> 3) as i32;
        block[4 * i + 1] = ((b1 + c1 + 4) >> 3) as i32;
        block[4 * i + 2] = ((b1 - c1 + 4) >> 3) as i32;
    }
}

// 14.3 inverse walsh-hadamard transform, used in decoding
pub(crate) fn iwht4x4(block: &mut [i32]) {
    // Perform one length check up front to avoid subsequent bounds checks in this function
    assert!(block.len() >= 16);

    for i in 0usize..4 {
        let a1 = block[i] + block[12 + i];
        let b1 = block[4 + i] + block[8 + i];
        let c1 = block[4 + i] - block[8 + i];
        let d1 = block[i] - block[12 + i];

        block[i] = a1 + b1;
        block[4 + i] = c1 + d1;
        block[8 + i] = a1 - b1;
        block[12 + i] = d1 - c1;
    }

    for block in block.chunks_exact_mut(4) {
        let a1 = block[0] + block[3];
        let b1 = block[1] + block[2];
        let c1 = block[1] - block[2];
        let d1 = block[0] - block[3];

        let a2 = a1 + b1;
        let b2 = c1 + d1;
        let c2 = a1 - b1;
        let d2 = d1 - c1;

        block[0] = (a2 + 3) >> 3;
        block[1] = (b2 + 3) >> 3;
        block[2] = (c2 + 3) >> 3;
        block[3] = (d2 + 3) >> 3;
    }
}

pub(crate) fn wht4x4(block: &mut [i32; 16]) {
    // The intermediate results may overflow the types, so we stretch the type.
    fn fetch(block: &[i32], idx: usize) -> i64 {
        i64::from(block[idx])
    }

    // vertical
    for i in 0..4 {
        let a = fetch(block, i * 4) + fetch(block, i * 4 + 3);
        let b = fetch(block, i * 4 + 1) + fetch(block, i * 4 + 2);
        let c = fetch(block, i * 4 + 1) - fetch(block, i * 4 + 2);
        let d = fetch(block, i * 4) - fetch(block, i * 4 + 3);

        block[i * 4] = (a + b) as i32;
        block[i * 4 + 1] = (c + d) as i32;
        block[i * 4 + 2] = (a - b) as i32;
        block[i * 4 + 3] = (d - c) as i32;
    }

    // horizontal
    for i in 0..4 {
        let a1 = fetch(block, i) + fetch(block, i + 12);
        let b1 = fetch(block, i + 4) + fetch(block, i + 8);
        let c1 = fetch(block, i + 4) - fetch(block, i + 8);
        let d1 = fetch(block, i) - fetch(block, i + 12);

        let a2 = a1 + b1;
        let b2 = c1 + d1;
        let c2 = a1 - b1;
        let d2 = d1 - c1;

        let a3 = (a2 + if a2 > 0 { 1 } else { 0 }) / 2;
        let b3 = (b2 + if b2 > 0 { 1 } else { 0 }) / 2;
        let c3 = (c2 + if c2 > 0 { 1 } else { 0 }) / 2;
        let d3 = (d2 + if d2 > 0 { 1 } else { 0 }) / 2;

        block[i] = a3 as i32;
        block[i + 4] = b3 as i32;
        block[i + 8] = c3 as i32;
        block[i + 12] = d3 as i32;
    }
}

// (SIMD builds transform whole vectors, `simd::dct_rows`, instead.)
#[cfg_attr(all(target_arch = "wasm32", target_feature = "simd128"), allow(dead_code))]
pub(crate) fn dct4x4(block: &mut [i32; 16]) {
    // The intermediate results may overflow the types, so we stretch the type.
    fn fetch(block: &[i32], idx: usize) -> i64 {
        i64::from(block[idx])
    }

    // vertical
    for i in 0..4 {
        let a = (fetch(block, i * 4) + fetch(block, i * 4 + 3)) * 8;
        let b = (fetch(block, i * 4 + 1) + fetch(block, i * 4 + 2)) * 8;
        let c = (fetch(block, i * 4 + 1) - fetch(block, i * 4 + 2)) * 8;
        let d = (fetch(block, i * 4) - fetch(block, i * 4 + 3)) * 8;

        block[i * 4] = (a + b) as i32;
        block[i * 4 + 2] = (a - b) as i32;
        block[i * 4 + 1] = ((c * 2217 + d * 5352 + 14500) >> 12) as i32;
        block[i * 4 + 3] = ((d * 2217 - c * 5352 + 7500) >> 12) as i32;
    }

    // horizontal
    for i in 0..4 {
        let a = fetch(block, i) + fetch(block, i + 12);
        let b = fetch(block, i + 4) + fetch(block, i + 8);
        let c = fetch(block, i + 4) - fetch(block, i + 8);
        let d = fetch(block, i) - fetch(block, i + 12);

        block[i] = ((a + b + 7) >> 4) as i32;
        block[i + 8] = ((a - b + 7) >> 4) as i32;
        block[i + 4] = (((c * 2217 + d * 5352 + 12000) >> 16) + if d != 0 { 1 } else { 0 }) as i32;
        block[i + 12] = ((d * 2217 - c * 5352 + 51000) >> 16) as i32;
    }
}

/// The 4x4 transforms on wasm with SIMD128: the four rows (or columns) of a
/// block at once, in `i32` lanes. The scalar code computes in `i64`; `i32`
/// gives the same results while no intermediate overflows, which holds when
/// every input is within +-`EXACT_IN_I32` (the largest intermediate is then
/// under 2^31: about 5.6e8 in the inverse transform, 2.0e9 in the forward
/// one). Blocks outside that (only from corrupt streams) return `false` and
/// take the scalar code, so the output is the same bit for bit.
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
pub(crate) mod simd {
    use core::arch::wasm32::*;

    const EXACT_IN_I32: i32 = 4096;

    fn load(block: &[i32]) -> [v128; 4] {
        let row = |r: usize| i32x4(block[4 * r], block[4 * r + 1], block[4 * r + 2], block[4 * r + 3]);
        [row(0), row(1), row(2), row(3)]
    }

    fn store(block: &mut [i32], rows: [v128; 4]) {
        for (r, row) in rows.into_iter().enumerate() {
            block[4 * r] = i32x4_extract_lane::<0>(row);
            block[4 * r + 1] = i32x4_extract_lane::<1>(row);
            block[4 * r + 2] = i32x4_extract_lane::<2>(row);
            block[4 * r + 3] = i32x4_extract_lane::<3>(row);
        }
    }

    fn within_exact_range(rows: &[v128; 4]) -> bool {
        let largest = rows.iter().fold(i32x4_splat(0), |m, &r| i32x4_max(m, i32x4_abs(r)));
        // `abs` of i32::MIN is i32::MIN, which fails the test too.
        !v128_any_true(i32x4_gt(largest, i32x4_splat(EXACT_IN_I32)))
            && !v128_any_true(i32x4_lt(largest, i32x4_splat(0)))
    }

    fn transpose([r0, r1, r2, r3]: [v128; 4]) -> [v128; 4] {
        let t0 = i32x4_shuffle::<0, 4, 1, 5>(r0, r1);
        let t1 = i32x4_shuffle::<2, 6, 3, 7>(r0, r1);
        let t2 = i32x4_shuffle::<0, 4, 1, 5>(r2, r3);
        let t3 = i32x4_shuffle::<2, 6, 3, 7>(r2, r3);
        [
            i32x4_shuffle::<0, 1, 4, 5>(t0, t2),
            i32x4_shuffle::<2, 3, 6, 7>(t0, t2),
            i32x4_shuffle::<0, 1, 4, 5>(t1, t3),
            i32x4_shuffle::<2, 3, 6, 7>(t1, t3),
        ]
    }

    /// `(x * c) >> 16`, lane by lane.
    fn mul_shr16(x: v128, c: i32) -> v128 {
        i32x4_shr(i32x4_mul(x, i32x4_splat(c)), 16)
    }

    /// One pass of the inverse transform over four vectors of inputs (the
    /// scalar code's `4 * k + i` for vector k, lane i).
    fn idct_pass([x0, x1, x2, x3]: [v128; 4]) -> [v128; 4] {
        let (c1, c2) = (super::CONST1 as i32, super::CONST2 as i32);
        let a1 = i32x4_add(x0, x2);
        let b1 = i32x4_sub(x0, x2);
        let c = i32x4_sub(mul_shr16(x1, c2), i32x4_add(x3, mul_shr16(x3, c1)));
        let d = i32x4_add(i32x4_add(x1, mul_shr16(x1, c1)), mul_shr16(x3, c2));
        [i32x4_add(a1, d), i32x4_add(b1, c), i32x4_sub(b1, c), i32x4_sub(a1, d)]
    }

    pub(super) fn idct4x4(block: &mut [i32]) -> bool {
        let rows = load(block);
        if !within_exact_range(&rows) {
            return false;
        }
        store(block, idct_rows(rows));
        true
    }

    /// [`idct_rows`] where every input is within +-`EXACT_IN_I32`, `None`
    /// where the scalar code has to take it.
    #[inline(always)]
    pub(crate) fn idct_rows_checked(rows: [v128; 4]) -> Option<[v128; 4]> {
        within_exact_range(&rows).then(|| idct_rows(rows))
    }

    /// The inverse transform of a block given and returned as four rows;
    /// every input within +-`EXACT_IN_I32`.
    #[inline(always)]
    pub(crate) fn idct_rows(rows: [v128; 4]) -> [v128; 4] {
        let columns = transpose(idct_pass(rows));
        let round = |v: v128| i32x4_shr(i32x4_add(v, i32x4_splat(4)), 3);
        let [o0, o1, o2, o3] = idct_pass(columns);
        transpose([round(o0), round(o1), round(o2), round(o3)])
    }

    /// The forward transform of a block given and returned as four rows;
    /// every input within +-`EXACT_IN_I32` (the encoder's residuals are
    /// within +-255).
    #[inline(always)]
    pub(crate) fn dct_rows(rows: [v128; 4]) -> [v128; 4] {
        // The scalar code's first loop works along rows: transpose so that
        // vector k holds element k of every row.
        let [x0, x1, x2, x3] = transpose(rows);
        let eight = |v: v128| i32x4_shl(v, 3);
        let (a, b) = (eight(i32x4_add(x0, x3)), eight(i32x4_add(x1, x2)));
        let (c, d) = (eight(i32x4_sub(x1, x2)), eight(i32x4_sub(x0, x3)));
        let mix = |p: v128, q: v128, round: i32, shift: u32| {
            i32x4_shr(
                i32x4_add(i32x4_add(i32x4_mul(p, i32x4_splat(2217)), i32x4_mul(q, i32x4_splat(5352))), i32x4_splat(round)),
                shift,
            )
        };
        let y0 = i32x4_add(a, b);
        let y2 = i32x4_sub(a, b);
        let y1 = mix(c, d, 14500, 12);
        let y3 = mix(d, i32x4_neg(c), 7500, 12);
        // Back in rows, lane k now holds row k's results: the second loop
        // works down columns, one vector per row.
        let [r0, r1, r2, r3] = transpose([y0, y1, y2, y3]);
        let a = i32x4_add(r0, r3);
        let b = i32x4_add(r1, r2);
        let c = i32x4_sub(r1, r2);
        let d = i32x4_sub(r0, r3);
        let seven = i32x4_splat(7);
        let out0 = i32x4_shr(i32x4_add(i32x4_add(a, b), seven), 4);
        let out2 = i32x4_shr(i32x4_add(i32x4_sub(a, b), seven), 4);
        // `+ 1` where d != 0: the comparison's lanes are -1 there.
        let out1 = i32x4_sub(mix(c, d, 12000, 16), i32x4_ne(d, i32x4_splat(0)));
        let out3 = mix(d, i32x4_neg(c), 51000, 16);
        [out0, out1, out2, out3]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_dct_inverse() {
        const BLOCK: [i32; 16] = [
            38, 6, 210, 107, 42, 125, 185, 151, 241, 224, 125, 233, 227, 8, 57, 96,
        ];

        let mut dct_block = BLOCK.clone();

        dct4x4(&mut dct_block);

        let mut inverse_dct_block = dct_block.clone();

        idct4x4(&mut inverse_dct_block);

        assert_eq!(BLOCK, inverse_dct_block);
    }
}
