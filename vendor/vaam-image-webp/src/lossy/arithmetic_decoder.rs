use crate::decoder::DecodingError;

use super::common::{IntraMode, COEFF_BANDS, DCT_CAT_BASE, PROB_DCT_CAT, ZIGZAG};
use super::TreeNode;

#[must_use]
#[repr(transparent)]
pub(crate) struct BitResult<T> {
    value_if_not_past_eof: T,
}

#[must_use]
pub(crate) struct BitResultAccumulator;

impl<T> BitResult<T> {
    const fn ok(value: T) -> Self {
        Self {
            value_if_not_past_eof: value,
        }
    }

    /// Instead of checking this result now, accumulate the burden of checking
    /// into an accumulator. This accumulator must be checked in the end.
    #[inline(always)]
    pub(crate) fn or_accumulate(self, acc: &mut BitResultAccumulator) -> T {
        let _ = acc;
        self.value_if_not_past_eof
    }
}

impl<T: Default> BitResult<T> {
    fn err() -> Self {
        Self {
            value_if_not_past_eof: T::default(),
        }
    }
}

#[cfg_attr(test, derive(Debug))]
pub(crate) struct ArithmeticDecoder {
    chunks: Box<[[u8; 4]]>,
    state: State,
    final_bytes: [u8; 3],
    final_bytes_remaining: i8,
}

#[cfg_attr(test, derive(Debug))]
#[derive(Clone, Copy)]
struct State {
    chunk_index: usize,
    value: u64,
    range: u32,
    bit_count: i32,
}

#[cfg_attr(test, derive(Debug))]
struct FastDecoder<'a> {
    chunks: &'a [[u8; 4]],
    uncommitted_state: State,
    save_state: &'a mut State,
}

impl ArithmeticDecoder {
    pub(crate) fn new() -> ArithmeticDecoder {
        let state = State {
            chunk_index: 0,
            value: 0,
            range: 255,
            bit_count: -8,
        };
        ArithmeticDecoder {
            chunks: Box::new([]),
            state,
            final_bytes: [0; 3],
            final_bytes_remaining: Self::FINAL_BYTES_REMAINING_EOF,
        }
    }

    pub(crate) fn init(&mut self, mut buf: Vec<[u8; 4]>, len: usize) -> Result<(), DecodingError> {
        let mut final_bytes = [0; 3];
        let final_bytes_remaining = if len == 4 * buf.len() {
            0
        } else {
            // Pop the last chunk (which is partial), then get length.
            let Some(last_chunk) = buf.pop() else {
                return Err(DecodingError::NotEnoughInitData);
            };
            let len_rounded_down = 4 * buf.len();
            let num_bytes_popped = len - len_rounded_down;
            debug_assert!(num_bytes_popped <= 3);
            final_bytes[..num_bytes_popped].copy_from_slice(&last_chunk[..num_bytes_popped]);
            for i in num_bytes_popped..4 {
                debug_assert_eq!(last_chunk[i], 0, "unexpected {last_chunk:?}");
            }
            num_bytes_popped as i8
        };

        let chunks = buf.into_boxed_slice();
        let state = State {
            chunk_index: 0,
            value: 0,
            range: 255,
            bit_count: -8,
        };
        *self = Self {
            chunks,
            state,
            final_bytes,
            final_bytes_remaining,
        };
        Ok(())
    }

    /// Start a span of reading operations from the buffer, without stopping
    /// when the buffer runs out. For all valid webp images, the buffer will not
    /// run out prematurely. Conversely if the buffer ends early, the webp image
    /// cannot be correctly decoded and any intermediate results need to be
    /// discarded anyway.
    ///
    /// Each call to `start_accumulated_result` must be followed by a call to
    /// `check` on the *same* `ArithmeticDecoder`.
    #[inline(always)]
    pub(crate) fn start_accumulated_result(&mut self) -> BitResultAccumulator {
        BitResultAccumulator
    }

