"""Local training of segmenters: losses, the epoch loop, optimisers (used by clients, server and distillation)."""
