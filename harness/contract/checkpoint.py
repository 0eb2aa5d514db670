"""One checkpoint (SPEC §5): the parameters and both AdamW moments after a step; how values become arrays."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

import numpy as np

GROUPS = ("params", "m", "v")
GROUP_LABEL = {"params": "", "m": "m of ", "v": "v of "}
"""How a tensor of each group is named in a reason: `wte`, `m of wte`, `v of wte`."""

Arrays = dict[str, np.ndarray]


class CheckpointValueError(ValueError):
    """A value handed over as a checkpoint tensor that is not a float32 or float64 array or CPU tensor."""


def float_array(value: Any) -> np.ndarray:
    """A checkpoint value as a float32 or float64 numpy array (a view where it can be, never a copy of a copy).

    Accepted: numpy arrays and CPU torch tensors (or Parameters) of dtype float32 or float64 (SPEC §5).
    Anything else raises CheckpointValueError saying what it is, so that the reason names the mistake.
    """
    torch = sys.modules.get("torch")  # never imported here: if the value is a tensor, torch is loaded already
    if type(value) is np.ndarray:
        array = value
    elif torch is not None and type(value) in (torch.Tensor, torch.nn.Parameter):
        if value.dtype not in (torch.float32, torch.float64):
            raise CheckpointValueError(
                f"has dtype {str(value.dtype).removeprefix('torch.')}; checkpoints must be float32 or float64"
            )
        array = value.detach().to("cpu").numpy()
    else:
        raise CheckpointValueError(
            f"is a {type(value).__module__}.{type(value).__qualname__}, not a numpy array or a torch tensor"
        )
    if array.dtype not in (np.float32, np.float64):
        raise CheckpointValueError(f"has dtype {array.dtype}; checkpoints must be float32 or float64")
    return array


def to_float64(value: Any) -> np.ndarray:
    """A checkpoint value as a fresh float64 array: the precision every comparison of the judge runs in."""
    return np.array(float_array(value), dtype=np.float64, copy=True)


@dataclass(frozen=True)
class Checkpoint:
    """The state after the update of step `step`: three groups of arrays keyed and shaped as in SPEC §2."""

    step: int
    params: Arrays
    m: Arrays
    v: Arrays

    def groups(self) -> dict[str, Arrays]:
        return {"params": self.params, "m": self.m, "v": self.v}

    @classmethod
    def of(cls, step: int, groups: dict[str, Arrays]) -> Checkpoint:
        return cls(step, groups["params"], groups["m"], groups["v"])

    @classmethod
    def initial(cls, params: dict[str, Any]) -> Checkpoint:
        """Where a run starts (SPEC §3): the initial parameters in float64, both moments zero; step -1."""
        p = {k: to_float64(a) for k, a in params.items()}
        return cls(-1, p, {k: np.zeros_like(a) for k, a in p.items()}, {k: np.zeros_like(a) for k, a in p.items()})

    def as_float64(self) -> Checkpoint:
        return Checkpoint(self.step, *({k: to_float64(a) for k, a in g.items()} for g in (self.params, self.m, self.v)))
