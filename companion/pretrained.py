"""Other people's weights in the course's model: GPT-2 and Llama checkpoints into :class:`~companion.models.TinyGPT`.

A Hugging Face checkpoint is a folder with two files:

* ``config.json`` — the sizes (``n_embd``, ``n_layer``, ... for GPT-2;
  ``hidden_size``, ``num_key_value_heads``, ... for Llama), which
  :func:`config_from_hf` turns into a :class:`~companion.models.GPTConfig`;
* ``model.safetensors`` — the tensors, which :func:`read_safetensors` reads
  (an 8-byte little-endian header length, a JSON header giving each tensor's
  dtype, shape and byte range, then the raw little-endian numbers).

:func:`load_hf_tensors` copies them into the model by an explicit table of
names (:func:`weight_map`): GPT-2 stores its linear layers as ``Conv1D`` with
weights ``[in, out]``, the transpose of ``nn.Linear``'s; Llama keeps q, k and v
in three matrices, which the course's attention stacks into one. A missing,
unexpected or misshapen tensor is an error that names it.

:func:`load_pretrained` takes such a folder, or the name of a repository on the
Hugging Face hub (e.g. ``"gpt2"``): it then downloads the two files once into
``config.cache_dir()/pretrained/`` (a temporary file, checked against the
size and hash the hub publishes, renamed into place), honouring ``HF_ENDPOINT``
and ``HF_HUB_OFFLINE``.
"""

from __future__ import annotations

import http.client
import json
import math
import os
import re
import sys
import urllib.request
from pathlib import Path

import torch

from companion import config as settings
from companion import data
from companion.models.gpt import GPTConfig, TinyGPT

__all__ = [
    "PretrainedUnavailableError",
    "config_from_hf",
    "download",
    "load_hf_tensors",
    "load_pretrained",
    "read_checkpoint_tensors",
    "read_safetensors",
    "weight_map",
]

HUB = "https://huggingface.co"
"""The Hugging Face hub; ``HF_ENDPOINT`` replaces it (a mirror)."""
FILES = ("config.json", "model.safetensors")
"""The files of a checkpoint that :func:`load_pretrained` reads (and downloads)."""
SHARD_INDEX = "model.safetensors.index.json"
"""The list of a large checkpoint's shards, which a local folder may hold instead of ``model.safetensors``."""

SAFETENSORS_DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}
"""The dtype codes of the safetensors format that :func:`read_safetensors` reads."""

class PretrainedUnavailableError(FileNotFoundError):
    """A checkpoint is neither in the cache nor downloadable."""


# --------------------------------------------------------------------------------------------
# the safetensors format
# --------------------------------------------------------------------------------------------


