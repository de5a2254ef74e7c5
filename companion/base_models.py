"""The course's own base models: a small GPT trained on BPE tokens of Tiny Shakespeare or of the Tang poems.

``base_model("shakespeare")`` or ``base_model("tang")`` returns a
:class:`BaseModel`: a :class:`~companion.models.gpt.TinyGPT`, the
:class:`~companion.tokenize.BPETokenizer` it reads, and its validation loss.
Each is made by a fixed :class:`Recipe` (seeded, sized by the run profile of
:func:`companion.config.profile`), so the same recipe gives the same weights,
bit for bit, on the CPU (a GPU's kernels may differ in the last bits: the cache
keeps one entry per device type).

**The recipe.** The text is split into training and validation text (the
last 10 % of Tiny Shakespeare; every 40th of the Tang poems, each poem followed
by ``<|endoftext|>``); the tokenizer is trained on training text only; the
model reads windows of ``context`` tokens and is trained with
:func:`companion.train.fit` (AdamW, cross-entropy on the next token; the full
profile halves the learning rate after each epoch), in bf16 mixed precision
where the device multiplies bf16 in hardware (:func:`companion.config.precision`;
the recipe records it, so fp32 and bf16 models are cached apart). Both
profiles share the tokenizer of a corpus, so their losses compare.

**The cache.** A trained model is kept in ``config.cache_dir()/base-models/<corpus>-<profile>-<device>-<recipe hash>/``:
``model.pt`` (the ``state_dict``), ``ids.pt`` (the train and validation tokens),
``tokenizer.json`` and ``meta.json`` (the recipe, the losses and each file's
SHA-256). It is written to a temporary folder and renamed into place, under a
file lock, so two notebooks building the same model at once build it once; an
entry whose files do not match their checksums is removed and rebuilt, never
used. Tensors are read back with ``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import hashlib
import json
import multiprocessing
import os
import shutil
import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import torch
from torch.nn import functional as F

from companion import config, data, train
from companion.models.gpt import GPTConfig, TinyGPT
from companion.tokenize import ENDOFTEXT, BPETokenizer

Corpus = Literal["shakespeare", "tang"]
CORPORA: tuple[str, ...] = ("shakespeare", "tang")
"""The corpora a base model is trained on: Tiny Shakespeare and the complete Tang poems."""
RECIPE_VERSION = 1
"""Raised whenever the building code changes what a recipe makes; it is part of every cache key."""


@dataclass(frozen=True)
class Recipe:
    """Everything that decides a base model's weights.

    Attributes:
        corpus: ``"shakespeare"`` or ``"tang"``.
        profile: ``"quick"`` or ``"full"``, the run profile it is sized for.
        vocab_size: the tokenizer's size, ``<|endoftext|>`` included.
        tokenizer_chars: the tokenizer learns on the first this-many characters of its text
            (the training text of Shakespeare; every 10th training poem of the Tang poems).
        poem_stride: the model trains on every ``poem_stride``-th training poem (unused for Shakespeare).
        val_every: validation text: the last ``1 / val_every`` of Tiny Shakespeare's characters,
            or every ``val_every``-th Tang poem (whole poems, never seen in training).
        context, dim, heads, layers: the :class:`~companion.models.gpt.GPTConfig` sizes.
        stride: tokens between the starts of consecutive training windows.
        epochs, batch_size, lr, weight_decay: the training run (AdamW).
        lr_decay: the learning rate is multiplied by it after each epoch.
        seed: seeds the weights and the order of the batches.
        precision: ``"fp32"``, or ``"bf16"`` mixed precision (:func:`companion.config.mixed_precision`):
            :func:`companion.config.precision` where the recipe is made.
        version: :data:`RECIPE_VERSION`.
    """

    corpus: str
    profile: str
    vocab_size: int
    tokenizer_chars: int
    poem_stride: int
    context: int
    dim: int
    heads: int
    layers: int
    stride: int
    epochs: int
    batch_size: int
    lr: float
    weight_decay: float = 0.1
    lr_decay: float = 1.0
    val_every: int = 10
    seed: int = 0
    precision: str = "fp32"
    version: int = RECIPE_VERSION

    def key(self) -> str:
        """A 12-hex-digit hash of every field: the cache tells recipes apart by it."""
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:12]


def recipe(corpus: Corpus, profile: config.Profile | None = None) -> Recipe:
    """The fixed recipe of ``corpus`` in ``profile`` (default: :func:`companion.config.profile`).

    ``quick`` trains a 2-block model for one pass over the Tang poems' text and
    two over Shakespeare's (seconds on a CPU core: after one pass the Shakespeare
    model's validation loss still hung on the seed, 4.12 to 4.64 nats over three
    seeds, and 3.93 to 4.10 after two); ``full`` a 4-block model for several
    passes (minutes on two).
    """
    if corpus not in CORPORA:
        raise ValueError(f"corpus must be one of {CORPORA}; got {corpus!r}")
    profile = config.profile() if profile is None else profile
    if profile not in config.PROFILES:
        raise ValueError(f"profile must be one of {config.PROFILES}; got {profile!r}")
    quick = profile == "quick"
    if corpus == "shakespeare":
        tokenizer = dict(vocab_size=1024, tokenizer_chars=1_000_000, poem_stride=1, val_every=10)
    else:
        tokenizer = dict(vocab_size=2048, tokenizer_chars=300_000, poem_stride=16 if quick else 6, val_every=40)
    sizes = dict(context=64, dim=64, heads=4, layers=2, stride=64, epochs=2 if corpus == "shakespeare" else 1,
                 batch_size=32, lr=3e-3)  # fmt: skip
    if not quick:
        stride, epochs = (64, 3) if corpus == "shakespeare" else (128, 2)
        sizes = dict(context=128, dim=128, heads=4, layers=4, stride=stride, epochs=epochs, batch_size=32, lr=2e-3,
                     lr_decay=0.5)  # fmt: skip
    precision = config.precision()
    return Recipe(corpus=corpus, profile=profile, precision=precision, **tokenizer, **sizes)  # type: ignore[arg-type]


@dataclass(frozen=True)
class BaseModel:
    """A trained base model and what it needs.

    Attributes:
        model: the :class:`~companion.models.gpt.TinyGPT`, in eval mode, on :func:`companion.config.device`.
        tokenizer: the :class:`~companion.tokenize.BPETokenizer` of its tokens.
        val_loss: mean cross-entropy on the validation tokens, in nats per token.
        unigram_loss: the same for a unigram model (token frequencies of the
            training text, add-one smoothed): the baseline that ignores context.
        train_ids, val_ids: the tokens ``int64 [T]`` it was trained and validated on (on the CPU).
        recipe: the :class:`Recipe` that made it.
    """

    model: TinyGPT
    tokenizer: BPETokenizer
    val_loss: float
    unigram_loss: float
    train_ids: torch.Tensor = field(repr=False)
    val_ids: torch.Tensor = field(repr=False)
    recipe: Recipe


def base_model(corpus: Corpus, profile: config.Profile | None = None) -> BaseModel:
    """The course's base model of ``corpus`` (``"shakespeare"`` or ``"tang"``) for the run profile.

    Loaded from the cache (see the module docstring) when a valid entry exists,
    otherwise trained by :func:`build` and cached. The first call of a profile
    trains (seconds in ``quick``, minutes in ``full``); later calls load.

    >>> bm = base_model("shakespeare")  # doctest: +SKIP
    >>> bm.tokenizer.decode(bm.model.generate(torch.tensor(bm.tokenizer.encode("ROMEO:")), 20).tolist())  # doctest: +SKIP
    """
    return cached(recipe(corpus, profile))


# --- building --------------------------------------------------------------------------------


def texts(r: Recipe) -> tuple[str, str, str]:
    """``(tokenizer text, training text, validation text)`` of a recipe's corpus.

    Tiny Shakespeare is split by position (the last ``1 / val_every`` of its
    characters for validation); the Tang poems by poem (every ``val_every``-th
    poem for validation), each poem's lines joined by newlines and poems
    separated by ``<|endoftext|>``. The validation text and the tokenizer do
    not depend on the profile, so the losses of both profiles compare.
    """
    if r.corpus == "shakespeare":
        text = data.tiny_shakespeare()
        cut = len(text) - round(len(text) / r.val_every)
        return text[:cut][: r.tokenizer_chars], text[:cut], text[cut:]
    poems = [poem.text for poem in data.tang_poems() if poem.lines]
    held = set(range(r.val_every - 1, len(poems), r.val_every))
    pool = [text for i, text in enumerate(poems) if i not in held]

    def joined(chosen: list[str]) -> str:
        return "".join(text + ENDOFTEXT for text in chosen)

    tokenizer_text = joined(pool[::10])[: r.tokenizer_chars]
    return tokenizer_text, joined(pool[:: r.poem_stride]), joined([p.text for p in validation_poems(r)])


def validation_poems(r: Recipe) -> list[data.Poem]:
    """The Tang poems of a recipe's validation text, in the collection's order: every
    ``val_every``-th poem that has lines. A model of the recipe never trained on them, so they
    suit a downstream test of what it learned.

    Raises:
        ValueError: the recipe is not of the Tang poems.
    """
    if r.corpus != "tang":
        raise ValueError(f"only the Tang poems are split by poem; got a recipe of {r.corpus!r}")
    poems = [poem for poem in data.tang_poems() if poem.lines]
    return poems[r.val_every - 1 :: r.val_every]


def _mean_loss(model: TinyGPT, ids: torch.Tensor, context: int, batch_size: int = 64) -> float:
    """Mean next-token cross-entropy (nats) over the non-overlapping windows of ``ids``."""
    X, Y = data.char_windows(ids, context)
    device = next(model.parameters()).device
    total, count = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(X), batch_size):
            x, y = X[start : start + batch_size].to(device), Y[start : start + batch_size].to(device)
            logits = model(x).double()
            total += F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="sum").item()
            count += y.numel()
    return total / count


def unigram_loss(train_ids: torch.Tensor, val_ids: torch.Tensor, vocab_size: int) -> float:
    """Cross-entropy (nats per token) on ``val_ids`` of add-one-smoothed token frequencies of ``train_ids``."""
    counts = torch.bincount(train_ids, minlength=vocab_size).double() + 1
    log_p = counts.log() - counts.sum().log()
    return -log_p[val_ids].mean().item()


def build(r: Recipe) -> BaseModel:
    """Train the base model of recipe ``r`` from scratch (no cache): the same weights, bit for bit, at every
    build on the CPU; on a GPU, whose attention backward may add in any order, builds can differ in the
    last bits and, through training, a little more."""
    tokenizer_text, train_text, val_text = texts(r)
    tokenizer = BPETokenizer.train(tokenizer_text, r.vocab_size)
    train_ids = torch.tensor(tokenizer.encode(train_text, allowed_special="all"), dtype=torch.int64)
    val_ids = torch.tensor(tokenizer.encode(val_text, allowed_special="all"), dtype=torch.int64)
    generator = config.seed_everything(r.seed)
    model = TinyGPT(GPTConfig(len(tokenizer), r.context, r.dim, r.heads, r.layers, attention="torch"))
    optimizer = torch.optim.AdamW(model.parameters(), lr=r.lr, weight_decay=r.weight_decay)
    windows = data.char_windows(train_ids, r.context, r.stride)

    def loss_fn(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits.flatten(0, 1), y.flatten())

    decay = train.EpochScheduler(torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=r.lr_decay))
    train.fit(model, optimizer, loss_fn, windows, epochs=r.epochs, batch_size=r.batch_size,
              callbacks=[decay], generator=generator, progress=False, precision=r.precision)  # fmt: skip
    model.eval()
    return BaseModel(
        model=model,
        tokenizer=tokenizer,
        val_loss=_mean_loss(model, val_ids, r.context),
        unigram_loss=unigram_loss(train_ids, val_ids, len(tokenizer)),
        train_ids=train_ids,
        val_ids=val_ids,
        recipe=r,
    )


# --- the cache -------------------------------------------------------------------------------


def entry_dir(r: Recipe) -> Path:
    """The cache folder of recipe ``r`` on the current device type."""
    return config.cache_dir() / "base-models" / f"{r.corpus}-{r.profile}-{config.device().type}-{r.key()}"


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (a lock file) where the system has ``fcntl``; else no lock."""
    try:
        import fcntl
    except ImportError:  # Windows: the atomic rename alone keeps the cache consistent
        yield
        return
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _sha256(path: Path) -> str:
    return data.file_digest(path, "sha256")


