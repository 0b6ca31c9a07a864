"""Stage 3: a submitted job followed to its verdict: launcher, no-orphans guard, tracking, logs."""
