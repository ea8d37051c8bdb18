"""mlhead.rules: the one DecisionRule (names, validation in CLI terms, apply/scores/tune, round trip)."""

from __future__ import annotations

import numpy as np
import pytest

from mlhead.errors import ConfigError, MlheadError
from mlhead.rules import DecisionRule, scores, tuned_rule


def _data(seed=0, n=40, c=5):
    rng = np.random.default_rng(seed)
    y = (rng.random((n, c)) < 0.3).astype(np.uint8)
    return rng.normal(size=(n, c)) + 1.5 * y, y


@pytest.mark.parametrize("kwargs, flag", [
    ({"activation": "relu"}, "--activation relu"),
    ({"activation": "softmax", "threshold": 0.0}, "--threshold 0"),
    ({"activation": "sigmoid", "threshold": 1.5}, "use --activation none"),
    ({"top_k": 0}, "--top-k 0"),
    ({"top_k": 2, "tuned_on": "val"}, "--tune-thresholds"),
])
def test_invalid_rules_name_the_cli_flag(kwargs, flag):
    with pytest.raises(ConfigError, match=flag) as e:
        DecisionRule(**kwargs)
    assert isinstance(e.value, (MlheadError, ValueError))


def test_softmax_over_one_class_is_refused_pointing_to_sigmoid():
    z = np.array([[0.3], [-2.0]])
    with pytest.raises(ConfigError, match="--activation sigmoid"):
        DecisionRule("softmax", 0.05).apply(z)
    assert DecisionRule("sigmoid", 0.5).apply(z).tolist() == [[1], [0]]


def test_names_and_slugs_are_what_captions_and_files_use():
    assert DecisionRule().name == "softmax>=0.05"
    assert DecisionRule("sigmoid").name == "sigmoid>=0.5"
    assert DecisionRule("none").name == "logit>=0"
    assert DecisionRule("softmax", top_k=3).name == "top-3 (softmax)"
    recipe = DecisionRule("sigmoid", tuned_on="val")
    assert recipe.needs_tuning and recipe.name == "per-class tuned on val (sigmoid)"
    assert recipe.slug == "per-class-tuned-on-val-sigmoid"


def test_apply_scores_and_tune():
    z, y = _data()
    rule = DecisionRule("sigmoid", 0.5)
    np.testing.assert_array_equal(rule.apply(z), (1 / (1 + np.exp(-z)) >= 0.5).astype(np.uint8))
    np.testing.assert_allclose(rule.scores(z), scores(z, "sigmoid"))
    with pytest.raises(ConfigError, match="not tuned yet"):
        DecisionRule("sigmoid", tuned_on="val").apply(z)
    tuned = DecisionRule("sigmoid", tuned_on="val").tune(z, y)
    assert tuned == tuned_rule(z, y, "sigmoid") and not tuned.needs_tuning
    assert tuned.thresholds.shape == (5,)
    with pytest.raises(ConfigError, match="--top-k"):
        DecisionRule(top_k=2).tune(z, y)


def test_dict_round_trip_and_unknown_keys():
    z, _ = _data(1)
    for r in (DecisionRule(), DecisionRule("none", 0), DecisionRule(top_k=2), tuned_rule(z, _data(1)[1], "softmax")):
        back = DecisionRule.from_dict({**r.to_dict(), "slug": r.slug})
        assert back == r and back.name == r.name
        np.testing.assert_array_equal(back.apply(z), r.apply(z))
    with pytest.raises(ConfigError, match="'treshold'"):
        DecisionRule.from_dict({"activation": "softmax", "treshold": 0.1})
