//! `mcpgate-counted`: the mcpgate command ([`mcpgate::cli`]) with its heap allocations counted,
//! for `mcpgate-bench`'s allocations-per-request figure. It runs on the system allocator wrapped
//! by `stats_alloc` (every allocation, reallocation and free counted with atomics), so it is
//! never the binary that is timed. With `MCPGATE_COUNT_ALLOCATIONS=<file>` a thread rewrites
//! `<allocations> <bytes allocated> <bytes live>` there every 20 ms (counted since start).

use std::alloc::System;
use std::time::Duration;

use stats_alloc::{INSTRUMENTED_SYSTEM, StatsAlloc};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

fn main() -> std::process::ExitCode {
    if let Some(path) = std::env::var_os("MCPGATE_COUNT_ALLOCATIONS") {
        let path = std::path::PathBuf::from(path);
        let tmp = path.with_extension("tmp");
        std::thread::spawn(move || {
            loop {
                let s = GLOBAL.stats();
                let allocations = s.allocations + s.reallocations;
                let bytes = s.bytes_allocated as i128 + s.bytes_reallocated.max(0) as i128;
                let live = s.bytes_allocated as i128 - s.bytes_deallocated as i128
                    + s.bytes_reallocated as i128;
                let line = format!("{allocations} {bytes} {live}\n");
                // Written whole and renamed: a reader never sees half a line.
                if std::fs::write(&tmp, line)
                    .and_then(|()| std::fs::rename(&tmp, &path))
                    .is_err()
                {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        });
    }
    mcpgate::cli::main()
}