    /// Check that the read operations done so far were all valid.
    #[inline(always)]
    pub(crate) fn check<T>(
        &self,
        acc: BitResultAccumulator,
        value_if_not_past_eof: T,
    ) -> Result<T, DecodingError> {
        // The accumulator does not store any state because doing so is
        // too computationally expensive. Passing it around is a bit of
        // formality (that is optimized out) to ensure we call `check` .
        // Instead we check whether we have read past the end of the file.
        let BitResultAccumulator = acc;

        if self.is_past_eof() {
            Err(DecodingError::BitStreamError)
        } else {
            Ok(value_if_not_past_eof)
        }
    }

    fn keep_accumulating<T>(
        &self,
        acc: BitResultAccumulator,
        value_if_not_past_eof: T,
    ) -> BitResult<T> {
        // The BitResult will be checked later by a different accumulator.
        // Because it does not carry state, that is fine.
        let BitResultAccumulator = acc;

        BitResult::ok(value_if_not_past_eof)
    }

    // Do not inline this because inlining seems to worsen performance.
    #[inline(never)]
    pub(crate) fn read_bool(&mut self, probability: u8) -> BitResult<bool> {
        if let Some(b) = self.fast().read_bool(probability) {
            return BitResult::ok(b);
        }

        self.cold_read_bool(probability)
    }

    // Do not inline this because inlining seems to worsen performance.
    #[inline(never)]
    pub(crate) fn read_flag(&mut self) -> BitResult<bool> {
        if let Some(b) = self.fast().read_flag() {
            return BitResult::ok(b);
        }

        self.cold_read_flag()
    }

    // Do not inline this because inlining seems to worsen performance.
    #[inline(never)]
    pub(crate) fn read_literal(&mut self, n: u8) -> BitResult<u8> {
        if let Some(v) = self.fast().read_literal(n) {
            return BitResult::ok(v);
        }

        self.cold_read_literal(n)
    }

    // Do not inline this because inlining seems to worsen performance.
    #[inline(never)]
    pub(crate) fn read_optional_signed_value(&mut self, n: u8) -> BitResult<i32> {
        if let Some(v) = self.fast().read_optional_signed_value(n) {
            return BitResult::ok(v);
        }

        self.cold_read_optional_signed_value(n)
    }

    // This is generic and inlined just to skip the first bounds check.
    #[inline]
    pub(crate) fn read_with_tree<const N: usize>(&mut self, tree: &[TreeNode; N]) -> BitResult<i8> {
        let first_node = tree[0];
        self.read_with_tree_with_first_node(tree, first_node)
    }

    // Do not inline this because inlining significantly worsens performance.
    #[inline(never)]
    pub(crate) fn read_with_tree_with_first_node(
        &mut self,
        tree: &[TreeNode],
        first_node: TreeNode,
    ) -> BitResult<i8> {
        if let Some(v) = self.fast().read_with_tree(tree, first_node) {
            return BitResult::ok(v);
        }

        self.cold_read_with_tree(tree, usize::from(first_node.index))
    }

    /// One 4x4 block's coefficient tokens, from position `first`, with the
    /// token tree unrolled (libwebp's `GetCoeffs`/`GetLargeValue`).
    /// Coefficients times `dq` (DC, AC) land in `block` in zigzag order; the
    /// answer is whether any token but an immediate end of block was read.
    /// Read first with the reader's state in locals (a call per token was
    /// about a third of a 1-megapixel decode in wasm); a block that runs
    /// past the data is read again bit by bit, which handles the end.
    #[inline(never)]
    pub(crate) fn read_coefficients(
        &mut self,
        probs: &[[[TreeNode; 11]; 3]; 8],
        first: usize,
        complexity: usize,
        dq: (i32, i32),
        block: &mut [i32; 16],
    ) -> Result<bool, DecodingError> {
        let mut out = *block;
        let mut fast = self.fast();
        let nonzero = coefficients(&mut fast, probs, first, complexity, dq, &mut out);
        let nonzero = match fast.commit_if_valid(nonzero) {
            Some(nonzero) => nonzero,
            None => {
                out = *block;
                let mut careful = Careful { decoder: self, result: BitResultAccumulator };
                let nonzero = coefficients(&mut careful, probs, first, complexity, dq, &mut out);
                let Careful { decoder, result } = careful;
                decoder.check(result, nonzero)?
            }
        };
        *block = out;
        Ok(nonzero)
    }

