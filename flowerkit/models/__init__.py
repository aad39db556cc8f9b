"""Models: the ViT config registry (``configs``), the torchvision-based builder (``vit``) and Google .npz
weight loading (``npz``). Import the submodules directly; this package imports nothing eagerly, so the
config registry can be read without importing torch."""
