"""Datasets: ingest raw videos + annotations (ingest), import released HGR/HANet bundles (bundle),
generate the bundled sample and planted-signal data (sample_data, planted), validate built shards (validate)."""