    /// A macroblock's sixteen 4x4 intra modes in raster order, each read
    /// with the tree for the modes above and left of it,
    /// `nodes[above][left]`, starting from the macroblock's above and left
    /// ones: in one call, as [`Self::read_coefficients`].
    #[inline(never)]
    pub(crate) fn read_subblock_modes(
        &mut self,
        nodes: &[[[TreeNode; 9]; 10]; 10],
        above: [IntraMode; 4],
        left: [IntraMode; 4],
    ) -> Result<[i8; 16], DecodingError> {
        let mut fast = self.fast();
        let modes = subblock_modes(&mut fast, nodes, above, left);
        if let Some(modes) = fast.commit_if_valid(modes) {
            return Ok(modes);
        }
        let mut careful = Careful { decoder: self, result: BitResultAccumulator };
        let modes = subblock_modes(&mut careful, nodes, above, left);
        let Careful { decoder, result } = careful;
        decoder.check(result, modes)
    }

    // As a similar (but different) speedup to BitResult, the FastDecoder reads
    // bits under an assumption and validates it at the end.
    //
    // The idea here is that for normal-sized webp images, the vast majority
    // of bits are somewhere other than in the last four bytes. Therefore we
    // can pretend the buffer has infinite size. After we are done reading,
    // we check if we actually read past the end of `self.chunks`.
    // If so, we backtrack (or rather we discard `uncommitted_state`)
    // and try again with the slow approach. This might result in doing double
    // work for those last few bytes -- in fact we even keep retrying the fast
    // method to save an if-statement --, but more than make up for that by
    // speeding up reading from the other thousands or millions of bytes.
    fn fast(&mut self) -> FastDecoder<'_> {
        FastDecoder {
            chunks: &self.chunks,
            uncommitted_state: self.state,
            save_state: &mut self.state,
        }
    }

    const FINAL_BYTES_REMAINING_EOF: i8 = -0xE;

    fn load_from_final_bytes(&mut self) {
        match self.final_bytes_remaining {
            1.. => {
                self.final_bytes_remaining -= 1;
                let byte = self.final_bytes[0];
                self.final_bytes.rotate_left(1);
                self.state.value <<= 8;
                self.state.value |= u64::from(byte);
                self.state.bit_count += 8;
            }
            0 => {
                // libwebp seems to (sometimes?) allow bitstreams that read one byte past the end.
                // This replicates that logic.
                self.final_bytes_remaining -= 1;
                self.state.value <<= 8;
                self.state.bit_count += 8;
            }
            _ => {
                self.final_bytes_remaining = Self::FINAL_BYTES_REMAINING_EOF;
            }
        }
    }

    fn is_past_eof(&self) -> bool {
        self.final_bytes_remaining == Self::FINAL_BYTES_REMAINING_EOF
    }

    fn cold_read_bit(&mut self, probability: u8) -> BitResult<bool> {
        if self.state.bit_count < 0 {
            if let Some(chunk) = self.chunks.get(self.state.chunk_index).copied() {
                let v = u32::from_be_bytes(chunk);
                self.state.chunk_index += 1;
                self.state.value <<= 32;
                self.state.value |= u64::from(v);
                self.state.bit_count += 32;
            } else {
                self.load_from_final_bytes();
                if self.is_past_eof() {
                    return BitResult::err();
                }
            }
        }
        debug_assert!(self.state.bit_count >= 0);

        let probability = u32::from(probability);
        let split = 1 + (((self.state.range - 1) * probability) >> 8);
        let bigsplit = u64::from(split) << self.state.bit_count;

        let retval = if let Some(new_value) = self.state.value.checked_sub(bigsplit) {
            self.state.range -= split;
            self.state.value = new_value;
            true
        } else {
            self.state.range = split;
            false
        };
        debug_assert!(self.state.range > 0);

        // Compute shift required to satisfy `self.state.range >= 128`.
        // Apply that shift to `self.state.range` and `self.state.bitcount`.
        //
        // Subtract 24 because we only care about leading zeros in the
        // lowest byte of `self.state.range` which is a `u32`.
        let shift = self.state.range.leading_zeros().saturating_sub(24);
        self.state.range <<= shift;
        self.state.bit_count -= shift as i32;
        debug_assert!(self.state.range >= 128);

        BitResult::ok(retval)
    }

    #[cold]
    #[inline(never)]
    fn cold_read_bool(&mut self, probability: u8) -> BitResult<bool> {
        self.cold_read_bit(probability)
    }

    #[cold]
    #[inline(never)]
    fn cold_read_flag(&mut self) -> BitResult<bool> {
        self.cold_read_bit(128)
    }

    #[cold]
    #[inline(never)]
    fn cold_read_literal(&mut self, n: u8) -> BitResult<u8> {
        let mut v = 0u8;
        let mut res = self.start_accumulated_result();

        for _ in 0..n {
            let b = self.cold_read_flag().or_accumulate(&mut res);
            v = (v << 1) + u8::from(b);
        }

        self.keep_accumulating(res, v)
    }

    #[cold]
    #[inline(never)]
    fn cold_read_optional_signed_value(&mut self, n: u8) -> BitResult<i32> {
        let mut res = self.start_accumulated_result();
        let flag = self.cold_read_flag().or_accumulate(&mut res);
        if !flag {
            // We should not read further bits if the flag is not set.
            return self.keep_accumulating(res, 0);
        }
        let magnitude = self.cold_read_literal(n).or_accumulate(&mut res);
        let sign = self.cold_read_flag().or_accumulate(&mut res);

        let value = if sign {
            -i32::from(magnitude)
        } else {
            i32::from(magnitude)
        };
        self.keep_accumulating(res, value)
    }

    #[cold]
    #[inline(never)]
    fn cold_read_with_tree(&mut self, tree: &[TreeNode], start: usize) -> BitResult<i8> {
        let mut index = start;
        let mut res = self.start_accumulated_result();

        loop {
            let node = tree[index];
            let prob = node.prob;
            let b = self.cold_read_bit(prob).or_accumulate(&mut res);
            let t = if b { node.right } else { node.left };
            let new_index = usize::from(t);
            if new_index < tree.len() {
                index = new_index;
            } else {
                let value = TreeNode::value_from_branch(t);
                return self.keep_accumulating(res, value);
            }
        }
    }
}

