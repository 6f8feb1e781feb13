"""The real path: ComfyUI servers render, image preference models score (``--judge comfyui``).

`client` talks to one server, `pool` spreads renders over several, `judge` is the Judge,
`factory` builds it from ``--judge-opt`` strings, `ray_executor` moves judging into Ray
actors. docs/comfyui.md is the user's guide.
"""

from .client import ComfyUIClient, NodeError, PromptRejectedError, RenderError, TransientError
from .factory import comfyui_judge_id, make_comfyui_judge, pull_catalog
from .judge import ComfyUIJudge, with_seed
from .pool import PoolConfig, ServerPool

__all__ = [
    "ComfyUIClient",
    "ComfyUIJudge",
    "NodeError",
    "PoolConfig",
    "PromptRejectedError",
    "RenderError",
    "ServerPool",
    "TransientError",
    "comfyui_judge_id",
    "make_comfyui_judge",
    "pull_catalog",
    "with_seed",
]
