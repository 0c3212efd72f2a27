//! A global allocator that refuses any single allocation above a limit, naming the input
//! being read: the check that no header can make a reader allocate what it claims.

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The input being read, for the message of a refused allocation.
static CURRENT_INPUT: Mutex<String> = Mutex::new(String::new());

/// Records which input the fuzzer is reading now (a path), for the refusal message.
pub fn set_current_input(description: &str) {
    let mut current = CURRENT_INPUT.lock().unwrap_or_else(|e| e.into_inner());
    current.clear();
    current.push_str(description);
}

/// The system allocator with a ceiling on each request. A request above it writes the size
/// and the current input to standard error and fails, which aborts the process: the input
/// file is left on disk for reproduction.
pub struct BoundedAllocator {
    limit: usize,
    largest: AtomicUsize,
}

impl BoundedAllocator {
    /// Refuses single allocations larger than `limit` bytes.
    pub const fn new(limit: usize) -> Self {
        Self {
            limit,
            largest: AtomicUsize::new(0),
        }
    }

    /// The largest single request seen so far (bytes).
    pub fn largest(&self) -> usize {
        self.largest.load(Ordering::Relaxed)
    }

    /// The ceiling in bytes.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Records a request of `size` bytes; whether it is within the limit.
    fn within_limit(&self, size: usize) -> bool {
        self.largest.fetch_max(size, Ordering::Relaxed);
        size <= self.limit
    }

    /// Records a request and, above the limit, reports it.
    fn admit(&self, size: usize) -> bool {
        if self.within_limit(size) {
            return true;
        }
        // No allocation may happen here: the message is written from fixed buffers.
        let mut digits = [0u8; 20];
        let mut stderr = std::io::stderr();
        let _ = stderr.write_all(b"ews-fuzz: refused an allocation of ");
        let _ = stderr.write_all(decimal(size, &mut digits));
        let _ = stderr.write_all(b" bytes while reading ");
        match CURRENT_INPUT.try_lock() {
            Ok(current) => {
                let _ = stderr.write_all(current.as_bytes());
            }
            Err(_) => {
                let _ = stderr.write_all(b"(unknown input)");
            }
        }
        let _ = stderr.write_all(b"\n");
        false
    }
}

/// Writes `value` in decimal into `buffer`, returning the digits.
fn decimal(mut value: usize, buffer: &mut [u8; 20]) -> &[u8] {
    let mut at = buffer.len();
    loop {
        at -= 1;
        buffer[at] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            return &buffer[at..];
        }
    }
}

// SAFETY: every call is forwarded unchanged to `System`, or answered with a null pointer,
// which `GlobalAlloc` allows for any failed request.
unsafe impl GlobalAlloc for BoundedAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if !self.admit(layout.size()) {
            return std::ptr::null_mut();
        }
        // SAFETY: forwarded with the caller's layout.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if !self.admit(layout.size()) {
            return std::ptr::null_mut();
        }
        // SAFETY: forwarded with the caller's layout.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if !self.admit(new_size) {
            return std::ptr::null_mut();
        }
        // SAFETY: `ptr` came from `System` with `layout`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_digits() {
        let mut buffer = [0u8; 20];
        assert_eq!(decimal(0, &mut buffer), b"0");
        assert_eq!(decimal(1_000_000_007, &mut buffer), b"1000000007");
        assert_eq!(decimal(usize::MAX, &mut buffer), b"18446744073709551615");
    }

    #[test]
    fn requests_above_the_limit_are_refused() {
        let allocator = BoundedAllocator::new(1024);
        assert!(allocator.within_limit(1024));
        assert!(!allocator.within_limit(1025));
        assert_eq!(allocator.largest(), 1025);
    }
}
