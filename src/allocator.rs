//! The binary's global allocator: mimalloc, asked for alignment only when a type needs more
//! than mimalloc always gives.
//!
//! The `mimalloc` crate sends every allocation through `mi_malloc_aligned`, whose fast path
//! only serves blocks that happen to sit at the right alignment on a page with a free block
//! at hand; otherwise it takes the generic aligned path. That path ran for three of the four
//! allocations a GET makes at `-P 1` and cost about 300 instructions per request (callgrind).
//! `mi_malloc` already returns 16-byte aligned blocks (`MI_MAX_ALIGN_SIZE`), so every type up to
//! that alignment goes the plain way.

use std::alloc::{GlobalAlloc, Layout};
use std::ffi::c_void;

use libmimalloc_sys as mi;

/// What `mi_malloc` guarantees for every block (`MI_MAX_ALIGN_SIZE` on 64-bit targets).
const PLAIN_ALIGN: usize = 16;

pub struct Allocator;

/// Whether the plain calls serve `layout`: its alignment is guaranteed, and not larger than
/// the size (a block of 8 bytes is only 8-byte aligned in mimalloc's smallest size class).
fn plain(layout: &Layout) -> bool {
    layout.align() <= PLAIN_ALIGN && layout.align() <= layout.size()
}

// SAFETY: every call forwards to mimalloc with a size and alignment taken from the layout;
// blocks from the plain calls meet the layout's alignment (see `plain`), and mimalloc frees
// and reallocates blocks from either kind of call.
unsafe impl GlobalAlloc for Allocator {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if plain(&layout) {
            mi::mi_malloc(layout.size()) as *mut u8
        } else {
            mi::mi_malloc_aligned(layout.size(), layout.align()) as *mut u8
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if plain(&layout) {
            mi::mi_zalloc(layout.size()) as *mut u8
        } else {
            mi::mi_zalloc_aligned(layout.size(), layout.align()) as *mut u8
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        mi::mi_free(ptr as *mut c_void);
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let grown = Layout::from_size_align_unchecked(new_size, layout.align());
        if plain(&layout) && plain(&grown) {
            mi::mi_realloc(ptr as *mut c_void, new_size) as *mut u8
        } else {
            mi::mi_realloc_aligned(ptr as *mut c_void, new_size, layout.align()) as *mut u8
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_calls_serve_only_alignments_mimalloc_guarantees() {
        let cases = [
            (8, 8, true),
            (24, 8, true),
            (4, 4, true),
            (1, 1, true),
            (16, 16, true),
            (8, 16, false),
            (64, 32, false),
            (4096, 64, false),
        ];
        for (size, align, expected) in cases {
            let layout = Layout::from_size_align(size, align).unwrap();
            assert_eq!(plain(&layout), expected, "size {size}, align {align}");
        }
    }

    #[test]
    fn blocks_meet_their_alignment_through_alloc_and_realloc() {
        let allocator = Allocator;
        for (size, align) in [(1, 1), (24, 8), (100, 16), (100, 64), (5000, 4096)] {
            let layout = Layout::from_size_align(size, align).unwrap();
            // SAFETY: non-zero sizes; every block is freed with the layout it has.
            unsafe {
                let p = allocator.alloc(layout);
                assert!(!p.is_null());
                assert_eq!(p as usize % align, 0, "alloc {size}/{align}");
                let q = allocator.realloc(p, layout, size * 3);
                assert!(!q.is_null());
                assert_eq!(q as usize % align, 0, "realloc {size}/{align}");
                allocator.dealloc(q, Layout::from_size_align(size * 3, align).unwrap());
            }
        }
    }
}
