"""The product's version, as installed (the distribution's metadata), for ``--version`` and start-up banners."""

from __future__ import annotations

import argparse
from importlib import metadata

DISTRIBUTION = "dicom-identity-agents"


def version() -> str:
    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:  # run from a source tree that was never installed
        return "0+unknown"


def add_version(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """``--version``: the command's name, the version and the Python it runs on."""
    import platform

    parser.add_argument("--version", action="version",
                        version=f"%(prog)s {version()} (Python {platform.python_version()})")
    return parser
