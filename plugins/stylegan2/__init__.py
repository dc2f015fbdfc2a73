"""StyleGAN2 (config-f) in plain PyTorch: networks, losses, dataset, training loop, checkpoints."""
