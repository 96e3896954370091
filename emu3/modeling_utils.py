"""Shared ``from_pretrained`` / ``save_pretrained`` for the models (one loader, one precision policy)."""

from mindspore import nn

from .checkpoint import load_checkpoint, save_checkpoint
from .device import device_target
from .nn.precision import PrecisionPolicy, apply_precision


class PreTrainedModel(nn.Cell):
    config_class = None
    # Per model: maps a published tensor name to ours (identity when the module tree mirrors the release).
    checkpoint_rename = None

    def __init__(self, config):
        super().__init__()
        self.config = config

    @classmethod
    def from_config(cls, config, dtype=None, precision: PrecisionPolicy = None):
        """A randomly initialised model (weights from the layers' initialisers) under the precision policy."""
        device_target()
        return _ready(cls(config), precision or PrecisionPolicy.for_device(dtype))

    @classmethod
    def from_pretrained(cls, directory, config=None, dtype=None, precision: PrecisionPolicy = None,
                        check_finite=False):
        """Build from ``directory/config.json`` and load its safetensors strictly, then apply the precision policy.

        ``dtype`` ("fp32", "bf16", "fp16") picks the device's policy for that dtype; ``precision`` gives one explicitly.
        ``check_finite=True`` also scans every weight for NaN/inf and names the tensors that have them (a full
        extra pass over the weights, so off by default).
        """
        device_target()  # initialise the device before the first tensor is made
        config = config or cls.config_class.from_pretrained(directory)
        policy = precision or PrecisionPolicy.for_device(dtype)
        model = cls._empty_for_loading(config, policy)
        load_checkpoint(model, directory, rename=cls.checkpoint_rename, check_finite=check_finite)
        return _ready(model, policy)

    @classmethod
    def _empty_for_loading(cls, config, policy: PrecisionPolicy):
        """The model whose weights are about to be overwritten; large models build it lazily in the target dtype."""
        return cls(config)

    def save_pretrained(self, directory):
        self.config.save_pretrained(directory)
        save_checkpoint(self, directory)


def _ready(model, policy):
    """Apply the precision policy and switch to inference mode (users call set_train(True) to fine-tune)."""
    apply_precision(model, policy)
    model.set_train(False)
    return model
