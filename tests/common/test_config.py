"""RunConfig: built once from Flower's kebab-case mapping, validated, stable digest."""

from __future__ import annotations

import os

import pytest

from common.config import RunConfig
from common.errors import ConfigError


def test_round_trip_through_flower_mapping() -> None:
    config = RunConfig(num_server_rounds=7, model="svm", site_dirs=("/a", "/b"), secure_aggregation=True)
    assert RunConfig.from_flower(config.to_flower()) == config
    assert config.to_flower()["site-dirs"] == os.pathsep.join(["/a", "/b"])


def test_unknown_key_is_named() -> None:
    with pytest.raises(ConfigError, match="num-server-round"):
        RunConfig.from_flower({"num-server-round": 3})


@pytest.mark.parametrize(
    ("key", "value", "fragment"),
    [
        ("num-server-rounds", 0, "at least 1"),
        ("model", "resnet-9000", "model must be one of"),
        ("learning-rate", -1.0, "positive"),
        ("num-server-rounds", "three", "must be a int"),
        ("secure-aggregation", 1, "must be a bool"),
    ],
)
def test_bad_values_fail_with_a_sentence(key: str, value: object, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        RunConfig.from_flower({key: value})


def test_digest_changes_with_any_value() -> None:
    assert RunConfig().digest() == RunConfig().digest()
    assert RunConfig().digest() != RunConfig(seed=1).digest()
