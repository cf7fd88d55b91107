"""dicomwire a second time, as the package ``plainwire``, for the harness's own side of a fuzz run.

atheris instruments the modules named ``dicomwire``: what the code under test does steers the fuzzer.
The peers that build PDUs and the watch that parses what the core sends (fuzz/relay_peers.py,
fuzz/relay_watch.py) use the same codec, but their work is not the core's: loaded under another name
it is neither instrumented (a third of the harness's time) nor counted as coverage, so the fuzzer
keeps only inputs that take the core somewhere new. Importing this module registers the package.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

NAME = "plainwire"


def load() -> ModuleType:
    loaded = sys.modules.get(NAME)
    if loaded is not None:
        return loaded
    package = Path(__file__).resolve().parents[1] / "dicomwire"
    spec = importlib.util.spec_from_file_location(NAME, package / "__init__.py",
                                                  submodule_search_locations=[str(package)])
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[NAME] = module
    spec.loader.exec_module(module)
    return module


load()
