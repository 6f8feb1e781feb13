"""``flowforge run``: library -> collect -> reward -> SFT (+ ComfyGen-FT) -> GRPO -> evaluate
from one config file, into one run directory, resumable stage by stage (``runner``)."""
