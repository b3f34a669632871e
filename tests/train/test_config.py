"""The config: one dataclass, YAML and flags of the same names, clear refusals."""

from __future__ import annotations

import pytest

from unetkit.errors import UnetkitError
from unetkit.train.config import TrainConfig, load_yaml


def test_from_dict_coerces_strings_like_flags():
    c = TrainConfig.from_dict({"epochs": "3", "lr": "0.01", "channels_last": "false", "class_weights": "1,2.5",
                               "norm": "none", "early_stopping": "none"})
    assert c.epochs == 3 and c.lr == 0.01 and c.channels_last is False
    assert c.class_weights == [1.0, 2.5] and c.norm is None and c.early_stopping is None


def test_unknown_key_names_the_closest_setting():
    with pytest.raises(UnetkitError, match="did you mean 'epochs'"):
        TrainConfig.from_dict({"epoch": 3})


@pytest.mark.parametrize(
    "values, flag",
    [({"batch_size": 0}, "batch_size"), ({"val_fraction": 1.0}, "val_fraction"), ({"loss": "mse"}, "loss"),
     ({"patch_size": 100}, "patch_size"), ({"lr": -1.0}, "lr"), ({"epochs": "many"}, "epochs"),
     ({"flips": "vertical"}, "flips")],
)
def test_out_of_range_values_name_the_flag(values, flag):
    with pytest.raises(UnetkitError, match=flag):
        TrainConfig.from_dict(values).validate()


def test_yaml_round_trip(tmp_path):
    c = TrainConfig(data="d", out="o", epochs=7, class_weights=[1.0, 2.0])
    c.write_yaml(tmp_path / "run.yaml")
    assert TrainConfig.from_dict(load_yaml(tmp_path / "run.yaml")) == c


def test_bad_yaml_is_one_sentence(tmp_path):
    (tmp_path / "run.yaml").write_text("epochs: [3\n")
    with pytest.raises(UnetkitError, match="not valid YAML"):
        load_yaml(tmp_path / "run.yaml")
