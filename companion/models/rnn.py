"""Recurrent models of chapter 8: a sequence classifier and a character-level language model.

Both use torch's own ``nn.RNN``/``nn.GRU``/``nn.LSTM`` layers (fast kernels on
CPU and GPU); :mod:`companion.recurrent` writes the same layers out from
scratch and is tested against them.
"""

from __future__ import annotations

import torch
from torch import nn

from companion.models.base import _check_dropout, _check_input, check_sampling, sample_next

RECURRENT_LAYERS: dict[str, type[nn.RNNBase]] = {"rnn": nn.RNN, "gru": nn.GRU, "lstm": nn.LSTM}
"""The recurrent layers :class:`RNNClassifier` accepts as ``kind``, by name."""

State = torch.Tensor | tuple[torch.Tensor, torch.Tensor]


def _positive(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int; got {value!r}")
    return value


class RNNClassifier(nn.Module):
    """A recurrent network that reads a sequence step by step and classifies it from its last state.

    ``RNNClassifier("lstm", input_size=28, hidden=128, layers=2)`` is the
    MNIST row reader of chapter 8: an image ``[N, 28, 28]`` is a sequence of
    28 rows of 28 pixels; two stacked LSTM layers of 128 units read it top to
    bottom and a linear layer maps the top layer's last hidden state
    ``h_T`` to ``num_classes`` logits.

    Args:
        kind: ``"rnn"`` (tanh), ``"gru"`` or ``"lstm"``.
        input_size: features per time step F.
        hidden: units per recurrent layer.
        layers: stacked recurrent layers.
        num_classes: number of output scores.
        dropout: dropout between stacked layers and before the read-out.

    Shapes: input ``[N, T, F]`` float (batch first; an image ``[N, 1, H, W]``
    is read as ``[N, H, W]``), output ``[N, num_classes]``.
    """

    def __init__(
        self,
        kind: str = "lstm",
        input_size: int = 28,
        hidden: int = 128,
        layers: int = 1,
        num_classes: int = 10,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if kind not in RECURRENT_LAYERS:
            raise ValueError(f"kind must be one of {sorted(RECURRENT_LAYERS)}; got {kind!r}")
        for name, value in [("input_size", input_size), ("hidden", hidden), ("layers", layers)]:
            _positive(name, value)
        _positive("num_classes", num_classes)
        dropout = _check_dropout(dropout)
        self.kind, self.input_size = kind, input_size
        self.rnn = RECURRENT_LAYERS[kind](
            input_size, hidden, num_layers=layers, batch_first=True, dropout=dropout if layers > 1 else 0.0
        )
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``[N, num_classes]`` of sequences ``[N, T, F]`` (or images ``[N, 1, T, F]``)."""
        if isinstance(x, torch.Tensor) and x.ndim == 4 and x.shape[1] == 1:
            x = x.squeeze(1)
        ok = isinstance(x, torch.Tensor) and x.ndim == 3 and x.shape[2] == self.input_size and x.shape[1] >= 1
        _check_input(x, "RNNClassifier", f"[N, T, {self.input_size}] (batch first)", ok, self.head.weight.dtype)
        outputs, _ = self.rnn(x)  # [N, T, hidden]: the top layer's h_t at every step
        return self.head(self.dropout(outputs[:, -1]))


class CharLSTM(nn.Module):
    """A character-level language model: embedding → stacked LSTM → linear read-out over the vocabulary.

    At every position t it gives logits for the next character,
    ``p(x_{t+1} | x_1 … x_t) = softmax(W h_t + b)``, where ``h_t`` is the top
    LSTM layer's state after reading ``x_1 … x_t``. Trained with the
    cross-entropy of the flattened logits against ``Y = X`` shifted by one
    (:func:`companion.data.char_windows`); :meth:`generate` samples text.

    Args:
        vocab_size: number of distinct characters V.
        embed_dim: size of each character's learned vector.
        hidden: units per LSTM layer.
        layers: stacked LSTM layers.
        dropout: dropout between LSTM layers and before the read-out.

    Shapes: input ids ``int64 [B, T]`` in ``0 … V-1``, output logits ``[B, T, V]``.
    """

    def __init__(
        self, vocab_size: int, embed_dim: int = 64, hidden: int = 256, layers: int = 2, dropout: float = 0.0
    ) -> None:
        super().__init__()
        for name, value in [("vocab_size", vocab_size), ("embed_dim", embed_dim), ("hidden", hidden)]:
            _positive(name, value)
        _positive("layers", layers)
        dropout = _check_dropout(dropout)
        self.vocab_size = vocab_size
        self.embed = nn.Embedding(vocab_size, embed_dim)
        self.lstm = nn.LSTM(embed_dim, hidden, num_layers=layers, batch_first=True, dropout=dropout if layers > 1 else 0.0)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(hidden, vocab_size)

    def _check_ids(self, ids: object) -> None:
        if not isinstance(ids, torch.Tensor):
            raise TypeError(f"CharLSTM takes a tensor of character ids; got {type(ids).__name__}")
        if ids.dtype not in (torch.int64, torch.int32):
            raise TypeError(f"CharLSTM takes integer character ids (int64); got dtype {ids.dtype}")
        if ids.ndim != 2 or ids.shape[1] < 1:
            raise ValueError(f"CharLSTM expects ids of shape [B, T] with T >= 1; got {tuple(ids.shape)}")
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= self.vocab_size):
            raise ValueError(
                f"character ids must lie in 0 … {self.vocab_size - 1}; got {int(ids.min())} … {int(ids.max())}"
            )

    def step(self, ids: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        """Logits ``[B, T, V]`` and the LSTM state ``(h, c)`` (each ``[layers, B, hidden]``) after ``ids``.

        Passing the returned state back in continues the text where it stopped.
        """
        self._check_ids(ids)
        outputs, state = self.lstm(self.embed(ids), state)
        return self.head(self.dropout(outputs)), state

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """Next-character logits ``[B, T, V]`` of ids ``int64 [B, T]``, from a zero initial state."""
        return self.step(ids)[0]

    @torch.no_grad()
    def generate(
        self,
        ids: torch.Tensor,
        n: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Continue each prompt by ``n`` sampled characters.

        Each new character is drawn from ``softmax(logits / temperature)``
        (restricted to the ``top_k`` most likely characters when given):
        a temperature below 1 sharpens the distribution, above 1 flattens it,
        and ``temperature=0`` always takes the most likely character.

        Args:
            ids: prompts ``int64 [B, T0]`` (or one prompt ``[T0]``), ``T0 >= 1``.
            n: characters to add, ``>= 0``.
            temperature: ``>= 0``.
            top_k: sample among the k most likely characters only.
            generator: a ``torch.Generator`` on the model's device, for repeatable samples.

        Returns:
            ``int64 [B, T0 + n]`` (or ``[T0 + n]``): the prompts followed by their continuations.
            The model's train/eval mode is left as it was.
        """
        check_sampling(n, temperature, top_k)
        single = isinstance(ids, torch.Tensor) and ids.ndim == 1
        if single:
            ids = ids.unsqueeze(0)
        self._check_ids(ids)
        was_training = self.training
        self.eval()
        try:
            ids = ids.to(self.head.weight.device, torch.int64)
            out = [ids]
            logits, state = self.step(ids)
            for _ in range(n):
                last = logits[:, -1].float()
                nxt = sample_next(last, temperature, top_k, generator)
                out.append(nxt)
                if len(out) <= n:
                    logits, state = self.step(nxt, state)
        finally:
            self.train(was_training)
        result = torch.cat(out, dim=1)
        return result[0] if single else result