impl FastDecoder<'_> {
    #[inline(always)]
    fn commit_if_valid<T>(self, value_if_not_past_eof: T) -> Option<T> {
        // If `chunk_index > self.chunks.len()`, it means we used zeroes
        // instead of an actual chunk and `value_if_not_past_eof` is nonsense.
        if self.uncommitted_state.chunk_index <= self.chunks.len() {
            *self.save_state = self.uncommitted_state;
            Some(value_if_not_past_eof)
        } else {
            None
        }
    }

    fn read_bool(mut self, probability: u8) -> Option<bool> {
        let bit = self.fast_read_bit(probability);
        self.commit_if_valid(bit)
    }

    fn read_flag(mut self) -> Option<bool> {
        let value = self.fast_read_flag();
        self.commit_if_valid(value)
    }

    fn read_literal(mut self, n: u8) -> Option<u8> {
        let value = self.fast_read_literal(n);
        self.commit_if_valid(value)
    }

    fn read_optional_signed_value(mut self, n: u8) -> Option<i32> {
        let flag = self.fast_read_flag();
        if !flag {
            // We should not read further bits if the flag is not set.
            return self.commit_if_valid(0);
        }
        let magnitude = self.fast_read_literal(n);
        let sign = self.fast_read_flag();
        let value = if sign {
            -i32::from(magnitude)
        } else {
            i32::from(magnitude)
        };
        self.commit_if_valid(value)
    }

    fn read_with_tree(mut self, tree: &[TreeNode], first_node: TreeNode) -> Option<i8> {
        let value = self.fast_read_with_tree(tree, first_node);
        self.commit_if_valid(value)
    }

    #[inline(always)]
    fn fast_read_bit(&mut self, probability: u8) -> bool {
        let State {
            mut chunk_index,
            mut value,
            mut range,
            mut bit_count,
        } = self.uncommitted_state;

        if bit_count < 0 {
            let chunk = self.chunks.get(chunk_index).copied();
            // We ignore invalid data inside the `fast_` functions,
            // but we increase `chunk_index` below, so we can check
            // whether we read invalid data in `commit_if_valid`.
            let chunk = chunk.unwrap_or_default();

            let v = u32::from_be_bytes(chunk);
            chunk_index += 1;
            value <<= 32;
            value |= u64::from(v);
            bit_count += 32;
        }
        debug_assert!(bit_count >= 0);

        debug_assert!((128..=255).contains(&range));
        // As libwebp's `VP8GetBit`: the split's comparison with the value's
        // window (`value >> bit_count`, known before `range` is) keeps the
        // shift off the chain each bit waits on.
        let probability = u32::from(probability);
        let split_minus_one = ((range - 1) * probability) >> 8;
        let window = (value >> bit_count) as u32;
        let retval = window > split_minus_one;
        if retval {
            range -= split_minus_one + 1;
            value -= u64::from(split_minus_one + 1) << bit_count;
        } else {
            range = split_minus_one + 1;
        }

        // Compute shift required to satisfy `range >= 128`.
        // Apply that shift to `range` and `self.bitcount`.
        //
        // Subtract 24 because we only care about leading zeros in the
        // lowest byte of `range` which is a `u32`. `range` is 1..=254, so
        // this never underflows; not saturating keeps a compare and a
        // select off the chain every bit waits on.
        debug_assert!((1..=254).contains(&range));
        let shift = range.leading_zeros() - 24;
        range <<= shift;
        bit_count -= shift as i32;

        debug_assert!((128..=254).contains(&range));
        self.uncommitted_state = State {
            chunk_index,
            value,
            range,
            bit_count,
        };
        retval
    }

    fn fast_read_flag(&mut self) -> bool {
        let State {
            mut chunk_index,
            mut value,
            mut range,
            mut bit_count,
        } = self.uncommitted_state;

        if bit_count < 0 {
            let chunk = self.chunks.get(chunk_index).copied();
            // We ignore invalid data inside the `fast_` functions,
            // but we increase `chunk_index` below, so we can check
            // whether we read invalid data in `commit_if_valid`.
            let chunk = chunk.unwrap_or_default();

            let v = u32::from_be_bytes(chunk);
            chunk_index += 1;
            value <<= 32;
            value |= u64::from(v);
            bit_count += 32;
        }
        debug_assert!(bit_count >= 0);

        debug_assert!((128..=255).contains(&range));
        let half_range = range / 2;
        let split = range - half_range;
        let bigsplit = u64::from(split) << bit_count;

        let retval = if let Some(new_value) = value.checked_sub(bigsplit) {
            range = half_range;
            value = new_value;
            true
        } else {
            range = split;
            false
        };

        // Compute shift required to satisfy `range >= 128`.
        // A `range` of 64..127 requires a shift of 1. No shift if `range` is 128.
        // Apply that shift to `range` and `self.bitcount`.
        debug_assert!((64..=128).contains(&range));
        let shift = if range == 0x80 { 0 } else { 1 };
        range <<= shift;
        bit_count -= shift;

        debug_assert!((128..=254).contains(&range));
        self.uncommitted_state = State {
            chunk_index,
            value,
            range,
            bit_count,
        };
        retval
    }

    #[inline(always)]
    fn fast_read_sign(&mut self) -> bool {
        let State {
            mut chunk_index,
            mut value,
            mut range,
            mut bit_count,
        } = self.uncommitted_state;

        if bit_count < 0 {
            let chunk = self.chunks.get(chunk_index).copied();
            // We ignore invalid data inside the `fast_` functions,
            // but we increase `chunk_index` below, so we can check
            // whether we read invalid data in `commit_if_valid`.
            let chunk = chunk.unwrap_or_default();

            let v = u32::from_be_bytes(chunk);
            chunk_index += 1;
            value <<= 32;
            value |= u64::from(v);
            bit_count += 32;
        }

        // Range is only 255 at the start of decoding. After reading any symbol, it is guaranteed
        // to be at most 254. Sign bits are never the first symbol in a bit stream.
        debug_assert!((128..=254).contains(&range));
        let half_range = range / 2;
        let split = range - half_range;
        let bigsplit = u64::from(split) << bit_count;

        let retval = if let Some(new_value) = value.checked_sub(bigsplit) {
            range = half_range;
            value = new_value;
            true
        } else {
            range = split;
            false
        };

        // Compute shift required to satisfy `range >= 128`.
        // Since `range` lies in 64..127 it always requires a shift of 1.
        // Apply that shift to `range` and `self.bitcount`.
        debug_assert!((64..=127).contains(&range));
        range <<= 1;
        bit_count -= 1;

        debug_assert!((128..=254).contains(&range));
        self.uncommitted_state = State {
            chunk_index,
            value,
            range,
            bit_count,
        };
        retval
    }

    fn fast_read_literal(&mut self, n: u8) -> u8 {
        let mut v = 0u8;
        for _ in 0..n {
            let b = self.fast_read_flag();
            v = (v << 1) + u8::from(b);
        }
        v
    }

    #[inline(always)]
    fn fast_read_with_tree(&mut self, tree: &[TreeNode], mut node: TreeNode) -> i8 {
        loop {
            let prob = node.prob;
            let b = self.fast_read_bit(prob);
            let i = if b { node.right } else { node.left };
            let Some(next_node) = tree.get(usize::from(i)) else {
                return TreeNode::value_from_branch(i);
            };
            node = *next_node;
        }
    }
}

