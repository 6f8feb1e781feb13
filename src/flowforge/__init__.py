"""flowforge: design ComfyUI text-to-image workflows per prompt (arXiv 2505.21478)."""

__version__ = "0.1.0"
