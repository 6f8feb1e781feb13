"""The small collection the collection and export tests run: ten prompts, the fake judge."""

from __future__ import annotations

from pathlib import Path

from flowforge.data.collect import CollectConfig
from flowforge.judge.loader import LoadedJudge, load_judge

FAKE = "fake_judge:make_judge"
#: Quotes, a backslash, a ``$``, non-ASCII: texts that must reach the judge verbatim.
PROMPTS = [
    "a red fox in fresh snow",
    'a neon sign that says "open", rainy night',
    "a lighthouse at dusk, oil painting",
    "ein Frühstück mit Croissants, 35mm",
    "a bowl of ramen \\ steam, studio photo",
    "a broken robot in a wheat field",
    "a cat wearing a $5 hat",
    "an isometric city, low poly",
    "a portrait of an old sailor, film grain",
    "two cows on a hill",
]


def write_prompts(folder: Path) -> Path:
    path = folder / "prompts.txt"
    path.write_text("\n".join(PROMPTS) + "\n", encoding="utf-8")
    return path


def config_for(tmp_path: Path, prompts: Path, **changes: object) -> CollectConfig:
    """A run of 30 pairs x 2 seeds over a 12-workflow default library, fake judge."""
    options = changes.pop("judge_opt", {})
    assert isinstance(options, dict)
    values: dict[str, object] = {
        "out": tmp_path / "run",
        "judge": FAKE,
        "judge_opt": tuple(sorted(options.items())),
        "prompts": str(prompts),
        "library_size": 12,
        "pairs": 30,
        "seeds": 2,
        "batch_size": 8,
        "backoff_seconds": 0.0,
    }
    values.update(changes)
    return CollectConfig(**values)  # type: ignore[arg-type]


def judge_for(config: CollectConfig) -> LoadedJudge:
    return load_judge(config.judge, dict(config.judge_opt))
