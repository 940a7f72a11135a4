"""Task systems: a backbone + a small head + loss + metrics as LightningModules (one per task family).

They never import the data modules (lightft/data), their siblings; the registry that pairs the two
lives above both, in lightft/train/registry.py.
"""
