"""Training: data, skies, losses, the loop, checkpoints and tiled inference (torch)."""
