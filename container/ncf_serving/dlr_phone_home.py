"""Keep DLR from phoning home.

``import dlr`` starts DLR's usage reporting to an AWS endpoint unless the file
``dlr/counter/ccm_config.json`` (inside the installed package) says ``{"enable_phone_home": false}``;
the check happens at import time, so the file must exist before the first import. The image
writes it at build time (``python -m ncf_serving disable-dlr-phone-home``) and the DLR runtime
adapter calls :func:`disable_dlr_phone_home` again before importing, so no code path can import
DLR with reporting on. This module never imports ``dlr`` itself.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

CONFIG_KEY = "enable_phone_home"


def dlr_config_path() -> Path:
    """Where DLR reads its reporting switch, found without importing DLR."""
    spec = importlib.util.find_spec("dlr")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the dlr package is not installed (pip install dlr==1.6.0)")
    return Path(next(iter(spec.submodule_search_locations))) / "counter" / "ccm_config.json"


def phone_home_disabled(path: Path) -> bool:
    try:
        return json.loads(path.read_text(encoding="utf-8")).get(CONFIG_KEY) is False
    except (OSError, ValueError, AttributeError):
        return False


def disable_dlr_phone_home() -> Path:
    """Make sure DLR's ``ccm_config.json`` disables reporting; raise if that cannot be ensured."""
    path = dlr_config_path()
    if phone_home_disabled(path):
        return path
    try:
        existing = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    except (OSError, ValueError):
        existing = {}
    config = {**(existing if isinstance(existing, dict) else {}), CONFIG_KEY: False}
    try:
        path.write_text(json.dumps(config), encoding="utf-8")
    except OSError as exc:
        raise RuntimeError(f"cannot write {path} to disable DLR phone-home ({exc}); refusing to import dlr") from None
    return path