/// Where [`coefficients`] and [`subblock_modes`] get their bits: the
/// [`FastDecoder`], or near the end of the data the [`Careful`] reader.
trait Bits {
    fn bit(&mut self, probability: u8) -> bool;
    fn sign(&mut self) -> bool;
    fn tree(&mut self, tree: &[TreeNode]) -> i8;
}

impl Bits for FastDecoder<'_> {
    #[inline(always)]
    fn bit(&mut self, probability: u8) -> bool {
        self.fast_read_bit(probability)
    }

    #[inline(always)]
    fn sign(&mut self) -> bool {
        self.fast_read_sign()
    }

    #[inline(always)]
    fn tree(&mut self, tree: &[TreeNode]) -> i8 {
        self.fast_read_with_tree(tree, tree[0])
    }
}

/// Bits read one by one against the end of the data: past it they read as
/// zeros, and [`ArithmeticDecoder::check`] on `result` reports it.
struct Careful<'a> {
    decoder: &'a mut ArithmeticDecoder,
    result: BitResultAccumulator,
}

impl Bits for Careful<'_> {
    fn bit(&mut self, probability: u8) -> bool {
        self.decoder.cold_read_bit(probability).or_accumulate(&mut self.result)
    }

    fn sign(&mut self) -> bool {
        self.decoder.cold_read_flag().or_accumulate(&mut self.result)
    }

    fn tree(&mut self, tree: &[TreeNode]) -> i8 {
        self.decoder.cold_read_with_tree(tree, 0).or_accumulate(&mut self.result)
    }
}

