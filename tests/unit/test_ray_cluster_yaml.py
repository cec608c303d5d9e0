"""ray-cluster.yaml, checked offline the way `ray up` checks it, and against the EC2 API model.

Layers, all without network or AWS calls:

1. the JSON schema shipped inside the ray package (``ray/autoscaler/ray-schema.json``), with jsonschema;
2. Ray's own preparation and validation, ``ray.autoscaler._private.util.prepare_config`` (merge with the
   AWS defaults, setup command merging, docker checks, per-type worker limits) and ``validate_config``
   (schema again plus the cross-field rules). ``ray up`` then runs the AWS provider's
   ``fillout_available_node_types_resources`` and ``bootstrap_config``, which call the EC2/IAM APIs; those
   are left out (the config states ``resources`` itself so it does not depend on the first);
3. each ``node_config`` against botocore's offline model of EC2 ``RunInstances`` (the call Ray makes with
   it), since Ray's schema accepts any keys there.
"""

from __future__ import annotations

import copy
import json
import re
import shlex
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CLUSTER_YAML = REPO / "ray-cluster.yaml"

jsonschema = pytest.importorskip("jsonschema")  # comes with ray[default]


def _ray_schema() -> dict[str, Any]:
    import ray.autoscaler

    return json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())


def _run_instances_model() -> tuple[Any, Any]:
    import botocore.session

    ec2 = botocore.session.get_session().get_service_model("ec2")  # bundled JSON, no network
    return ec2.operation_model("RunInstances").input_shape, ec2


def check_node_config(node_config: dict[str, Any]) -> None:
    """Raise ValueError when ``node_config`` is not a valid EC2 RunInstances request (names and enums)."""
    from botocore.validate import ParamValidator

    shape, ec2 = _run_instances_model()
    # Ray adds the counts itself; SubnetIds is Ray's own plural form, translated before the call.
    params = {k: v for k, v in node_config.items() if k != "SubnetIds"} | {"MinCount": 1, "MaxCount": 1}
    report = ParamValidator().validate(params, shape)
    if report.has_errors():
        raise ValueError(report.generate_report())
    # botocore's validator does not check enums: check the ones a typo would break.
    if node_config.get("InstanceType") not in ec2.shape_for("InstanceType").enum:
        raise ValueError(f"unknown InstanceType {node_config.get('InstanceType')!r}")
    market = node_config.get("InstanceMarketOptions", {}).get("MarketType")
    if market is not None and market not in ec2.shape_for("MarketType").enum:
        raise ValueError(f"unknown MarketType {market!r}")


