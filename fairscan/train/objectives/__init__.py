"""Training objectives: each is a plain ``nn.Module`` whose ``forward(batch)`` returns the loss.

``mae.MAE`` (masked autoencoder) and ``mocov3.MoCoV3`` (momentum contrast for ViTs) are the two
self-supervised pre-training objectives; both wrap an ordinary timm ViT whose ``state_dict`` stays in timm's
key layout. Import the submodules directly: this package imports nothing heavy.
"""
