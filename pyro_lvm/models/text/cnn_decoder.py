"""The weakened decoder of Yang et al. (2017, "Improved variational autoencoders for text
modeling using dilated convolutions"): a causal dilated 1-D convolutional network whose
output at position ``t`` sees only the last ``receptive_field`` decoder inputs.

Why: an LSTM decoder sees the whole prefix and can model a sentence without ``z``, which is
one cause of posterior collapse. A convolutional decoder with a short context cannot; what
it needs from further back it must get from ``z``, which is fed at every position.

Architecture of :class:`DilatedCNNDecoder` (``x: (N, T, input_dim) -> (N, T, hidden_dim)``)::

    h = W_in x                                        (a position-wise linear map)
    for each dilation d:   h = h + W_d2 relu(conv_{k, d}(relu(h)))   (a residual block)

``conv_{k, d}`` is a causal convolution of kernel size ``k`` and dilation ``d``: the output at
``t`` reads inputs ``t, t - d, ..., t - (k - 1) d`` (zeros before the sentence starts). The
receptive field of the stack is ``1 + (k - 1) * sum(dilations)`` positions (the current one
included). Presets follow Yang et al.'s SCNN / MCNN / LCNN (kernel 3):

=========  ==================================  ===============
preset     dilations                           receptive field
=========  ==================================  ===============
small      1, 2, 4                             15
medium     1, 2, 4, 8, 16                      63
large      1, 2, 4, 8, 16, 1, 2, 4, 8, 16      125
=========  ==================================  ===============

An integer ``receptive_field`` R builds doubling dilations 1, 2, 4, ... with the last one cut
so that the field is exactly R (``(R - 1)`` must be a multiple of ``k - 1``; with ``k = 3``,
R is odd). R = 1 is no convolution at all: each position sees only its own input.

The module has ``nn.LSTM``'s calling convention, ``(out, state) = decoder(x, state)``, so the
sentence models use it in place of their LSTM without other changes: in teacher forcing
``state`` is ``None``; in step-by-step decoding (:mod:`pyro_lvm.models.text.decoding`) ``state`` is a
one-tuple holding the last ``R - 1`` inputs, ``(R - 1, N, input_dim)`` (the batch on dim 1,
as in an LSTM's ``(h, c)``, so beam search reorders it the same way), and the output of a
step is exactly the teacher-forced output at that position.
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import nn

from ... import validation

#: Yang et al.'s SCNN / MCNN / LCNN dilations (kernel size 3).
PRESETS: dict[str, tuple[int, ...]] = {
    "small": (1, 2, 4),
    "medium": (1, 2, 4, 8, 16),
    "large": (1, 2, 4, 8, 16, 1, 2, 4, 8, 16),
}
DECODERS = ("lstm", "cnn")
DEFAULT_CONDITIONING = {"lstm": "init", "cnn": "concat"}


def receptive_field_of(dilations: tuple[int, ...], kernel_size: int) -> int:
    """Positions a stack of causal convolutions sees: ``1 + (kernel_size - 1) * sum(dilations)``."""
    return 1 + (kernel_size - 1) * sum(dilations)


def dilations_for(receptive_field: int | str, kernel_size: int = 3) -> tuple[int, ...]:
    """Dilations of the residual blocks for a receptive field (a preset name or a number of positions).

    Raises ``InvalidArgumentError`` for a field < 1, an unknown preset, or a field that the
    kernel size cannot reach exactly (the message names the nearest fields that it can).
    """
    kernel_size = validation.Integer(2)("kernel_size", kernel_size)
    if isinstance(receptive_field, str):
        preset = validation.Choice(tuple(PRESETS))("receptive_field", receptive_field)
        if kernel_size != 3:
            raise validation.InvalidArgumentError(
                f"the receptive-field presets are Yang et al.'s kernel-3 networks; with kernel_size={kernel_size} "
                "give receptive_field as a number of positions")
        return PRESETS[preset]
    field = validation.Integer(1)("receptive_field", receptive_field)
    step = kernel_size - 1
    if (field - 1) % step:
        lower = field - (field - 1) % step
        raise validation.InvalidArgumentError(
            f"receptive_field must be 1 + {step} * (sum of dilations) with kernel_size={kernel_size}, got {field}; "
            f"use {lower} or {lower + step}")
    left, dilations, d = (field - 1) // step, [], 1
    while left > 0:
        dilations.append(min(d, left))
        left -= dilations[-1]
        d *= 2
    return tuple(dilations)


def resolve_conditioning(decoder: str, conditioning: str | None) -> str:
    """How ``z`` enters a decoder: the given choice, or the decoder's default (``"init"`` for the
    LSTM, as Bowman et al.; ``"concat"`` for the CNN, as Yang et al.). A CNN has no initial state."""
    decoder = validation.Choice(DECODERS)("decoder", decoder)
    if conditioning is None:
        return DEFAULT_CONDITIONING[decoder]
    if decoder == "cnn" and conditioning != "concat":
        raise validation.InvalidArgumentError(
            f"conditioning={conditioning!r} needs a decoder with an initial state; the CNN decoder has none, so z "
            "enters at every position: use conditioning='concat' (or leave it None)")
    return conditioning


class CausalConv1d(nn.Conv1d):
    """``nn.Conv1d`` padded on the left only: output ``t`` reads inputs ``<= t``. ``(N, C, T) -> (N, C_out, T)``."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, dilation: int = 1):
        super().__init__(in_channels, out_channels, kernel_size, dilation=dilation)
        self.left = (kernel_size - 1) * dilation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(F.pad(x, (self.left, 0)))


