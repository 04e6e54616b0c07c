"""The only package that knows file formats (Parquet, HDF5, JSON manifests, checkpoints).

Every writer here goes through :func:`storage.atomic.atomic_path`: data is
written under a temporary name in the destination folder, fsynced, then
renamed, so a reader never sees a half-written file under its final name.

Public modules (callers outside storage/ import only these; ``storage._h5`` is internal,
tests/test_layering.py checks it):

- ``atomic``: atomic_path / atomic_write_text / atomic_write_bytes, TMP_MARK, clean_stale_tmp
- ``tables`` / ``schemas``: Parquet tables with checked schema names and versions
  (read_table, write_table, table_metadata, table_schema, table_schema_name, table_stats)
- ``features``: HDF5 frame features (write/merge, FeatureReader, read_attrs, read_frame_counts,
  read_all_features, FeatureFileScan for checking untrusted files)
- ``text``: word embeddings (HDF5), GloVe / HGR inputs, read_concept_lemmas
- ``manifest``: stage manifests (write/read, manifest_files, load_manifest_file)
- ``checkpoints``: training checkpoints (save/load), load_torch_file for foreign torch files
- ``index``: the search index; ``bundle``: HGR/HANet feature bundles; ``video_files``: video
  writer; ``lock``: one writer per output root
"""
from storage.atomic import atomic_path, atomic_write_bytes, atomic_write_text
from storage.manifest import StageManifest, read_manifest, write_manifest

__all__ = [
    "atomic_path",
    "atomic_write_bytes",
    "atomic_write_text",
    "StageManifest",
    "read_manifest",
    "write_manifest",
]
