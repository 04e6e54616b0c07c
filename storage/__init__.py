"""The only package that knows file formats (Parquet, HDF5, JSON manifests).

Every writer here goes through :func:`storage.atomic.atomic_path`: data is
written under a temporary name in the destination folder, fsynced, then
renamed, so a reader never sees a half-written file under its final name.
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
