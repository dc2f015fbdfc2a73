"""StyleGAN2 (config-f) in plain PyTorch: networks, losses, dataset, training loop, checkpoints.

Modules: ``networks`` (G and D, state_dict names as in the reference implementation), ``ops`` (FIR
resampling, leaky ReLU), ``loss`` (logistic loss, R1, path length), ``dataset`` (frames -> memmap
cache), ``presets`` (configs, no torch), ``checkpoints`` (safetensors + JSON, snapshot names),
``training`` (the loop and the stage), ``plugin`` (registers the ``stylegan2`` trainer; imports no
torch). The package itself imports nothing so the engine's start-up stays fast.
"""