def read_safetensors(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """The tensors of a ``.safetensors`` file, by name.

    The file is ``N`` (8 bytes, little-endian unsigned), then ``N`` bytes of JSON
    ``{name: {"dtype": "F32", "shape": [...], "data_offsets": [begin, end]}, ...}``
    (and an optional ``"__metadata__"``), then the data: tensor ``name`` is the bytes
    ``begin … end`` after the header, row-major, little-endian. The byte ranges
    must tile the data exactly; anything else (a truncated file, a wrong size) is a
    ``ValueError`` that names the tensor.
    """
    path = Path(path)
    if sys.byteorder != "little":
        raise ValueError("read_safetensors reads little-endian data on little-endian machines only")
    size = path.stat().st_size
    buffer = bytearray(size)
    with path.open("rb") as file:
        file.readinto(memoryview(buffer))
    if size < 8:
        raise ValueError(f"{path} is not a safetensors file: {size} bytes, not even the 8-byte header length")
    n = int.from_bytes(buffer[:8], "little")
    if 8 + n > size:
        raise ValueError(f"{path}: the header announces {n} bytes but the file has {size - 8} after the length")
    try:
        header = json.loads(buffer[8 : 8 + n].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: the header is not JSON ({err})") from None
    if not isinstance(header, dict):
        raise ValueError(f"{path}: the header must be a JSON object; got {type(header).__name__}")
    header.pop("__metadata__", None)
    start, data_size = 8 + n, size - 8 - n
    tensors, spans = {}, []
    for name, info in header.items():
        tensors[name] = _tensor(buffer, start, data_size, name, info, path)
        spans.append(tuple(info["data_offsets"]))
    covered = 0
    for begin, end in sorted(spans):
        if begin != covered:
            raise ValueError(f"{path}: the tensors' bytes must tile the data; a gap or overlap at byte {begin}")
        covered = end
    if covered != data_size:
        raise ValueError(f"{path}: the tensors take {covered} bytes of data, the file holds {data_size}")
    return tensors


def _tensor(buffer: bytearray, start: int, data_size: int, name: str, info: object, path: Path) -> torch.Tensor:
    """One tensor of a safetensors file, a view of ``buffer``."""
    if not isinstance(info, dict) or not {"dtype", "shape", "data_offsets"} <= info.keys():
        raise ValueError(f"{path}: tensor {name!r} needs dtype, shape and data_offsets; got {info!r}")
    if info["dtype"] not in SAFETENSORS_DTYPES:
        raise ValueError(f"{path}: tensor {name!r} has dtype {info['dtype']!r}; known: {sorted(SAFETENSORS_DTYPES)}")
    dtype, shape = SAFETENSORS_DTYPES[info["dtype"]], info["shape"]
    begin, end = info["data_offsets"]
    count = math.prod(shape)
    nbytes = count * torch.empty((), dtype=dtype).element_size()
    if end - begin != nbytes or not 0 <= begin <= end <= data_size:
        raise ValueError(
            f"{path}: tensor {name!r} ({info['dtype']} {shape}, {nbytes} bytes) has the byte range "
            f"[{begin}, {end}) in {data_size} bytes of data: truncated or corrupt"
        )
    if count == 0:
        return torch.empty(shape, dtype=dtype)
    return torch.frombuffer(buffer, dtype=dtype, count=count, offset=start + begin).reshape(shape)


# --------------------------------------------------------------------------------------------
# configurations and names
# --------------------------------------------------------------------------------------------

_GPT2_ACTIVATIONS = {"gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "gelu": "gelu"}


def config_from_hf(hf: dict, context: int | None = None, attention: str = "torch") -> GPTConfig:
    """The :class:`GPTConfig` of a Hugging Face ``config.json`` (as a dict) of GPT-2 or Llama.

    GPT-2: learned positions, layer norms, GELU (its tanh approximation), biases, a
    read-out tied to the token embedding. Llama: rotary positions, RMSNorm, SwiGLU,
    grouped-query attention when ``num_key_value_heads < num_attention_heads``, no
    biases. ``context`` (default: the checkpoint's longest context) bounds the
    window the model reads; ``attention`` picks the kernels (``"torch"``: fused).
    Settings the course's model does not have (e.g. RoPE scaling) are a ``ValueError``.
    """
    if not isinstance(hf, dict):
        raise TypeError(f"config_from_hf takes the dict of a config.json; got {type(hf).__name__}")
    kind = hf.get("model_type")
    if kind == "gpt2":
        activation = hf.get("activation_function", "gelu_new")
        if activation not in _GPT2_ACTIVATIONS:
            raise ValueError(f"GPT-2 activation_function {activation!r}: known are {sorted(_GPT2_ACTIVATIONS)}")
        _refuse(hf, {"scale_attn_weights": False, "scale_attn_by_inverse_layer_idx": True, "add_cross_attention": True})
        return GPTConfig(
            vocab_size=hf["vocab_size"], context=context or hf["n_positions"], dim=hf["n_embd"],
            heads=hf["n_head"], layers=hf["n_layer"], positions="learned", attention=attention, norm="layer",
            mlp=_GPT2_ACTIVATIONS[activation], bias=True, tie_weights=hf.get("tie_word_embeddings", True),
            mlp_hidden=hf.get("n_inner"), norm_eps=hf.get("layer_norm_epsilon", 1e-5),
        )  # fmt: skip
    if kind == "llama":
        dim, heads = hf["hidden_size"], hf["num_attention_heads"]
        if (hf.get("head_dim") or dim // heads) * heads != dim:
            raise ValueError(f"Llama head_dim={hf.get('head_dim')} must be hidden_size / heads = {dim // heads}")
        if hf.get("hidden_act", "silu") != "silu":
            raise ValueError(f"Llama hidden_act {hf.get('hidden_act')!r}: the course's SwiGLU uses 'silu'")
        rope = hf.get("rope_parameters") or hf.get("rope_scaling") or {}
        if rope.get("rope_type", rope.get("type", "default")) != "default":
            raise ValueError(f"RoPE scaling {rope!r} is not supported: only the default rotary angles are")
        bias = hf.get("attention_bias", False)
        if hf.get("mlp_bias", False) != bias:
            raise ValueError("attention_bias and mlp_bias must agree: the course's model has one switch, bias")
        return GPTConfig(
            vocab_size=hf["vocab_size"], context=context or hf.get("max_position_embeddings", 2048), dim=dim,
            heads=heads, layers=hf["num_hidden_layers"], positions="rope", attention=attention, norm="rms",
            mlp="swiglu", kv_heads=hf.get("num_key_value_heads") or heads, bias=bias,
            tie_weights=hf.get("tie_word_embeddings", False), mlp_hidden=hf["intermediate_size"],
            norm_eps=hf.get("rms_norm_eps", 1e-6), rope_base=rope.get("rope_theta", hf.get("rope_theta", 10_000.0)),
        )  # fmt: skip
    raise ValueError(f"model_type {kind!r}: the course loads 'gpt2' (GPT2LMHeadModel) and 'llama' (LlamaForCausalLM)")


def _refuse(hf: dict, unsupported: dict[str, object]) -> None:
    for key, value in unsupported.items():
        if hf.get(key) == value:
            raise ValueError(f"{key}={value!r} is not supported by the course's model")


Source = tuple[str, tuple[str, ...]]
"""How a tensor of the course's model is made: ``("copy" | "transpose" | "concat" | "zeros", checkpoint names)``."""


def weight_map(config: GPTConfig, model_type: str, prefix: str = "") -> dict[str, Source]:
    """Every tensor of a :class:`TinyGPT` with ``config``, and the checkpoint tensors it is made of.

    ``prefix`` is the checkpoint's name of the body (``"transformer."`` for
    ``GPT2LMHeadModel``, ``"model."`` for ``LlamaForCausalLM``, ``""`` for a bare
    ``GPT2Model``/``LlamaModel``). ``"transpose"`` undoes GPT-2's ``Conv1D`` layout;
    ``"concat"`` stacks Llama's q, k, v rows; ``"zeros"`` fills the read-out's bias
    of a model whose checkpoint has none (the same function). A tied read-out is absent.
    """
    if model_type not in ("gpt2", "llama"):
        raise ValueError(f"model_type must be 'gpt2' or 'llama'; got {model_type!r}")
    c, p = config, prefix
    names: dict[str, Source] = {}
    if model_type == "gpt2":
        names["token_embedding.weight"] = ("copy", (f"{p}wte.weight",))
        names["position_embedding.weight"] = ("copy", (f"{p}wpe.weight",))
        for i in range(c.layers):
            ours, theirs = f"blocks.{i}.", f"{p}h.{i}."
            for a, b, how in (("ln1", "ln_1", "copy"), ("attn.in_proj", "attn.c_attn", "transpose"),
                              ("attn.out_proj", "attn.c_proj", "transpose"), ("ln2", "ln_2", "copy"),
                              ("mlp.0", "mlp.c_fc", "transpose"), ("mlp.2", "mlp.c_proj", "transpose")):  # fmt: skip
                names[f"{ours}{a}.weight"] = (how, (f"{theirs}{b}.weight",))
                names[f"{ours}{a}.bias"] = ("copy", (f"{theirs}{b}.bias",))
        names["ln_final.weight"], names["ln_final.bias"] = ("copy", (f"{p}ln_f.weight",)), ("copy", (f"{p}ln_f.bias",))
    else:
        names["token_embedding.weight"] = ("copy", (f"{p}embed_tokens.weight",))
        kinds = ("weight", "bias") if c.bias else ("weight",)
        for i in range(c.layers):
            ours, theirs = f"blocks.{i}.", f"{p}layers.{i}."
            names[f"{ours}ln1.weight"] = ("copy", (f"{theirs}input_layernorm.weight",))
            names[f"{ours}ln2.weight"] = ("copy", (f"{theirs}post_attention_layernorm.weight",))
            for kind in kinds:
                qkv = tuple(f"{theirs}self_attn.{x}_proj.{kind}" for x in "qkv")
                names[f"{ours}attn.in_proj.{kind}"] = ("concat", qkv)
                names[f"{ours}attn.out_proj.{kind}"] = ("copy", (f"{theirs}self_attn.o_proj.{kind}",))
                for part in ("gate", "up", "down"):
                    names[f"{ours}mlp.{part}.{kind}"] = ("copy", (f"{theirs}mlp.{part}_proj.{kind}",))
        names["ln_final.weight"] = ("copy", (f"{p}norm.weight",))
    if not c.tie_weights:
        names["head.weight"] = ("copy", ("lm_head.weight",))
        if c.bias:
            names["head.bias"] = ("zeros", ())
    return names


_IGNORED = re.compile(r"(^|\.)(attn\.bias|attn\.masked_bias|rotary_emb\.inv_freq)$")
"""Buffers some checkpoints store that are not weights: GPT-2's causal mask, Llama's rotary frequencies."""


def load_hf_tensors(model: TinyGPT, tensors: dict[str, torch.Tensor], model_type: str) -> TinyGPT:
    """Copy a Hugging Face checkpoint's ``tensors`` into ``model`` by :func:`weight_map`; return ``model``.

    Every tensor of the model must come from the checkpoint with the right shape,
    and every tensor of the checkpoint must be used (or be a known buffer, or the
    copy of a tied embedding); otherwise a ``ValueError`` names the tensor.
    """
    if not isinstance(model, TinyGPT):
        raise TypeError(f"load_hf_tensors fills a TinyGPT; got {type(model).__name__}")
    body = {"gpt2": "transformer.", "llama": "model."}.get(model_type, "")
    prefix = body if any(name.startswith(body) for name in tensors) else ""
    mapping = weight_map(model.config, model_type, prefix)
    state, used = model.state_dict(), set()
    with torch.no_grad():
        for name, (how, sources) in mapping.items():
            for source in sources:
                if source not in tensors:
                    raise ValueError(f"the checkpoint has no tensor {source!r} (for the model's {name})")
            used.update(sources)
            target = state[name]
            value = _combine(how, [tensors[s] for s in sources], target)
            if value.shape != target.shape:
                stored = ", ".join(f"{s} {tuple(tensors[s].shape)}" for s in sources)
                raise ValueError(
                    f"the checkpoint's {stored} gives {tuple(value.shape)} ({how}); "
                    f"the model's {name} is {tuple(target.shape)}"
                )
            target.copy_(value)
    extra = sorted(name for name in set(tensors) - used if not _IGNORED.search(name))
    if model.config.tie_weights and "lm_head.weight" in extra:
        if not torch.equal(tensors["lm_head.weight"].to(state["head.weight"].dtype), state["head.weight"]):
            raise ValueError("the checkpoint's lm_head.weight differs from its embedding, but the model ties them")
        extra.remove("lm_head.weight")
    if extra:
        shown = ", ".join(repr(name) for name in extra[:5]) + (" …" if len(extra) > 5 else "")
        raise ValueError(f"the checkpoint has {len(extra)} tensor(s) the model has no place for: {shown}")
    return model


def _combine(how: str, parts: list[torch.Tensor], target: torch.Tensor) -> torch.Tensor:
    if how == "zeros":
        return torch.zeros_like(target)
    if how == "concat":
        return torch.cat(parts)
    return parts[0].t() if how == "transpose" and parts[0].ndim == 2 else parts[0]


# --------------------------------------------------------------------------------------------
# downloads and loading
# --------------------------------------------------------------------------------------------

_REPO_ID = re.compile(r"^[\w.-]+(/[\w.-]+)?$")


def download(repo_id: str, endpoint: str | None = None, timeout: float = 60.0) -> Path:
    """The folder that holds ``config.json`` and ``model.safetensors`` of hub repository ``repo_id``.

    From the cache (``config.cache_dir()/pretrained/<owner>--<name>``) when both are
    there; otherwise each missing file is downloaded from ``endpoint`` (default
    ``$HF_ENDPOINT``, else ``https://huggingface.co``) into a temporary file, checked
    against the size and hash the hub's API publishes (SHA-256 of large files, the
    git blob hash of small ones), and only then renamed into place. With
    ``HF_HUB_OFFLINE=1``, or when the download fails, a
    :class:`PretrainedUnavailableError` says which files to put into which folder.
    """
    if not isinstance(repo_id, str) or not _REPO_ID.match(repo_id):
        raise ValueError(f"repo_id must be a hub name such as 'gpt2' or 'owner/name'; got {repo_id!r}")
    folder = settings.cache_dir() / "pretrained" / repo_id.replace("/", "--")
    if all((folder / name).is_file() for name in FILES):
        return folder
    endpoint = (endpoint or os.environ.get("HF_ENDPOINT", "").strip() or HUB).rstrip("/")
    try:
        if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
            raise OSError("HF_HUB_OFFLINE is set")
        with urllib.request.urlopen(f"{endpoint}/api/models/{repo_id}?blobs=true", timeout=timeout) as response:
            info = json.load(response)
        files = {sibling["rfilename"]: sibling for sibling in info.get("siblings", [])}
        for name in FILES:
            if name not in files:
                raise ValueError(f"the repository has no {name} (found: {', '.join(sorted(files)) or 'nothing'})")
        folder.mkdir(parents=True, exist_ok=True)
        for name in FILES:
            if not (folder / name).is_file():
                url = f"{endpoint}/{repo_id}/resolve/{info.get('sha') or 'main'}/{name}"
                _fetch(url, folder / name, files[name], timeout)
    except (OSError, ValueError, KeyError, http.client.HTTPException) as err:  # URLError is an OSError
        raise PretrainedUnavailableError(
            f"{repo_id} is not in {folder} and could not be downloaded from {endpoint} ({err}). "
            f"Offline, put {' and '.join(FILES)} of the Hugging Face repository {repo_id} into {folder} "
            "(or pass load_pretrained a folder that holds them)."
        ) from err
    return folder


def _fetch(url: str, target: Path, sibling: dict, timeout: float) -> None:
    """Download ``url`` to ``target`` once it has the size and hash that the hub lists in ``sibling``."""
    lfs = sibling.get("lfs") or {}
    size = lfs.get("size", sibling.get("size"))

    def verify(path: Path) -> None:
        got = path.stat().st_size
        if size is not None and got != size:
            raise ValueError(f"{url}: {got} bytes, the hub lists {size}")
        if lfs.get("sha256") and (sha := data.file_digest(path, "sha256")) != lfs["sha256"]:
            raise ValueError(f"{url}: SHA-256 {sha}, the hub lists {lfs['sha256']}")
        if not lfs and sibling.get("blobId") and (blob := _git_blob_hash(path)) != sibling["blobId"]:
            raise ValueError(f"{url}: git blob hash {blob}, the hub lists {sibling['blobId']}")

    data.download_verified(url, target, verify, timeout)


def _git_blob_hash(path: Path) -> str:
    """The git blob hash of a file: SHA-1 of ``b"blob <size>\\0"`` followed by its bytes."""
    return data.file_digest(path, "sha1", prefix=f"blob {path.stat().st_size}\0".encode())


def load_pretrained(
    name_or_path: str | os.PathLike[str],
    context: int | None = None,
    attention: str = "torch",
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
    endpoint: str | None = None,
) -> TinyGPT:
    """A :class:`TinyGPT` with the weights of a GPT-2 or Llama checkpoint, in evaluation mode.

    Args:
        name_or_path: a folder with ``config.json`` and ``model.safetensors`` (or its shards), or a hub
            repository (``"gpt2"``, ``"owner/name"``), fetched by :func:`download`.
        context: the longest window the model will read (default: the checkpoint's).
        attention: ``"torch"`` (fused kernels) or ``"scratch"`` (the course's own).
        dtype: the dtype of the weights.
        device: where to put the model (default: the CPU).
        endpoint: the hub to download from (default ``$HF_ENDPOINT`` or the Hugging Face hub).
    """
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        folder = path
    elif isinstance(name_or_path, str) and _REPO_ID.match(name_or_path) and not path.exists():
        folder = download(name_or_path, endpoint=endpoint)
    else:
        raise ValueError(f"{name_or_path!s} is neither a folder nor a hub repository name such as 'gpt2'")
    if not (folder / FILES[0]).is_file() or not ((folder / FILES[1]).is_file() or (folder / SHARD_INDEX).is_file()):
        missing = [name for name in FILES if not (folder / name).is_file()]
        raise PretrainedUnavailableError(f"{folder} needs {' and '.join(FILES)}; {', '.join(missing)} missing")
    hf = json.loads((folder / FILES[0]).read_text(encoding="utf-8"))
    model = TinyGPT(config_from_hf(hf, context=context, attention=attention))
    load_hf_tensors(model, read_checkpoint_tensors(folder), hf["model_type"])
    return model.to(device=device, dtype=dtype).eval()


def read_checkpoint_tensors(folder: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """All tensors of a checkpoint folder: ``model.safetensors``, or the shards that
    ``model.safetensors.index.json`` lists (``{"weight_map": {tensor: shard file}}``) for a large model."""
    folder = Path(folder)
    if (folder / FILES[1]).is_file():
        return read_safetensors(folder / FILES[1])
    index = json.loads((folder / SHARD_INDEX).read_text(encoding="utf-8"))
    tensors: dict[str, torch.Tensor] = {}
    for shard in sorted(set(index["weight_map"].values())):
        tensors.update(read_safetensors(folder / shard))
    if tensors.keys() != index["weight_map"].keys():
        raise ValueError(f"{folder}: the shards' tensors differ from those {SHARD_INDEX} lists")
    return tensors
