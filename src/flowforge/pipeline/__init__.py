"""``flowforge run``: library -> collect -> reward -> SFT (+ ComfyGen-FT) -> GRPO (-> refine)
-> evaluate from one config file, into one run directory, resumable stage by stage (``runner``)."""
