// jemalloc's options for the capstan binary, read as the allocator starts
// (before main; MALLOC_CONF in the environment still overrides them).
//
// background_thread: freed pages are returned to the system by jemalloc's
// own threads, not inside a loop's turn (what jemalloc's TUNING.md advises
// for servers). Without it an idle process never purges: the memory of a
// burst stays resident until the next allocations.
// dirty_decay_ms 1000 (default 10000): after a burst — many connections
// served, then idle — the gateway keeps an idle HTTP/1.1 connection as a
// ~160-byte parked record (docs/gateway.md, limits.idle_park_after); the
// sockets and coroutine frames the burst used go back to the system within
// a few seconds rather than ten. Measured with bench/gateway_idle.py
// (docs/benchmarks/gateway.md): RSS per idle connection ~400 B instead of
// ~1.3 KB three seconds after 3000 connections were opened.
extern "C" {
// NOLINTNEXTLINE: the name jemalloc looks for.
const char* malloc_conf = "background_thread:true,dirty_decay_ms:1000";
}
