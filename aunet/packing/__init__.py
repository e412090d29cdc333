"""Packed training: K trials of one architecture and shape trained as one model with a leading member axis.

``pack_models(models)`` stacks K built models (each with its own seed) into a :class:`PackedModel` run on
K*B member-major rows; ``member_losses`` gives each member's mean loss (differentiate their sum);
:class:`PackedAdamW` steps every member with its own LR, clipping and moments, and freezes a member whose
loss or gradients stop being finite; ``unpack(packed, k)`` gives member k back as a model of its own; ``train_pack(cfgs)`` trains K trial configs
as one pack, each member as its unpacked twin would train (:mod:`aunet.packing.trainer`).
"""

from aunet.packing.loss import member_losses
from aunet.packing.modules import PackedModel, pack_models, unpack
from aunet.packing.optim import PackedAdamW, member_lrs
from aunet.packing.trainer import check_pack, train_pack

__all__ = ["PackedAdamW", "PackedModel", "check_pack", "member_losses", "member_lrs", "pack_models", "train_pack",
           "unpack"]
