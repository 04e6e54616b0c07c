"""Thin Prefect flows and tasks over pipeline/ (all real work lives there)."""
import sys as _sys

if "prefect" in _sys.modules:  # a worker / engine loading a flow: user errors' tracebacks stay out of its logs
    from flows._feedback import install_log_filters as _install

    _install()