class ResidualBlock(nn.Module):
    """``h + W2 relu(conv_{k,d}(relu(h)))`` over ``(N, C, T)``."""

    def __init__(self, channels: int, kernel_size: int, dilation: int):
        super().__init__()
        self.conv = CausalConv1d(channels, channels, kernel_size, dilation)
        self.mix = nn.Conv1d(channels, channels, 1)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + self.mix(torch.relu(self.conv(torch.relu(h))))


class DilatedCNNDecoder(nn.Module):
    """Causal dilated CNN with ``nn.LSTM``'s interface (see the module docstring).

    Args:
        input_dim: size of each input vector (word embedding, plus ``z`` when it is concatenated).
        hidden_dim: channels of every block, and the output size.
        receptive_field: ``"small"`` / ``"medium"`` / ``"large"`` or a number of positions.
        kernel_size: of every dilated convolution (Yang et al.: 3).
        max_len: longest sentence in words, if known: a field that covers every position of
            such a sentence (``>= max_len + 1`` inputs, ``<bos>`` included) warns that the
            decoder then sees everything and is not weakened.
    """

    def __init__(self, input_dim: int, hidden_dim: int, receptive_field: int | str = "small", kernel_size: int = 3,
                 max_len: int | None = None):
        super().__init__()
        validation.check(hidden=(input_dim, hidden_dim))
        self.dilations = dilations_for(receptive_field, kernel_size)
        self.kernel_size = kernel_size
        self.receptive_field = receptive_field_of(self.dilations, kernel_size)
        if max_len is not None and self.receptive_field >= max_len + 1:
            warnings.warn(f"receptive field {self.receptive_field} covers all {max_len + 1} decoder inputs of the "
                          f"longest sentence (max_len={max_len}): the CNN decoder then sees every earlier word, as an "
                          "LSTM does, and is not weakened", stacklevel=3)
        self.input = nn.Linear(input_dim, hidden_dim)
        self.blocks = nn.ModuleList(ResidualBlock(hidden_dim, kernel_size, d) for d in self.dilations)

    def forward(self, x: torch.Tensor, state: tuple[torch.Tensor] | None = None
                ) -> tuple[torch.Tensor, tuple[torch.Tensor]]:
        """``x: (N, T, input_dim)``, ``state``: ``None`` or ``(previous inputs (P, N, input_dim),)``.

        Returns ``(out (N, T, hidden_dim), (last R - 1 inputs (R - 1, N, input_dim),))``.
        """
        past = 0
        if state is not None:
            (history,) = state
            past = history.shape[0]
            x = torch.cat([history.transpose(0, 1), x], dim=1)
        h = self.input(x).transpose(1, 2)  # (N, hidden, T): channels first for Conv1d
        for block in self.blocks:
            h = block(h)
        out = h.transpose(1, 2)[:, past:]
        keep = self.receptive_field - 1
        new_history = x[:, x.shape[1] - min(keep, x.shape[1]):].transpose(0, 1)
        return out, (new_history,)


def build_decoder(decoder: str, input_dim: int, hidden_dim: int, receptive_field: int | str | None = None,
                  max_len: int | None = None) -> nn.Module:
    """The recurrent part of a sentence decoder: ``nn.LSTM`` (batch first) or :class:`DilatedCNNDecoder`.

    Both map ``(N, T, input_dim)`` to ``(N, T, hidden_dim)`` with a state for step-by-step
    decoding. ``receptive_field`` (default ``"small"``) applies to the CNN only.
    """
    decoder = validation.Choice(DECODERS)("decoder", decoder)
    if decoder == "lstm":
        if receptive_field is not None:
            raise validation.InvalidArgumentError(
                f"receptive_field={receptive_field!r} applies to the CNN decoder only; an LSTM sees the whole "
                "prefix (use decoder='cnn')")
        return nn.LSTM(input_dim, hidden_dim, batch_first=True)
    return DilatedCNNDecoder(input_dim, hidden_dim, "small" if receptive_field is None else receptive_field,
                             max_len=max_len)


def receptive_field_option(text: str) -> int | str:
    """``argparse`` type of ``--receptive-field``: a preset name or a number of positions >= 1."""
    import argparse

    value: int | str = int(text) if text.strip().lstrip("-").isdigit() else text
    try:
        dilations_for(value)
    except validation.InvalidArgumentError as e:
        raise argparse.ArgumentTypeError(str(e).replace("receptive_field must be", "must be", 1)) from None
    return value
