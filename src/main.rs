//! The `fastk` binary: parses arguments and hands over to the library.

/// mimalloc reuses freed large blocks (a DoPut's receive buffers and columns) instead of
/// returning them to the kernel and page-faulting them back in on the next stream.
/// The `system-alloc` feature leaves the system allocator in place, for heap profilers.
#[cfg(not(feature = "system-alloc"))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    // Transparent huge pages off for this process, as for most databases: a DoPut's
    // fresh buffers would otherwise fault in as zeroed 2 MiB pages, which cost more
    // than the write itself (measured: docs/benchmarks/journal/). Chunk mappings are file
    // backed and unaffected. Best effort: a kernel without the prctl changes nothing.
    #[cfg(target_os = "linux")]
    let _ = nix::sys::prctl::set_thp_disable(true);
    fastk::cli::main()
}
