"""The pseudonymisation service's configuration: the demo file loads; each mistake names file and key."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest

import tomlconf
from pseudonymizer.config import load_config
from tomlconf import ConfigError

DEMO = Path(__file__).resolve().parents[2] / "configs" / "demo" / "pseudonymizer.toml"


def test_the_demo_file_loads_with_each_project_named_and_scoped() -> None:
    config = load_config(DEMO)
    assert {p.project_id: p.scope for p in config.projects.values()} == {"STUDY-A": "STUDY-A", "STUDY-B": "STUDY-B"}
    assert config.server.access_log_path.name == "access.jsonl" and config.access.translate_clients


@pytest.mark.parametrize(("patch", "key"), [
    ({"projects": {"STUDY-A": {"prefix": "sa"}}}, "projects.STUDY-A.prefix"),
    ({"projects": {"STUDY-A": {"uid_root": "1.02"}}}, "projects.STUDY-A.uid_root"),
    ({"projects": {"STUDY-A": {"colour": "red"}}}, "projects.STUDY-A.colour"),
    ({"server": {"host": "0.0.0.0"}}, "server.host"),
    ({"server": {"tls_certificate": "cert.pem"}}, "server.tls_certificate"),
    ({"identity": {"algorithms": ["HS256"]}}, "identity.algorithms"),
    ({"identity": {"issuer": "http://hial.example"}}, "identity.issuer"),
    ({"limits": {"max_values": 0}}, "limits.max_values"),
])
def test_each_mistake_names_the_file_and_the_key(tmp_path: Path, patch: dict[str, Any], key: str) -> None:
    data = tomllib.loads(DEMO.read_text())
    for table, values in patch.items():
        for name, value in values.items():
            if isinstance(value, dict):
                data[table][name].update(value)
            else:
                data[table][name] = value
    path = tomlconf.write(tmp_path / "pseudonymizer.toml", data)
    with pytest.raises(ConfigError) as error:
        load_config(path)
    assert str(error.value).startswith(f"{path}: {key}:"), str(error.value)


def test_a_service_without_projects_is_refused(tmp_path: Path) -> None:
    data = tomllib.loads(DEMO.read_text())
    data["projects"] = {}
    with pytest.raises(ConfigError, match="projects: at least one"):
        load_config(tomlconf.write(tmp_path / "p.toml", data))
