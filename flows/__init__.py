"""Thin Prefect flows and tasks over pipeline/ (all real work lives there)."""
