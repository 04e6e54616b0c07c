"""Learning: shards -> batches (dataset), training (train), evaluation (evaluate), concept heatmaps
(heatmaps), model comparison tables (compare)."""
