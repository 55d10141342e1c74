"""The import check each connector package runs first, so a missing extra fails with the
``pip install`` line to run instead of a bare ``No module named ...``."""

from __future__ import annotations

import importlib


def require(connector: str, extra: str, *modules: str) -> None:
    """Import ``modules`` or raise an ImportError naming the extra that brings them."""
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise ImportError(
                f"streamfn.connectors.{connector} needs the {extra!r} extra: "
                f"pip install 'streamfn[{extra}]' ({exc})"
            ) from exc
