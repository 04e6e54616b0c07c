"""Pure stage code: typed config in, files out. No Prefect import here."""
