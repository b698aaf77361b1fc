"""Renamed config fields (cli.RENAMED_KEYS) are refused in one line naming the new key, and the table stays true:
every old name is gone from its target's signature and every new one is there (issue 23: DiffuSpec's k → gamma)."""

import inspect

import pytest
from hydra.utils import get_object

from specdiff2.bench.common import compose
from specdiff2.cli import RENAMED_KEYS, check_keys
from tests.conftest import ROOT

CONF = ROOT / "conf"


@pytest.mark.parametrize("old,new", [("k", "gamma"), ("k_min", "gamma_min"), ("k_max", "gamma_max")])
def test_an_old_diffuspec_key_names_its_new_name_and_the_hint_composes(old, new):
    message = check_keys(["decode=diffuspec", f"decode.strategy.{old}=4"], CONF, "decode")
    assert message == f"error: decode.strategy.{old} was renamed decode.strategy.{new}; pass decode.strategy.{new}=4"
    assert compose("decode", ["decode=diffuspec", f"decode.strategy.{new}=4"]).decode.strategy[new] == 4


def test_the_same_key_of_another_strategy_is_not_a_rename():
    """self-selection's k (number of drafts) stays: with decode=specdiff, k is unknown, not renamed."""
    assert check_keys(["decode=self_select", "decode.strategy.k=4"], CONF, "decode") is None
    message = check_keys(["decode=specdiff", "decode.strategy.k=4"], CONF, "decode")
    assert "renamed" not in message and "decode=self_select" in message


@pytest.mark.parametrize("target", sorted(RENAMED_KEYS))
def test_the_rename_table_matches_the_signatures(target):
    params = inspect.signature(get_object(target)).parameters
    for old, new in RENAMED_KEYS[target].items():
        assert old not in params and new in params, (target, old, new)
