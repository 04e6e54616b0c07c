"""Transitional alias of :mod:`storage.atomic`; removed once no caller imports it."""
from storage.atomic import *  # noqa: F401,F403
from storage.atomic import TMP_MARK, atomic_path, atomic_write_bytes, atomic_write_text  # noqa: F401
from storage.atomic import clean_stale_tmp, ensure_room, tmp_name  # noqa: F401
