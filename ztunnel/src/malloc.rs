//! glibc's allocator, tuned for a proxy that moves bulk data.
//!
//! By default glibc serves allocations from 128 KiB up with `mmap` (raising
//! that threshold as such blocks are freed) and hands the free top of a heap
//! back to the kernel once it passes twice that. A busy tunnel allocates
//! and frees buffers of up to 256 KiB all the time (the copy loop's reads,
//! h2's frame buffer), so every one came back as fresh pages: 140-180 page
//! faults per MB through a ztunnel pair, each a zeroed page and, in a VM
//! that reports free pages to its host, a trip through the hypervisor.
//! With blocks up to 2 MiB kept in the heap and up to 4 MiB of free heap
//! kept for reuse, the pair takes under one fault per MB and about 20% less
//! CPU per byte (docs/performance.md).
//!
//! The price is memory kept after a burst: up to 4 MiB of free heap per
//! busy thread's arena (glibc trims only the main arena's top on request).
//! Free chunks elsewhere go back every [`TRIM_PERIOD`], so a busy
//! ztunnel refaults a few pages per period rather than every buffer.
//!
//! The only unsafe code of the crate: `mallopt` and `malloc_trim` are C
//! functions with no safe binding. Both are thread-safe and take plain
//! integers. Elsewhere than glibc this module does nothing.

use std::time::Duration;

/// How often memory kept for reuse goes back to the kernel.
pub const TRIM_PERIOD: Duration = Duration::from_secs(10);

/// Blocks up to this size come from the heap rather than `mmap`.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD: libc::c_int = 2 << 20;
/// Free heap kept at the top of each arena before `free` trims it.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const TRIM_THRESHOLD: libc::c_int = 4 << 20;

/// Applies the tuning, unless the operator tuned malloc through
/// `GLIBC_TUNABLES` (then theirs stands). Call before other threads start.
/// Says what it did, for the startup log.
pub fn tune() -> &'static str {
    if tuned_by_operator(std::env::var("GLIBC_TUNABLES").ok().as_deref()) {
        return "malloc tuned by GLIBC_TUNABLES";
    }
    tune_glibc()
}

/// Whether `GLIBC_TUNABLES` (its value, if set) sets any malloc tunable.
fn tuned_by_operator(tunables: Option<&str>) -> bool {
    tunables.is_some_and(|t| t.split(':').any(|t| t.starts_with("glibc.malloc.")))
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn tune_glibc() -> &'static str {
    // SAFETY: `mallopt` takes two integers and only changes allocator
    // parameters; it is safe to call at any time.
    let applied = unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
            && libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
    };
    if applied {
        "malloc keeps buffers up to 2 MiB for reuse"
    } else {
        "malloc tuning refused by glibc; running with its defaults"
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn tune_glibc() -> &'static str {
    "malloc not tuned (not glibc)"
}

/// Returns free memory to the kernel every [`TRIM_PERIOD`], forever.
pub async fn return_free_memory() {
    let mut every = tokio::time::interval(TRIM_PERIOD);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        trim();
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn trim() {
    // SAFETY: `malloc_trim` takes the padding to keep and locks each arena
    // while it releases that arena's free pages.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim() {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_operators_malloc_tunable_wins_and_others_do_not_count() {
        assert!(tuned_by_operator(Some("glibc.malloc.arena_max=2")));
        assert!(tuned_by_operator(Some(
            "glibc.cpu.hwcaps=-AVX:glibc.malloc.trim_threshold=0"
        )));
        assert!(!tuned_by_operator(Some("glibc.cpu.hwcaps=-AVX")));
        assert!(!tuned_by_operator(Some("")));
        assert!(!tuned_by_operator(None));
    }

    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn glibc_accepts_the_tuning() {
        assert_eq!(tune_glibc(), "malloc keeps buffers up to 2 MiB for reuse");
        // And trimming afterwards is harmless to live allocations.
        let live = vec![7u8; 1 << 20];
        trim();
        assert!(live.iter().all(|&b| b == 7));
    }
}
