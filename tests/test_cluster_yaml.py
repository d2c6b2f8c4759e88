"""Validate cluster.yaml with Ray's own cluster-launcher validation, offline.

Replicates what `ray up` does before it touches any machine
(ray.autoscaler._private.commands.create_or_update_cluster -> _bootstrap_config):

    config = yaml.safe_load(...)
    _NODE_PROVIDERS[config["provider"]["type"]]       # provider must be known
    config = prepare_config(config)                   # defaults, local-provider prep
    config = provider_cls.fillout_available_node_types_resources(config)
    validate_config(config)                           # ray-schema.json + extra checks
    provider_cls.bootstrap_config(config)             # a no-op for the local provider

without the config cache, SSH, or any network access.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest
import yaml

jsonschema = pytest.importorskip("jsonschema")
ray = pytest.importorskip("ray")

from ray.autoscaler._private.providers import _NODE_PROVIDERS  # noqa: E402
from ray.autoscaler._private.util import prepare_config, validate_config  # noqa: E402

CLUSTER_YAML = Path(__file__).resolve().parents[1] / "cluster.yaml"


def _load() -> dict:
    return yaml.safe_load(CLUSTER_YAML.read_text())


def _ray_up_bootstrap(config: dict) -> dict:
    """The validation part of `ray up` (commands._bootstrap_config), minus caching."""
    importer = _NODE_PROVIDERS.get(config["provider"]["type"])
    assert importer is not None, f"unknown provider type {config['provider']['type']!r}"
    provider_cls = importer(config["provider"])
    config = prepare_config(copy.deepcopy(config))
    config = provider_cls.fillout_available_node_types_resources(config)
    validate_config(config)
    return provider_cls.bootstrap_config(config)


def _start_commands(config: dict, key: str) -> str:
    return "\n".join(config[key])


def test_raw_config_passes_validate_config():
    validate_config(_load())


def test_config_passes_ray_up_validation_sequence():
    resolved = _ray_up_bootstrap(_load())
    assert resolved["cluster_name"] == "optimix"
    # The local provider was turned into a single node type with one worker per IP.
    assert resolved["max_workers"] == len(resolved["provider"]["worker_ips"])
    # setup_commands got merged into the head/worker setup commands.
    for key in ("head_setup_commands", "worker_setup_commands"):
        assert any("torch==2.13.0" in c for c in resolved[key])


def test_bogus_top_level_key_fails_validation():
    bad = _load()
    bad["definitely_not_a_ray_option"] = True
    with pytest.raises(jsonschema.ValidationError):
        validate_config(bad)
    with pytest.raises(jsonschema.ValidationError):
        _ray_up_bootstrap(bad)


def test_setup_installs_torch_then_project():
    cmds = _load()["setup_commands"]
    torch_idx = next(i for i, c in enumerate(cmds) if "pip install torch==2.13.0" in c)
    proj_idx = next(
        i for i, c in enumerate(cmds) if re.search(r"pip install (-e )?\S*optimix\b", c)
    )
    assert torch_idx < proj_idx


def test_ray_version_pin_matches_installed_ray():
    # `ray up` expects the cluster to run the same Ray as the launching machine.
    pins = re.findall(r"ray\[[^\]]*\]==([\w.]+)", "\n".join(_load()["setup_commands"]))
    assert pins == [ray.__version__]


def test_start_commands_stop_first_and_bind_dashboard_to_loopback():
    config = _load()
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        assert config[key][0].strip() == "ray stop", key
        assert "ray start" in _start_commands(config, key)
        assert "RAY_AUTH_MODE=token" in _start_commands(config, key), key
    head = _start_commands(config, "head_start_ray_commands")
    assert re.search(r"--dashboard-host[ =]127\.0\.0\.1\b", head)
    assert "--dashboard-host 0.0.0.0" not in head and "--dashboard-host=0.0.0.0" not in head


def test_auth_token_is_shipped_to_nodes():
    assert "~/.ray/auth_token" in _load()["file_mounts"]


def test_notes_mention_shared_storage_and_mlflow_server():
    text = CLUSTER_YAML.read_text()
    assert "storage_path" in text
    assert "--storage-path /mnt/nfs/" in text
    assert "mlflow server" in text
    assert "--tracking-uri http://" in text
    assert "--address auto" in text