def check_cluster_config(config: dict[str, Any]) -> dict[str, Any]:
    """All three layers; returns Ray's prepared config. Raises on the first problem."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    jsonschema.validate(config, _ray_schema())
    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    for node_type in prepared["available_node_types"].values():
        check_node_config(node_type["node_config"])
    return prepared


@pytest.fixture()
def config() -> dict[str, Any]:
    # yaml.safe_load, as `ray up` reads it.
    return yaml.safe_load(CLUSTER_YAML.read_text())


def _start_env(command: str) -> dict[str, str]:
    """VAR=value assignments that precede `ray start` in one start command (export or inline)."""
    head, sep, _ = command.partition("ray start")
    assert sep, f"no `ray start` in {command!r}"
    words = shlex.split(head.replace(";", " "))
    return dict(w.split("=", 1) for w in words if re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", w))


def _ray_start(commands: list[str]) -> str:
    starts = [c for c in commands if "ray start" in c]
    assert len(starts) == 1, commands
    return starts[0]


# -- the shipped file -------------------------------------------------------------------------------------


def test_passes_ray_schema_preparation_and_validation(config: dict[str, Any]) -> None:
    prepared = check_cluster_config(config)
    assert prepared["provider"]["type"] == "aws"
    # Ray's AWS defaults must not leak in where we chose otherwise.
    assert prepared["head_setup_commands"] == prepared["setup_commands"]


def test_head_node_runs_no_workloads(config: dict[str, Any]) -> None:
    prepared = check_cluster_config(config)
    head = prepared["available_node_types"][prepared["head_node_type"]]
    assert head["resources"].get("CPU") == 0
    assert head["max_workers"] == 0
    start = _ray_start(prepared["head_start_ray_commands"])
    assert "--head" in start.split()
    assert "--num-cpus=0" in start.split()  # the raylet agrees with what the autoscaler is told
    assert "InstanceMarketOptions" not in head["node_config"], "losing a spot head loses the cluster"


def test_workers_autoscale_on_spot(config: dict[str, Any]) -> None:
    prepared = check_cluster_config(config)
    workers = {k: v for k, v in prepared["available_node_types"].items() if k != prepared["head_node_type"]}
    assert workers
    for name, node_type in workers.items():
        assert node_type["min_workers"] == 0, name  # scales to zero when idle
        assert 0 < node_type["max_workers"] <= prepared["max_workers"], name
        assert isinstance(node_type["resources"]["CPU"], int) and node_type["resources"]["CPU"] > 0, name
        assert node_type["node_config"]["InstanceMarketOptions"]["MarketType"] == "spot", name
    assert prepared["idle_timeout_minutes"] > 0


def test_s3_access_through_instance_profiles_not_keys(config: dict[str, Any]) -> None:
    for name, node_type in config["available_node_types"].items():
        profile = node_type["node_config"]["IamInstanceProfile"]
        assert profile.get("Name") or profile.get("Arn"), name
    text = CLUSTER_YAML.read_text()
    assert not re.search(r"AWS_(ACCESS_KEY_ID|SECRET_ACCESS_KEY|SESSION_TOKEN)\s*=", text)
    assert not re.search(r"\bAKIA[0-9A-Z]{16}\b", text)


def test_start_commands_set_auth_mode_and_thread_caps(config: dict[str, Any]) -> None:
    head = _start_env(_ray_start(config["head_start_ray_commands"]))
    worker = _start_env(_ray_start(config["worker_start_ray_commands"]))
    assert head["RAY_AUTH_MODE"] in {"token", "disabled"}
    assert head == worker  # same auth mode and caps on every node
    for cap in ("NUMBA_NUM_THREADS", "POLARS_MAX_THREADS"):
        assert head[cap] == "1", cap
    if head["RAY_AUTH_MODE"] == "token":
        # Every node needs the token the submitter holds.
        assert any(remote.endswith(".ray/auth_token") for remote in config["file_mounts"])


def test_setup_installs_the_project_checkout(config: dict[str, Any]) -> None:
    mounts = {remote: local for remote, local in config["file_mounts"].items() if local == "."}
    assert len(mounts) == 1, config["file_mounts"]  # `ray up` runs from the repository root
    (remote,) = mounts
    assert (REPO / "pyproject.toml").is_file()
    installs = [c for c in config["setup_commands"] if "pip install" in c]
    assert installs and any(remote in shlex.split(c) for c in installs)
    # Top-level folders are anchored, or rsync would also skip trader/data.
    excludes = set(config["rsync_exclude"])
    assert {"/.venv", "/data", "/runs", "/.git", "/bench/.venv-vbt"} <= excludes
    assert "data" not in excludes and "data/" not in excludes


def test_image_matches_the_installed_ray_and_python(config: dict[str, Any]) -> None:
    import ray

    image = config["docker"]["image"]
    assert f":{ray.__version__}-py{sys.version_info.major}{sys.version_info.minor}-" in image
    # The image must also satisfy the project's pin (pyproject.toml: ray[default]>=X.Y,<...).
    pin = re.search(r'"ray\[default\]>=(\d+)\.(\d+)', (REPO / "pyproject.toml").read_text())
    assert pin and ray.__version__.split(".")[:2] == [pin.group(1), pin.group(2)]


# -- broken configs are rejected --------------------------------------------------------------------------


def _worker(config: dict[str, Any]) -> dict[str, Any]:
    return next(v for k, v in config["available_node_types"].items() if k != config["head_node_type"])


def _typo_top_level(c: dict[str, Any]) -> None:
    c["max_worker"] = c.pop("max_workers")


def _typo_node_type(c: dict[str, Any]) -> None:
    w = _worker(c)
    w["min_worker"] = w.pop("min_workers")


def _fractional_cpu(c: dict[str, Any]) -> None:
    _worker(c)["resources"]["CPU"] = 0.5


def _unknown_head_type(c: dict[str, Any]) -> None:
    c["head_node_type"] = "headd"


def _min_above_max(c: dict[str, Any]) -> None:
    _worker(c)["min_workers"] = c["max_workers"] + 1


def _typo_node_config(c: dict[str, Any]) -> None:
    nc = _worker(c)["node_config"]
    nc["IamInstanceProfil"] = nc.pop("IamInstanceProfile")


def _typo_instance_type(c: dict[str, Any]) -> None:
    _worker(c)["node_config"]["InstanceType"] = "c7i.4xlarg"


def _typo_market_type(c: dict[str, Any]) -> None:
    _worker(c)["node_config"]["InstanceMarketOptions"]["MarketType"] = "spott"


def _missing_provider(c: dict[str, Any]) -> None:
    del c["provider"]


@pytest.mark.parametrize(
    ("break_it", "complaint"),
    [
        (_typo_top_level, "'max_worker' was unexpected"),
        (_typo_node_type, "'min_worker' was unexpected"),
        (_fractional_cpu, "0.5 is not of type 'integer'"),
        (_unknown_head_type, "`head_node_type` must be one of"),
        (_min_above_max, "smaller than the sum of `min_workers`"),
        (_typo_node_config, 'Unknown parameter in input: "IamInstanceProfil"'),
        (_typo_instance_type, "unknown InstanceType 'c7i.4xlarg'"),
        (_typo_market_type, "unknown MarketType 'spott'"),
        (_missing_provider, "'provider' is a required property"),
    ],
)
def test_broken_config_is_rejected(config: dict[str, Any], break_it: Any, complaint: str) -> None:
    check_cluster_config(copy.deepcopy(config))  # the unbroken one passes, so the break is what fails
    break_it(config)
    with pytest.raises((jsonschema.ValidationError, ValueError), match=re.escape(complaint)):
        check_cluster_config(config)


def test_schema_itself_rejects_a_typo_without_our_helpers(config: dict[str, Any]) -> None:
    from ray.autoscaler._private.util import validate_config

    config["idle_timeout_minute"] = 5
    with pytest.raises(jsonschema.ValidationError, match="idle_timeout_minute"):
        validate_config(config)
