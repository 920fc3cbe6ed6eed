//! The core's allocator on wasm: a bump arena over the instance's memory.
//!
//! Every request runs in a fresh instance whose memory the host resets
//! afterwards, so freeing is wasted work. More to the point, Rust's default
//! wasm allocator (dlmalloc) calls `memory.grow` on its first allocation even
//! when initial memory is free, and every grow-then-reset costs the host a
//! TLB shootdown across cores: profiling showed that dominating small
//! requests. This arena starts in the free tail of initial memory (sized in
//! .cargo/config.toml) and grows memory only when a request needs more.
//! Only the most recent allocation is given back or resized in place, which
//! covers the common `Vec` growth pattern.
//!
//! An instance that serves many requests (Workers reuse them; see
//! ARCHITECTURE.md, "Set-up and serving") returns to a mark between calls:
//! what set-up built stays below it ([`keep_allocations`]), and everything a
//! call allocated above it is given back when the next call begins. "Begins"
//! is the host's first `cabi_realloc` after an export returned: that is how
//! every host lowers the next call's arguments, after it has lifted the
//! previous call's results and run its post-return. (A request served in
//! steps, `stepwise` in the WIT, is one call from `begin` to its answer.) So nothing allocated
//! during a call may outlive it: the core has no lazily initialised statics
//! (a `OnceLock` filled during a request would be freed under its feet); the
//! one thing kept across requests, the set-up, moves the mark itself.

use std::alloc::{GlobalAlloc, Layout};
use std::arch::wasm32::{memory_grow, memory_size};
use std::cell::Cell;
use std::ptr::null_mut;

const PAGE: usize = 64 * 1024;

unsafe extern "C" {
    /// Where the linker put the end of static data and stack.
    static __heap_base: u8;
}

struct Arena {
    next: Cell<usize>,
    /// The highest `next` has been: memory above it was never handed out,
    /// so it is still zero (a new instance's, or `memory.grow`'s, pages),
    /// and `alloc_zeroed` need not clear it.
    high_water: Cell<usize>,
    last: Cell<usize>,
    /// Where a new call starts: the end of what set-up keeps.
    mark: Cell<usize>,
    /// An export call has returned; the next `cabi_realloc` starts a new call.
    call_ended: Cell<bool>,
}

// wasm32 without threads: one thread, so no one else sees the cells.
unsafe impl Sync for Arena {}

#[global_allocator]
static ARENA: Arena = Arena { next: Cell::new(0), high_water: Cell::new(0), last: Cell::new(0), mark: Cell::new(0), call_ended: Cell::new(false) };

/// Room kept free above the mark: an ordinary request allocates less, so a
/// request on a set-up snapshot never grows memory (set-up's parse leaves
/// its garbage below the mark, which can take memory past its initial size).
const REQUEST_HEADROOM: usize = 256 * 1024;

/// Everything allocated so far outlives every call (the set-up).
pub fn keep_allocations() {
    let mark = ARENA.next.get();
    ARENA.mark.set(mark);
    Arena::reserve(mark + REQUEST_HEADROOM);
}

/// An export is running: allocations are its own until it returns.
pub fn call_started() {
    ARENA.call_ended.set(false);
}

/// An export has done its work; what it allocated is given back when the
/// host begins the next call (its results are lowered and lifted first).
pub fn call_ended() {
    ARENA.call_ended.set(true);
}

/// The canonical ABI's allocator export, as wit-bindgen's own (a weak
/// symbol this one replaces), except that the first allocation after a call
/// returned, which is the host lowering the next call's arguments, first
/// returns the arena to its mark.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cabi_realloc(old_ptr: *mut u8, old_len: usize, align: usize, new_len: usize) -> *mut u8 {
    if ARENA.call_ended.replace(false) {
        ARENA.return_to_mark();
    }
    if old_len == 0 && new_len == 0 {
        return align as *mut u8;
    }
    // SAFETY: the canonical ABI's contract: `old_ptr` was allocated with
    // `old_len` and `align` when `old_len` is not 0; `align` is a power of two.
    let ptr = unsafe {
        if old_len == 0 {
            ARENA.alloc(Layout::from_size_align_unchecked(new_len, align))
        } else {
            ARENA.realloc(old_ptr, Layout::from_size_align_unchecked(old_len, align), new_len)
        }
    };
    if ptr.is_null() {
        std::arch::wasm32::unreachable();
    }
    ptr
}

impl Arena {
    /// Makes `[.., end)` addressable, growing memory if needed.
    fn reserve(end: usize) -> bool {
        let limit = memory_size(0) * PAGE;
        end <= limit || memory_grow(0, (end - limit).div_ceil(PAGE)) != usize::MAX
    }

    fn return_to_mark(&self) {
        self.next.set(self.mark.get());
        self.last.set(0);
    }

    /// Hands out memory up to `end`.
    fn advance(&self, end: usize) {
        self.next.set(end);
        self.high_water.set(self.high_water.get().max(end));
    }

    fn is_last(&self, ptr: *mut u8, size: usize) -> bool {
        ptr as usize == self.last.get() && ptr as usize + size == self.next.get()
    }
}

unsafe impl GlobalAlloc for Arena {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if self.next.get() == 0 {
            self.advance(&raw const __heap_base as usize);
        }
        let start = (self.next.get() + layout.align() - 1) & !(layout.align() - 1);
        let Some(end) = start.checked_add(layout.size()) else { return null_mut() };
        if !Self::reserve(end) {
            return null_mut();
        }
        self.advance(end);
        self.last.set(start);
        start as *mut u8
    }

    /// Clears only what was handed out before: a render's large zeroed
    /// buffers (`vec![0; n]`) land on never-used memory, which is zero.
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let clean_from = self.high_water.get();
        // SAFETY: as `alloc`.
        let ptr = unsafe { self.alloc(layout) };
        if !ptr.is_null() {
            let dirty = clean_from.saturating_sub(ptr as usize).min(layout.size());
            // SAFETY: `ptr` is `layout.size()` writable bytes, `dirty` of them.
            unsafe { std::ptr::write_bytes(ptr, 0, dirty) };
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if self.is_last(ptr, layout.size()) {
            self.next.set(ptr as usize);
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if self.is_last(ptr, layout.size()) {
            let Some(end) = (ptr as usize).checked_add(new_size) else { return null_mut() };
            if !Self::reserve(end) {
                return null_mut();
            }
            self.advance(end);
            return ptr;
        }
        // SAFETY: as GlobalAlloc::realloc's default: a fresh block, then a copy.
        unsafe {
            let new = self.alloc(Layout::from_size_align_unchecked(new_size, layout.align()));
            if !new.is_null() {
                std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
            new
        }
    }
}
