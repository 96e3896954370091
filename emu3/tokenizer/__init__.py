"""The Emu3 vision tokenizer (VQ autoencoder) and its image processor."""

from .configuration_emu3visionvq import Emu3VisionVQConfig
from .image_processing_emu3visionvq import Emu3VisionVQImageProcessor, smart_resize
from .modeling_emu3visionvq import Emu3VisionVQModel

__all__ = ["Emu3VisionVQConfig", "Emu3VisionVQModel", "Emu3VisionVQImageProcessor", "smart_resize"]