def save(bm: BaseModel, folder: Path) -> None:
    """Write ``bm`` into a new ``folder``: its files first, ``meta.json`` (with their SHA-256) last."""
    folder.mkdir(parents=True)
    torch.save({k: v.cpu() for k, v in bm.model.state_dict().items()}, folder / "model.pt")
    torch.save({"train": bm.train_ids, "val": bm.val_ids}, folder / "ids.pt")
    bm.tokenizer.save(folder / "tokenizer.json")
    files = {name: _sha256(folder / name) for name in ("model.pt", "ids.pt", "tokenizer.json")}
    meta = {"recipe": asdict(bm.recipe), "val_loss": bm.val_loss, "unigram_loss": bm.unigram_loss, "sha256": files}
    (folder / "meta.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")


def load(folder: Path) -> BaseModel:
    """The base model saved in ``folder``.

    Raises:
        ValueError: a file is missing, does not match its recorded SHA-256, or does not fit the recipe.
    """
    try:
        meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
        for name, digest in meta["sha256"].items():
            if _sha256(folder / name) != digest:
                raise ValueError(f"{folder / name} does not match its recorded SHA-256")
        r = Recipe(**meta["recipe"])
        tokenizer = BPETokenizer.load(folder / "tokenizer.json")
        model = TinyGPT(GPTConfig(len(tokenizer), r.context, r.dim, r.heads, r.layers, attention="torch"))
        model.load_state_dict(torch.load(folder / "model.pt", weights_only=True))
        ids = torch.load(folder / "ids.pt", weights_only=True)
    except (OSError, KeyError, TypeError, RuntimeError, json.JSONDecodeError) as err:
        raise ValueError(f"the cache entry {folder} is not usable: {err}") from err
    return BaseModel(
        model=model.to(config.device()).eval(),
        tokenizer=tokenizer,
        val_loss=float(meta["val_loss"]),
        unigram_loss=float(meta["unigram_loss"]),
        train_ids=ids["train"],
        val_ids=ids["val"],
        recipe=r,
    )