/// [`ArithmeticDecoder::read_coefficients`]'s tokens, from `bits`.
#[inline(always)]
fn coefficients<B: Bits>(
    bits: &mut B,
    probs: &[[[TreeNode; 11]; 3]; 8],
    first: usize,
    complexity: usize,
    dq: (i32, i32),
    block: &mut [i32; 16],
) -> bool {
    let mut n = first;
    let mut p = &probs[usize::from(COEFF_BANDS[n])][complexity];
    loop {
        if !bits.bit(p[0].prob) {
            // End of block.
            return n > first;
        }
        // A run of zeros (no end of block can follow a zero).
        while !bits.bit(p[1].prob) {
            n += 1;
            if n == 16 {
                return true;
            }
            p = &probs[usize::from(COEFF_BANDS[n])][0];
        }
        let (magnitude, context) = if !bits.bit(p[2].prob) { (1, 1) } else { (large_value(bits, p), 2) };
        let value = if bits.sign() { -magnitude } else { magnitude };
        block[usize::from(ZIGZAG[n])] = value * if n > 0 { dq.1 } else { dq.0 };
        n += 1;
        if n == 16 {
            return true;
        }
        p = &probs[usize::from(COEFF_BANDS[n])][context];
    }
}

/// A token of 2 or more, as libwebp's `GetLargeValue`: the tree's nodes 3
/// to 10, then a category's extra bits.
#[inline(always)]
fn large_value<B: Bits>(bits: &mut B, p: &[TreeNode; 11]) -> i32 {
    if !bits.bit(p[3].prob) {
        if !bits.bit(p[4].prob) {
            2
        } else {
            3 + i32::from(bits.bit(p[5].prob))
        }
    } else if !bits.bit(p[6].prob) {
        let category = usize::from(bits.bit(p[7].prob));
        extra_bits(bits, category)
    } else {
        let high = bits.bit(p[8].prob);
        let low = bits.bit(p[9 + usize::from(high)].prob);
        extra_bits(bits, 2 + 2 * usize::from(high) + usize::from(low))
    }
}

