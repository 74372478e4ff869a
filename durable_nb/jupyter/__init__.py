"""Jupyter server extension: the sidebar's REST API under ``/durable-nb/api/``.

A client of the journal server only (docs/rest-api.md): it never imports the engine or the
kernel layer, never runs user code and never unpickles payloads.
"""

from __future__ import annotations

from typing import Any

from durable_nb import __version__
from durable_nb.jupyter.app import DurableNbApp

__all__ = ["DurableNbApp", "__version__"]


def _jupyter_server_extension_points() -> list[dict[str, Any]]:
    return [{"module": "durable_nb.jupyter", "app": DurableNbApp}]
