"""The generated test data sets (tests/data/<kind>/generate.py), each loaded once."""

import importlib.util
from pathlib import Path
from types import ModuleType

DATA = Path(__file__).parents[1] / "data"


def generator(kind: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"{kind}_generate", DATA / kind / "generate.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gen = generator("hsds")  # a county directory with known broken rows
roster = generator("oneroster")  # a district's SIS export with known broken rows