/// DCT_CAT1 (`category` 0) to DCT_CAT6: base plus extra bits.
#[inline(always)]
fn extra_bits<B: Bits>(bits: &mut B, category: usize) -> i32 {
    let mut extra = 0;
    for &prob in PROB_DCT_CAT[category].iter().take_while(|&&prob| prob != 0) {
        extra = 2 * extra + i32::from(bits.bit(prob));
    }
    i32::from(DCT_CAT_BASE[category]) + extra
}

/// [`ArithmeticDecoder::read_subblock_modes`]'s modes, from `bits`.
#[inline(always)]
fn subblock_modes<B: Bits>(bits: &mut B, nodes: &[[[TreeNode; 9]; 10]; 10], above: [IntraMode; 4], left: [IntraMode; 4]) -> [i8; 16] {
    let (mut above, mut left) = (above.map(|m| m as usize), left.map(|m| m as usize));
    let mut modes = [0; 16];
    for (i, mode) in modes.iter_mut().enumerate() {
        let (x, y) = (i % 4, i / 4);
        *mode = bits.tree(&nodes[above[x]][left[y]]);
        // The tree's leaves are the ten modes.
        (above[x], left[y]) = (*mode as usize, *mode as usize);
    }
    modes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_arithmetic_decoder_hello_short() {
        let mut decoder = ArithmeticDecoder::new();
        let data = b"hel";
        let size = data.len();
        let mut buf = vec![[0u8; 4]; 1];
        buf.as_mut_slice().as_flattened_mut()[..size].copy_from_slice(&data[..]);
        decoder.init(buf, size).unwrap();
        let mut res = decoder.start_accumulated_result();
        assert_eq!(false, decoder.read_flag().or_accumulate(&mut res));
        assert_eq!(true, decoder.read_bool(10).or_accumulate(&mut res));
        assert_eq!(false, decoder.read_bool(250).or_accumulate(&mut res));
        assert_eq!(1, decoder.read_literal(1).or_accumulate(&mut res));
        assert_eq!(5, decoder.read_literal(3).or_accumulate(&mut res));
        assert_eq!(64, decoder.read_literal(8).or_accumulate(&mut res));
        assert_eq!(185, decoder.read_literal(8).or_accumulate(&mut res));
        decoder.check(res, ()).unwrap();
    }

    #[test]
    fn test_arithmetic_decoder_hello_long() {
        let mut decoder = ArithmeticDecoder::new();
        let data = b"hello world";
        let size = data.len();
        let mut buf = vec![[0u8; 4]; (size + 3) / 4];
        buf.as_mut_slice().as_flattened_mut()[..size].copy_from_slice(&data[..]);
        decoder.init(buf, size).unwrap();
        let mut res = decoder.start_accumulated_result();
        assert_eq!(false, decoder.read_flag().or_accumulate(&mut res));
        assert_eq!(true, decoder.read_bool(10).or_accumulate(&mut res));
        assert_eq!(false, decoder.read_bool(250).or_accumulate(&mut res));
        assert_eq!(1, decoder.read_literal(1).or_accumulate(&mut res));
        assert_eq!(5, decoder.read_literal(3).or_accumulate(&mut res));
        assert_eq!(64, decoder.read_literal(8).or_accumulate(&mut res));
        assert_eq!(185, decoder.read_literal(8).or_accumulate(&mut res));
        assert_eq!(31, decoder.read_literal(8).or_accumulate(&mut res));
        decoder.check(res, ()).unwrap();
    }

    #[test]
    fn test_arithmetic_decoder_uninit() {
        let mut decoder = ArithmeticDecoder::new();
        let mut res = decoder.start_accumulated_result();
        let _ = decoder.read_flag().or_accumulate(&mut res);
        let result = decoder.check(res, ());
        assert!(result.is_err());
    }
}
