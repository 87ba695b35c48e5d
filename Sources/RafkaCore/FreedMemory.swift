#if canImport(Glibc)
import Glibc
#endif

/// How the process's allocator treats memory it frees.
public enum FreedMemory {
    /// Keeps freed memory in the allocator for the next allocation instead of handing it back
    /// to the kernel at once (glibc: buffers up to 32 MiB, its ceiling, come from the heap
    /// rather than their own mmap, and up to 512 MiB of free heap is kept). Each thread's heap
    /// also keeps 32 MiB of top padding: glibc 2.36 gave a thread whose 64 MiB heap was nearly
    /// full a new heap for a large buffer and, before using it, deleted it again (its trim
    /// keeps a new heap only when the old one's free tail is under the padding) and took the
    /// buffer from another arena. A broker event loop did that about 390 times a second at
    /// 840,000 records/s (some 1,000 produce requests a second; counted with strace), each time
    /// mapping 128 MiB and unmapping it in two calls, and an unmapping interrupts every other
    /// core running the process to flush its TLB. Returns false if
    /// the allocator refused (or is not glibc's). Records pass through large, short-lived
    /// buffers (an append's copy, a fetch's response, a hot-cache entry); each one returned to
    /// the kernel has to be faulted in and zeroed again on the next use — on a VM whose freed
    /// memory goes back to its host, from the host: reading 400 MB from the hot cache took 12–20 ms
    /// per fetch instead of 4–8 (docs/benchmarks.md). Call once, before the first large allocation.
    @discardableResult
    public static func keepForReuse() -> Bool {
        #if os(Linux)
        // <malloc.h> is not in Glibc's Swift module: mallopt is looked up by name.
        guard let symbol = dlsym(nil, "mallopt") else { return false }
        let mallopt = unsafeBitCast(symbol, to: (@convention(c) (Int32, Int32) -> Int32).self)
        let trimThreshold: Int32 = -1, topPad: Int32 = -2, mmapThreshold: Int32 = -3  // M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD
        // mallopt answers 1 on success; above 32 MiB (64-bit glibc's maximum) it refuses, and a
        // set trim threshold alone would pin the mmap threshold at its 128 KiB start. The top
        // padding covers every buffer the heap serves (up to the mmap threshold); it reserves
        // address space, and memory only as it is used.
        return mallopt(mmapThreshold, 32 << 20) == 1 && mallopt(trimThreshold, 512 << 20) == 1
            && mallopt(topPad, 32 << 20) == 1
        #else
        return false
        #endif
    }
}
