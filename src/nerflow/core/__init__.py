"""The task-agnostic core: params, paths, files, the canonical dataset, the GX harness,
inference and runtimes, statistics, the Hub and the embedded assets. Imports nothing above it."""
