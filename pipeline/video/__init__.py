"""Video branch: decode frames / clips (decode), the ResNet152 and I3D-R50 backbones (backbones),
per-shard feature extraction and the merge into features/<extractor>/<split>.h5 (extract)."""
