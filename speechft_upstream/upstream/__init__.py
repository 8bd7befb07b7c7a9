"""What s3prl sees: the speechft expert (frozen CNN, head-only first β of the steps), the registry
of named checkpoints, and the multi-process launcher for the unmodified runner."""
