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
    last: Cell<usize>,
}

// wasm32 without threads: one thread, so no one else sees the cells.
unsafe impl Sync for Arena {}

#[global_allocator]
static ARENA: Arena = Arena { next: Cell::new(0), last: Cell::new(0) };

impl Arena {
    /// Makes `[.., end)` addressable, growing memory if needed.
    fn reserve(end: usize) -> bool {
        let limit = memory_size(0) * PAGE;
        end <= limit || memory_grow(0, (end - limit).div_ceil(PAGE)) != usize::MAX
    }

    fn is_last(&self, ptr: *mut u8, size: usize) -> bool {
        ptr as usize == self.last.get() && ptr as usize + size == self.next.get()
    }
}

unsafe impl GlobalAlloc for Arena {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if self.next.get() == 0 {
            self.next.set(&raw const __heap_base as usize);
        }
        let start = (self.next.get() + layout.align() - 1) & !(layout.align() - 1);
        let Some(end) = start.checked_add(layout.size()) else { return null_mut() };
        if !Self::reserve(end) {
            return null_mut();
        }
        self.next.set(end);
        self.last.set(start);
        start as *mut u8
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
            self.next.set(end);
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
