"""Cross-cutting helpers: errors, atomic writes, cache paths, threads, console, distributed/device."""
