"""``flowforge run``'s config: defaults, the quick preset, files over them, errors by name."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flowforge.pipeline.config import (
    RunConfig,
    RunConfigError,
    load_run_config,
    quick_config,
)
from flowforge.pipeline.overrides import ConfigFileError, apply


def test_the_saved_config_read_back_over_the_defaults_is_the_same_config() -> None:
    for config in (RunConfig(), quick_config()):
        assert apply(RunConfig(), json.loads(json.dumps(config.to_json()))) == config


def test_the_quick_preset_is_tiny_everywhere() -> None:
    quick = quick_config()
    assert quick.library.size <= 300 and quick.evaluate.prompts == 30
    assert quick.collect.pairs * quick.collect.seeds <= 5_000
    assert quick.grpo.steps <= 10 and quick.sft.pairs <= 1_000
    assert quick.sft.train.model.hidden_size < RunConfig().sft.train.model.hidden_size


def test_a_toml_file_changes_only_what_it_names(tmp_path: Path) -> None:
    path = tmp_path / "run.toml"
    path.write_text(
        'judge = "sim:3"\n'
        'judge_opt = [["cache_dir", "/tmp/x"]]\n'
        "[collect]\npairs = 500\n"
        "[reward]\nkappa = 0\nscore_weights = [['aesthetic', 2], ['alignment', 1]]\n"
        "[sft.train.model]\nhidden_size = 64\n"
        "[evaluate]\nguidance_weights = [0.5, 2]\nprompts = 40\n",
        encoding="utf-8",
    )
    config = load_run_config(path, quick=True)
    quick = quick_config()
    assert config.judge == "sim:3" and config.judge_opt == (("cache_dir", "/tmp/x"),)
    assert config.collect.pairs == 500 and config.collect.seeds == quick.collect.seeds
    assert config.reward.kappa == 0.0 and isinstance(config.reward.kappa, float)
    assert config.reward.score_weights == (("aesthetic", 2.0), ("alignment", 1.0))
    assert config.sft.train.model.hidden_size == 64
    assert config.sft.train.model.num_hidden_layers == quick.sft.train.model.num_hidden_layers
    assert config.evaluate.guidance_weights == (0.5, 2.0) and config.evaluate.prompts == 40
    assert load_run_config(path, judge="sim:9").judge == "sim:9"


def test_a_json_file_works_the_same(tmp_path: Path) -> None:
    path = tmp_path / "run.json"
    path.write_text(json.dumps({"grpo": {"steps": 3, "beta": 0.1}}), encoding="utf-8")
    config = load_run_config(path)
    assert (config.grpo.steps, config.grpo.beta) == (3, 0.1)


def test_an_old_runs_saved_config_keeps_its_kept_policy_at_the_runs_sft_model(
    tmp_path: Path,
) -> None:
    # config.json of a run made in sessions 35-37 holds refine.sft_model = null: the run's
    # SFT model then, a model of its own (160 wide) by default since; read as it was meant
    saved = RunConfig().to_json()
    saved["refine"]["sft_model"] = None
    saved["sft"]["train"]["model"]["hidden_size"] = 64
    path = tmp_path / "config.json"
    path.write_text(json.dumps(saved), encoding="utf-8")
    config = load_run_config(path)
    assert config.refine.sft_model == config.sft.train.model
    assert config.refine.sft_model.hidden_size == 64
    assert config.refine.samples == RunConfig().refine.samples  # the rest read as written
    # without it, the default kept model stays
    del saved["refine"]["sft_model"]
    path.write_text(json.dumps(saved), encoding="utf-8")
    assert load_run_config(path).refine.sft_model == RunConfig().refine.sft_model


def test_a_toml_file_switches_the_number_ranges_off_with_zero(tmp_path: Path) -> None:
    """TOML has no null, so 0 is the spelling of "catalog ranges only" (docs/policy.md)."""
    path = tmp_path / "run.toml"
    path.write_text("[sft.train.vocab]\nnumber_stretch = 0\n", encoding="utf-8")
    assert load_run_config(path).sft.train.vocab.number_stretch == 0


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[colect]\npairs = 1\n", "unknown setting 'colect'"),
        ("[sft.train]\nbatch_sise = 4\n", "unknown setting 'sft.train.batch_sise'"),
        ('[collect]\npairs = "many"\n', "collect.pairs must be int"),
        ("[evaluate]\nconstrained = 1\n", "evaluate.constrained must be bool"),
        ("[evaluate]\nbest_of_source = 'ft'\n", "must be one of"),
        ("[collect]\npairs = 0\n", "^collect: pairs and seeds must be >= 1"),
        ("[grpo]\nbeta = -1\n", "^settings of grpo: beta and kappa must be >= 0"),
        ("[refine]\nrounds = 0\n", "refine: rounds, samples and seeds must be >= 1"),
        ("[refine]\npolicies = 0\n", "refine: policies must be >= 1"),
        ("[refine]\nsft_top_k = -1\n", "refine: sft_top_k must be >= 0"),
        ("[refine]\nsft_library_share = 1.5\n", r"sft_library_share must be in \[0, 1\]"),
        # a count of validation prompts: one wording for every such setting
        ("[refine]\nchoose_prompts = 300\n", "refine: choose_prompts is 300: 1 to the valid"),
        ("[refine]\nchoose_prompts = 0\n", "ation split's 247 prompts, or unset for all"),
        ("[evaluate]\nselect_prompts = 248\n", "select_prompts is 248: 0 to the validation"),
        ("[evaluate]\nguard_prompts = -1\n", "guard_prompts is -1: 0 to the validation spl"),
        ("[sft.train.vocab]\nnumber_stretch = 0.5\n", "number_stretch must be >= 1, or 0"),
        ("[comfygen_ft]\ndata = 'grids'\n", "comfygen_ft.data must be one of grid, triplets"),
        ("[comfygen_ft.grid]\nworkflows = 0\n", "comfygen_ft.grid: workflows must be >= 1"),
        ("[comfygen_ft.grid]\nprompts = 1200\n", "grid.prompts is 1200: 1 to the train split"),
        (
            "[comfygen_ft.grid]\nworkflows = 2001\n",
            r"workflows is 2001: at most library.size \(2000\)",
        ),
        ("jobs = 0\n", "jobs must be >= 1, got 0"),
        ("[grpo]\nsft_dir = '/elsewhere'\n", "grpo.sft_dir: paths are the run's"),
        ("[collect]\nnegative = 'ugly'\n", "negative must be equal"),
        ("collect = 3\n", "collect is a table"),
        ("[sft\n", "not valid TOML"),
    ],
)
def test_a_wrong_setting_is_one_error_naming_it(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "run.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises((ConfigFileError, RunConfigError), match=message):
        load_run_config(path)


def test_an_error_names_its_section_once(tmp_path: Path) -> None:
    """A check that already names its setting is not prefixed with the section again."""
    path = tmp_path / "run.toml"
    path.write_text("[comfygen_ft.grid]\nworkflows = 0\n", encoding="utf-8")
    with pytest.raises(ConfigFileError) as caught:
        load_run_config(path)
    assert str(caught.value) == "comfygen_ft.grid: workflows must be >= 1, got 0"


def test_unknown_file_types_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "run.yaml"
    path.write_text("a: 1\n", encoding="utf-8")
    with pytest.raises(ConfigFileError, match=r"\.toml or \.json"):
        load_run_config(path)


def test_the_evaluation_samples_policies_as_flowforge_design_does() -> None:
    from flowforge.evaluate.config import EvalConfig
    from flowforge.policy.design import DESIGN_TEMPERATURE

    assert EvalConfig().temperature == DESIGN_TEMPERATURE
