"""The generated county directory (tests/data/hsds/generate.py), loaded once."""

import importlib.util
from pathlib import Path
from types import ModuleType


def _generator() -> ModuleType:
    path = Path(__file__).parents[1] / "data" / "hsds" / "generate.py"
    spec = importlib.util.spec_from_file_location("hsds_generate", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gen = _generator()