def cached(r: Recipe) -> BaseModel:
    """The model of recipe ``r`` from its cache entry, built and stored first when the entry is absent or corrupt."""
    folder = entry_dir(r)
    folder.parent.mkdir(parents=True, exist_ok=True)
    with _locked(folder.parent / f".{folder.name}.lock"):
        if folder.exists():
            try:
                return load(folder)
            except ValueError:
                shutil.rmtree(folder)  # corrupt: rebuilt below
        bm = build(r)
        staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
        try:
            save(bm, staging / "entry")
            os.replace(staging / "entry", folder)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    bm.model.to(config.device())
    return bm


# --- the script: fill the cache before a book build --------------------------------------------


def _build_timed(corpus: str, profile: str, threads: int) -> tuple[str, float, float]:
    """``(corpus, seconds, validation loss)`` of making sure its base model is cached, on ``threads`` threads."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        start = time.perf_counter()
        bm = cached(recipe(corpus, profile))  # type: ignore[arg-type]
        return corpus, time.perf_counter() - start, bm.val_loss
    finally:
        torch.set_num_threads(before)


def _report(results: Iterable[tuple[str, float, float]], profile: str) -> None:
    """One line per model built or found, as each is ready."""
    for corpus, seconds, val_loss in results:
        print(f"base model {corpus} ({profile}): cached after {seconds:.1f} s; validation loss {val_loss:.3f} nats/token",
              flush=True)  # fmt: skip


def main(argv: Sequence[str] | None = None) -> None:
    """The script ``python -m companion.base_models [--profile P] [--corpus C ...] [--jobs N] [--threads T]``:
    the base models of the profile in the cache (every corpus, or those named), ``N`` built at a time in
    their own processes with ``T`` threads each (default: CPU cores / ``N``). Chapters 11 and 12 both read
    the two models; building them beforehand keeps either chapter from training them on one core
    (``make book`` builds them as jobs of its queue of notebooks: ``bench/run_notebooks.py --base-models``).
    """
    parser = argparse.ArgumentParser(description="Build and cache the course's base models.")
    parser.add_argument("--profile", choices=config.PROFILES, default=None, help="default: COMPANION_PROFILE")
    parser.add_argument("--corpus", choices=CORPORA, action="append", help="build this corpus's model (default: all)")
    parser.add_argument("--jobs", type=int, default=1, help="models built at a time (default 1)")
    parser.add_argument("--threads", type=int, default=None, help="threads per model (default: CPU cores / jobs)")
    args = parser.parse_args(argv)
    if args.jobs < 1 or (args.threads is not None and args.threads < 1):
        parser.error(f"--jobs and --threads must be positive ints; got {args.jobs} and {args.threads}")
    profile = args.profile or config.profile()
    corpora = list(dict.fromkeys(args.corpus or CORPORA))
    jobs = min(args.jobs, len(corpora))
    threads = args.threads or max(1, (os.cpu_count() or 1) // jobs)
    if jobs == 1:
        _report((_build_timed(corpus, profile, threads) for corpus in corpora), profile)
        return
    context = multiprocessing.get_context("spawn")  # a fresh interpreter: no torch thread pool inherited
    with concurrent.futures.ProcessPoolExecutor(jobs, mp_context=context) as pool:
        futures = [pool.submit(_build_timed, corpus, profile, threads) for corpus in corpora]
        _report((future.result() for future in concurrent.futures.as_completed(futures)), profile)


if __name__ == "__main__":
    main()
