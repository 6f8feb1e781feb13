"""The parts of a text-to-image graph, found by following links (never by node ids).

Augmentation rewrites a workflow at named places: "the base sampler", "the LoRA stack",
"the hires pass", "the final upscale". `read_anatomy` finds them in any graph of the usual
text-to-image shape, whatever its ids and file order: it walks upstream from the single
SaveImage along the image/latent path to the EmptyLatentImage, and from the base sampler
along the ``model`` and ``clip`` inputs to the checkpoint loader. A graph of another shape
(two outputs, an img2img start, a sampler nobody recognises) raises `AnatomyError`, which
names the node where reading stopped; nothing is guessed.

The path understood, from the empty latent to the output::

    EmptyLatentImage -> base sampler -> [refiner sampler]
      -> [hires pass: LatentUpscaleBy -> KSampler
                   or VAEDecode -> ImageUpscaleWithModel -> [ImageScaleBy] -> VAEEncode
                      -> KSampler]
      -> VAEDecode -> [ImageUpscaleWithModel -> [ImageScaleBy]] -> SaveImage
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from .graph import Link, Node, Value, Workflow
from .schema import Catalog

SAMPLER_CLASSES = ("KSampler", "KSamplerAdvanced")
CHECKPOINT_CLASS = "CheckpointLoaderSimple"
OUTPUT_CLASS = "SaveImage"
#: The input through which each node on the image/latent path reads the previous one.
PATH_INPUT = {
    "SaveImage": "images",
    "ImageScaleBy": "image",
    "ImageScale": "image",
    "ImageUpscaleWithModel": "image",
    "VAEDecode": "samples",
    "VAEEncode": "pixels",
    "KSampler": "latent_image",
    "KSamplerAdvanced": "latent_image",
    "LatentUpscaleBy": "samples",
    "LatentUpscale": "samples",
}
LATENT_UPSCALERS = ("LatentUpscaleBy", "LatentUpscale")
EMBEDDING_PATTERN = re.compile(r"embedding:([A-Za-z0-9_.\-]+)")
_EMBEDDING_SUFFIXES = (".safetensors", ".pt", ".bin", ".pth")


class AnatomyError(ValueError):
    """The graph is not a text-to-image graph whose parts flowforge can find."""


class NotApplicableError(ValueError):
    """An augmentation does not apply to this graph; the message says why."""


@dataclass(frozen=True)
class Anatomy:
    """Where the parts of one text-to-image workflow are (snapshots of its nodes)."""

    path: tuple[Node, ...]  # EmptyLatentImage ... SaveImage, along the image/latent inputs
    base: Node  # the sampler reading the empty latent
    refiner: Node | None  # KSamplerAdvanced right after the base, on another checkpoint
    refiner_checkpoint: Node | None
    hires: Node | None  # the second-pass sampler of a hires fix
    hires_kind: str | None  # "latent" or "model"
    hires_from: Link | None  # the latent the hires pass starts from
    checkpoint: Node  # the base checkpoint loader
    model_chain: tuple[Node, ...]  # model patches checkpoint -> base sampler, sampler side first
    clip_chain: tuple[Node, ...]  # clip patches checkpoint -> positive prompt, encoder side first
    positive: Node  # the base sampler's prompt encoders
    negative: Node
    final_decode: Node  # the VAEDecode after the last sampler
    final_upscale: Node | None  # ImageUpscaleWithModel after the final decode
    output: Node

    @property
    def latent(self) -> Node:
        return self.path[0]

    @property
    def samplers(self) -> tuple[Node, ...]:
        return tuple(node for node in self.path if node.class_type in SAMPLER_CLASSES)

    @property
    def loras(self) -> tuple[Node, ...]:
        """LoraLoader nodes of the base model chain, sampler side first."""
        return tuple(node for node in self.model_chain if node.class_type == "LoraLoader")

    @property
    def last_sampler(self) -> Node:
        return self.samplers[-1]


def source(workflow: Workflow, node: Node, name: str) -> Node:
    """The node whose output feeds input `name` of `node`."""
    value = node.get(name)
    if not isinstance(value, Link):
        raise AnatomyError(f"node {node.id} ({node.class_type}) has no link in input {name!r}")
    if value.node not in workflow:
        raise AnatomyError(
            f"node {node.id} ({node.class_type}) input {name!r} links to missing node "
            f"{value.node!r}"
        )
    return workflow.node(value.node)


def link(node: Node, name: str) -> Link:
    """The link in input `name` of `node` (AnatomyError if it is a literal or missing)."""
    value = node.get(name)
    if not isinstance(value, Link):
        raise AnatomyError(f"node {node.id} ({node.class_type}) has no link in input {name!r}")
    return value


def output_path(workflow: Workflow) -> tuple[Node, ...]:
    """The image/latent path from the EmptyLatentImage to the single SaveImage."""
    outputs = workflow.by_class(OUTPUT_CLASS)
    if len(outputs) != 1:
        raise AnatomyError(f"expected exactly one {OUTPUT_CLASS}, found {len(outputs)}")
    path = [outputs[0]]
    while path[-1].class_type != "EmptyLatentImage":
        node = path[-1]
        if len(path) > len(workflow):
            raise AnatomyError(f"the image path loops through node {node.id}")
        name = PATH_INPUT.get(node.class_type)
        if name is None:
            raise AnatomyError(
                f"node {node.id} ({node.class_type}) on the image path is not a text-to-image "
                "step flowforge knows"
            )
        path.append(source(workflow, node, name))
    return tuple(reversed(path))


def _chain(workflow: Workflow, start: Node, through: str) -> tuple[tuple[Node, ...], Node]:
    """Walk input `through` upstream from `start` to the checkpoint: (nodes between, loader)."""
    chain: list[Node] = []
    node = source(workflow, start, through)
    while node.class_type != CHECKPOINT_CLASS:
        if len(chain) > len(workflow):
            raise AnatomyError(f"the {through} chain loops through node {node.id}")
        if not isinstance(node.get(through), Link):
            raise AnatomyError(
                f"the {through} chain of node {start.id} stops at node {node.id} "
                f"({node.class_type}), not at a {CHECKPOINT_CLASS}"
            )
        chain.append(node)
        node = source(workflow, node, through)
    return tuple(chain), node


def _hires(path: tuple[Node, ...], extra: list[int]) -> tuple[Node | None, str | None, Link | None]:
    """The hires sampler among the samplers after base (and refiner), its kind and start."""
    if not extra:
        return None, None, None
    if len(extra) > 1:
        raise AnatomyError(f"more than one second-pass sampler: nodes {path[extra[1]].id}, ...")
    index = extra[0]
    sampler, before = path[index], path[index - 1]
    if before.class_type in LATENT_UPSCALERS:
        return sampler, "latent", link(before, "samples")
    if before.class_type == "VAEEncode":
        for back in range(index - 1, 0, -1):
            if path[back].class_type == "VAEDecode":
                return sampler, "model", link(path[back], "samples")
    raise AnatomyError(
        f"sampler {sampler.id} reads {before.class_type} {before.id}, which is neither a latent "
        "upscale nor a re-encoded image"
    )


def read_anatomy(workflow: Workflow) -> Anatomy:
    """Find the parts of a text-to-image workflow (see the module docstring)."""
    path = output_path(workflow)
    positions = [i for i, node in enumerate(path) if node.class_type in SAMPLER_CLASSES]
    if not positions or positions[0] != 1:
        raise AnatomyError("the empty latent does not feed a sampler directly")
    base = path[1]
    model_chain, checkpoint = _chain(workflow, base, "model")
    positive, negative = source(workflow, base, "positive"), source(workflow, base, "negative")
    clip_chain, clip_checkpoint = _chain(workflow, positive, "clip")
    if clip_checkpoint.id != checkpoint.id:
        raise AnatomyError(
            f"the base prompt reads the CLIP of checkpoint {clip_checkpoint.id}, the base "
            f"sampler the model of checkpoint {checkpoint.id}"
        )
    refiner = refiner_checkpoint = None
    extra = positions[1:]
    if extra and extra[0] == 2 and path[2].class_type == "KSamplerAdvanced":
        _, other = _chain(workflow, path[2], "model")
        if other.id != checkpoint.id:
            refiner, refiner_checkpoint = path[2], other
            extra = extra[1:]
    hires, hires_kind, hires_from = _hires(path, extra)
    last = positions[-1]
    decodes = [i for i in range(last, len(path)) if path[i].class_type == "VAEDecode"]
    if not decodes:
        raise AnatomyError("no VAEDecode after the last sampler")
    final_decode = path[decodes[0]]
    upscales = [n for n in path[decodes[0] :] if n.class_type == "ImageUpscaleWithModel"]
    return Anatomy(
        path=path,
        base=base,
        refiner=refiner,
        refiner_checkpoint=refiner_checkpoint,
        hires=hires,
        hires_kind=hires_kind,
        hires_from=hires_from,
        checkpoint=checkpoint,
        model_chain=model_chain,
        clip_chain=clip_chain,
        positive=positive,
        negative=negative,
        final_decode=final_decode,
        final_upscale=upscales[0] if upscales else None,
        output=path[-1],
    )


def sampler_seed(sampler: Node) -> int:
    """The noise seed of a KSampler (``seed``) or KSamplerAdvanced (``noise_seed``)."""
    value = sampler.get("seed" if sampler.class_type == "KSampler" else "noise_seed")
    if not isinstance(value, int) or isinstance(value, bool):
        raise AnatomyError(f"sampler {sampler.id} has no literal integer seed")
    return value


def prompt_inputs(workflow: Workflow) -> tuple[tuple[str, str], ...]:
    """(node id, input name) of every positive prompt text a sampler on the path reads.

    This is where a user's prompt is written into a library workflow (base and refiner
    encoders alike).
    """
    found: list[tuple[str, str]] = []
    for sampler in read_anatomy(workflow).samplers:
        encoder = source(workflow, sampler, "positive")
        for name in ("text", "text_g", "text_l"):
            if isinstance(encoder.get(name), str) and (encoder.id, name) not in found:
                found.append((encoder.id, name))
    return tuple(found)


def embeddings_in(text: str) -> tuple[str, ...]:
    """Names of the textual-inversion embeddings a prompt text uses (``embedding:NAME``)."""
    names = []
    for match in EMBEDDING_PATTERN.finditer(text):
        name = match.group(1)
        for suffix in _EMBEDDING_SUFFIXES:
            name = name.removesuffix(suffix)
        names.append(name)
    return tuple(names)


def replace_embedding(text: str, old: str, new: str | None) -> str:
    """`text` with the first ``embedding:old`` made ``embedding:new``, or removed with the
    separator before it when `new` is None."""
    token = rf"embedding:{re.escape(old)}(?:\.safetensors|\.pt|\.bin|\.pth)?(?![A-Za-z0-9_.\-])"
    if new is not None:
        return re.sub(token, f"embedding:{new}", text, count=1)
    result = re.sub(rf"[\s,]*{token}", "", text, count=1)
    return result if text[:1] in (" ", ",") else result.lstrip(" ,")


def prune(workflow: Workflow, catalog: Catalog) -> Workflow:
    """Drop every node that no output node (per the catalog's schemas) depends on."""
    stack = [
        node.id
        for node in workflow
        if (schema := catalog.get(node.class_type)) is not None and schema.output_node
    ]
    keep: set[str] = set()
    while stack:
        node_id = stack.pop()
        if node_id in keep or node_id not in workflow:
            continue
        keep.add(node_id)
        stack.extend(value.node for _, value in workflow.node(node_id).links())
    return workflow.remove_nodes(node.id for node in workflow if node.id not in keep)


def make_node(catalog: Catalog, node_id: str, class_type: str, inputs: Mapping[str, Value]) -> Node:
    """A node with its inputs in the schema's declaration order (as ComfyUI writes them)."""
    order = {spec.name: position for position, spec in enumerate(catalog[class_type].inputs)}
    items = sorted(inputs.items(), key=lambda item: order.get(item[0], len(order)))
    return Node(node_id, class_type, tuple(items))


def append(
    workflow: Workflow, catalog: Catalog, class_type: str, inputs: Mapping[str, Value]
) -> tuple[Workflow, Link]:
    """Add a node with a fresh id; returns the new workflow and a link to its output 0."""
    node = make_node(catalog, workflow.new_id(), class_type, inputs)
    return workflow.add_node(node), Link(node.id, 0)


def insert(
    workflow: Workflow,
    catalog: Catalog,
    class_type: str,
    inputs: Mapping[str, Value],
    takes_over: Sequence[Link],
) -> tuple[Workflow, Link]:
    """Add a node that takes over the readers of ``takes_over[k]``: they read its output k.

    This is how a pass-through node (LoRA, FreeU, CLIP skip, VAE loader) is spliced into a
    chain: the node itself reads the old links through `inputs`.
    """
    node = make_node(catalog, workflow.new_id(), class_type, inputs)
    for slot, old in enumerate(takes_over):
        workflow = workflow.rewire(old, Link(node.id, slot))
    return workflow.add_node(node), Link(node.id, 0)


def bypass(workflow: Workflow, node: Node, passes: Mapping[int, str]) -> Workflow:
    """Remove a pass-through node, reconnecting its readers to what it read.

    `passes` maps each output slot to the input it passes through, e.g. ``{0: "model",
    1: "clip"}`` for a LoraLoader.
    """
    for slot, name in passes.items():
        workflow = workflow.rewire(Link(node.id, slot), link(node, name))
    return workflow.remove_nodes([node.id])
