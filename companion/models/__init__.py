"""The chapters' models, each a plain ``torch.nn.Module`` that can be read top to bottom.

One module per family, all importable from here:

* :class:`~companion.models.mlp.MLP` — a fully connected network (chapter 4's 784-512-512-10 digit classifier).
* :class:`~companion.models.cnn.CNN` — a small convolutional network for 28×28 images (chapters 6 and 7).
* :class:`~companion.models.rnn.RNNClassifier` — an RNN/GRU/LSTM that classifies a sequence or an image read
  row by row (chapter 8).
* :class:`~companion.models.rnn.CharLSTM` — a character-level LSTM language model that also samples text (chapter 8).
* :class:`~companion.models.gpt.TinyGPT` (with :class:`~companion.models.gpt.GPTConfig`) — a small decoder-only
  Transformer for characters (chapter 9), whose switches also make it GPT-2 or Llama, with a KV cache for
  generation (chapter 11).
* :func:`~companion.models.base.count_parameters` — how many numbers a model learns.
"""

from companion.models.base import count_parameters
from companion.models.cnn import CNN
from companion.models.gpt import GPTConfig, TinyGPT
from companion.models.mlp import ACTIVATIONS, MLP
from companion.models.rnn import RECURRENT_LAYERS, CharLSTM, RNNClassifier

__all__ = ["ACTIVATIONS", "CNN", "GPTConfig", "MLP", "RECURRENT_LAYERS", "CharLSTM", "RNNClassifier", "TinyGPT", "count_parameters"]
