"""The Emu3 vision tokenizer: a causal 3-D VQ autoencoder (MoVQ style) in MindSpore.

Module attributes are named exactly like the released ``BAAI/Emu3-VisionTokenizer`` state dict, so loading
is a lookup. Images are (B, 3, H, W) in [-1, 1]; videos (B, T, 3, H, W) with T a multiple of the temporal
factor (4). Codes are (B, H/8, W/8) for images and (B, T/4, H/8, W/8) for videos.
"""

import math

import numpy as np

import mindspore as ms
from mindspore import Parameter, nn, ops
from mindspore.common.initializer import Uniform, initializer

from ..device import FusedJit
from ..modeling_utils import PreTrainedModel
from ..nn.conv import Conv2d, Conv3d
from ..nn.cpu_kernels import use_cpu_kernels
from ..nn.layers import BatchNorm3d, GroupNorm, upsample_nearest, zero_pad
from .configuration_emu3visionvq import Emu3VisionVQConfig


def silu(x):
    return x * ops.sigmoid(x)


class CausalConv3d(nn.Cell):
    """3-D conv that only looks back in time: 2 frames of zero padding in front, none behind; 'same' in space."""

    def __init__(self, in_channels, out_channels, kernel_size=(3, 1, 1), stride=(1, 1, 1)):
        super().__init__()
        kernel_size = (kernel_size,) * 3 if isinstance(kernel_size, int) else tuple(kernel_size)
        stride = (stride,) * 3 if isinstance(stride, int) else tuple(stride)
        pad_h, pad_w = (k - s for k, s in zip(kernel_size[1:], stride[1:]))
        # Pairs from the last axis backwards: (W before, W after, H…, T…).
        self.padding = (pad_w - pad_w // 2, pad_w // 2, pad_h - pad_h // 2, pad_h // 2, 2, 0)
        self.conv = Conv3d(in_channels, out_channels, kernel_size, stride=stride)

    def construct(self, x):
        return self.conv(zero_pad(x, self.padding))


class ResnetTemporalBlock(nn.Cell):
    """BatchNorm3d -> SiLU -> causal conv, twice, plus identity (only ever built with in == out channels)."""

    def __init__(self, channels, dropout=0.0):
        super().__init__()
        self.norm1 = BatchNorm3d(channels)
        self.conv1 = CausalConv3d(channels, channels, kernel_size=3)
        self.norm2 = BatchNorm3d(channels)
        self.dropout = nn.Dropout(p=dropout)
        self.conv2 = CausalConv3d(channels, channels, kernel_size=3)

    def construct(self, x):
        h = self.conv1(silu(self.norm1(x)))
        h = self.conv2(self.dropout(silu(self.norm2(h))))
        return x + h


class TemporalDownsample(nn.Cell):
    def __init__(self, channels):
        super().__init__()
        self.conv = CausalConv3d(channels, channels, kernel_size=(4, 3, 3), stride=(2, 1, 1))

    def construct(self, x):
        return self.conv(x)


class TemporalUpsample(nn.Cell):
    def __init__(self, channels):
        super().__init__()
        self.conv = CausalConv3d(channels, channels, kernel_size=(3, 3, 3))

    def construct(self, x):
        b, c, t, h, w = x.shape
        # Nearest x2 along time == every frame repeated twice.
        x = upsample_nearest(x.transpose(0, 1, 3, 4, 2), (2,)).transpose(0, 1, 4, 2, 3)
        return self.conv(x)


class SpatialNorm(nn.Cell):
    """GroupNorm whose scale and shift are predicted from the quantised latents zq (decoder only)."""

    def __init__(self, channels, zq_channels):
        super().__init__()
        self.norm_layer = GroupNorm(32, channels, eps=1e-6)
        self.conv_y = Conv2d(zq_channels, channels, 1)
        self.conv_b = Conv2d(zq_channels, channels, 1)

    def construct(self, x, zq):
        zq = upsample_nearest(zq, (x.shape[2] // zq.shape[2], x.shape[3] // zq.shape[3]))
        return self.norm_layer(x) * self.conv_y(zq) + self.conv_b(zq)


def make_norm(channels, zq_channels=None):
    return GroupNorm(32, channels, eps=1e-6) if zq_channels is None else SpatialNorm(channels, zq_channels)


def apply_norm(norm, x, zq):
    return norm(x) if zq is None else norm(x, zq)


class ResnetBlock(nn.Cell):
    def __init__(self, in_channels, out_channels, dropout=0.0, zq_channels=None):
        super().__init__()
        self.norm1 = make_norm(in_channels, zq_channels)
        self.conv1 = Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = make_norm(out_channels, zq_channels)
        self.dropout = nn.Dropout(p=dropout)
        self.conv2 = Conv2d(out_channels, out_channels, 3, padding=1)
        self.nin_shortcut = Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else None

    def construct(self, x, zq=None):
        h = self.conv1(silu(apply_norm(self.norm1, x, zq)))
        h = self.conv2(self.dropout(silu(apply_norm(self.norm2, h, zq))))
        if self.nin_shortcut is not None:
            x = self.nin_shortcut(x)
        return x + h


# The attention's products read their operands transposed instead of taking transposed copies: the (HW x HW)
# weights' copy was 262 MB per block for a 720x720 image's 90x90 latent.
_bmm_tn = ops.BatchMatMul(transpose_a=True)
_bmm_nt = ops.BatchMatMul(transpose_b=True)


class AttnBlock(nn.Cell):
    """Single-head self-attention over all spatial positions of a frame, with 1x1-conv projections."""

    def __init__(self, channels, zq_channels=None):
        super().__init__()
        self.norm = make_norm(channels, zq_channels)
        self.q = Conv2d(channels, channels, 1)
        self.k = Conv2d(channels, channels, 1)
        self.v = Conv2d(channels, channels, 1)
        self.proj_out = Conv2d(channels, channels, 1)
        self.scale = channels ** -0.5

    def construct(self, x, zq=None):
        b, c, h, w = x.shape
        normed = apply_norm(self.norm, x, zq)
        q = self.q(normed).reshape(b, c, h * w)  # (B, C, HW), as k and v
        k = self.k(normed).reshape(b, c, h * w)
        v = self.v(normed).reshape(b, c, h * w)
        weights = ops.softmax(_bmm_tn(q, k) * self.scale, axis=-1)  # (B, HW query, HW key)
        out = _bmm_nt(v, weights).reshape(b, c, h, w)
        return x + self.proj_out(out)


class Downsample(nn.Cell):
    def __init__(self, channels):
        super().__init__()
        self.conv = Conv2d(channels, channels, 3, stride=2)

    def construct(self, x):
        # Asymmetric zero padding (right and bottom only), as the released model was trained with.
        return self.conv(zero_pad(x, (0, 1, 0, 1)))


class Upsample(nn.Cell):
    def __init__(self, channels):
        super().__init__()
        self.conv = Conv2d(channels, channels, 3, padding=1)

    def construct(self, x):
        return self.conv(upsample_nearest(x, (2, 2)))


class Stage(nn.Cell):
    """One resolution level: res blocks, optional attention after each, optional resampling at the end."""

    def __init__(self, widths, dropout, with_attn, resample=None, zq_channels=None):
        super().__init__()
        self.block = nn.CellList([ResnetBlock(i, o, dropout, zq_channels) for i, o in widths])
        self.attn = nn.CellList([AttnBlock(o, zq_channels) for _, o in widths] if with_attn else [])
        self.has_attn = with_attn
        if resample is not None:
            setattr(self, resample[0], resample[1](widths[-1][1]))
        self.resample_name = None if resample is None else resample[0]

    def construct(self, x, zq=None):
        for i, block in enumerate(self.block):
            x = block(x, zq)
            if self.has_attn:
                x = self.attn[i](x, zq)
        if self.resample_name == "downsample":
            x = self.downsample(x)
        elif self.resample_name == "upsample":
            x = self.upsample(x)
        return x


class MidBlock(nn.Cell):
    def __init__(self, channels, dropout, zq_channels=None):
        super().__init__()
        self.block_1 = ResnetBlock(channels, channels, dropout, zq_channels)
        self.attn_1 = AttnBlock(channels, zq_channels)
        self.block_2 = ResnetBlock(channels, channels, dropout, zq_channels)

    def construct(self, x, zq=None):
        return self.block_2(self.attn_1(self.block_1(x, zq), zq), zq)


def _stage_widths(in_channels, out_channels, count):
    return [(in_channels if i == 0 else out_channels, out_channels) for i in range(count)]


class Encoder(nn.Cell):
    def __init__(self, config: Emu3VisionVQConfig):
        super().__init__()
        ch, mult = config.ch, config.ch_mult
        latent = config.z_channels * (2 if config.double_z else 1)
        self.conv_in = Conv2d(config.in_channels, ch, 3, padding=1)
        in_mult = [1] + list(mult)
        self.down = nn.CellList([
            Stage(_stage_widths(ch * in_mult[i], ch * mult[i], config.num_res_blocks), config.dropout,
                  with_attn=i in config.attn_resolutions,
                  resample=("downsample", Downsample) if i != len(mult) - 1 else None)
            for i in range(len(mult))
        ])
        self.mid = MidBlock(ch * mult[-1], config.dropout)
        self.norm_out = GroupNorm(32, ch * mult[-1], eps=1e-6)
        self.conv_out = Conv2d(ch * mult[-1], latent, 3, padding=1)
        n_temporal = int(math.log2(config.temporal_downsample_factor))
        self.time_conv = nn.CellList([TemporalDownsample(latent) for _ in range(n_temporal)])
        self.time_res_stack = nn.CellList([ResnetTemporalBlock(latent, config.dropout)
                                           for _ in range(config.num_res_blocks)])

    def construct(self, x, frames_out=None):
        """x (B, T, 3, H, W) -> (B, T'/4, C, h, w), T' = ``frames_out`` or T.

        ``frames_out`` > T repeats the encoded frames in time: an image is a clip of identical frames, and the
        per-frame 2-D part gives identical results for identical frames, so it runs once (4x less work).
        """
        b, t = x.shape[0], x.shape[1]
        h = self.conv_in(x.reshape((b * t,) + x.shape[2:]))  # frames are encoded independently in 2-D
        for stage in self.down:
            h = stage(h)
        h = self.conv_out(silu(self.norm_out(self.mid(h))))
        h = h.reshape((b, t) + h.shape[1:]).transpose(0, 2, 1, 3, 4)  # (B, C, T, h, w) for the temporal convs
        if frames_out is not None and frames_out != t:
            h = ops.broadcast_to(h, (h.shape[0], h.shape[1], frames_out) + h.shape[3:])
        for conv in self.time_conv:
            h = silu(conv(h))
        for block in self.time_res_stack:
            h = block(h)
        return h.transpose(0, 2, 1, 3, 4)  # (B, T/4, C, h, w)


class Decoder(nn.Cell):
    def __init__(self, config: Emu3VisionVQConfig):
        super().__init__()
        ch, mult, zq = config.ch, config.ch_mult, config.embed_dim
        latent = config.z_channels
        self.time_res_stack = nn.CellList([ResnetTemporalBlock(latent, config.dropout)
                                           for _ in range(config.num_res_blocks)])
        n_temporal = int(math.log2(config.temporal_downsample_factor))
        self.time_conv = nn.CellList([TemporalUpsample(latent) for _ in range(n_temporal)])
        self.conv_in = Conv2d(latent, ch * mult[-1], 3, padding=1)
        self.mid = MidBlock(ch * mult[-1], config.dropout, zq)
        # Stored so that ``up.0`` is the highest-resolution stage (the released names), run from the last.
        out_mult = list(mult[1:]) + [mult[-1]]
        self.up = nn.CellList([
            Stage(_stage_widths(ch * out_mult[i], ch * mult[i], config.num_res_blocks + 1), config.dropout,
                  with_attn=i in config.attn_resolutions,
                  resample=("upsample", Upsample) if i != 0 else None, zq_channels=zq)
            for i in range(len(mult))
        ])
        self.norm_out = SpatialNorm(ch * mult[0], zq)
        self.conv_out = Conv2d(ch * mult[0], config.out_channels, 3, padding=1)

    def construct(self, z, zq, first_frame_only=False):
        """z, zq (B, t, C, h, w) -> frames (B * 4t, 3, 8h, 8w), or (B, 3, 8h, 8w) with ``first_frame_only``.

        After the temporal blocks every frame is decoded independently in 2-D, so an image (frame 0 of its
        clip) skips the 2-D work of the other three frames.
        """
        b = z.shape[0]
        # z and zq go through the temporal blocks together (stacked on the batch axis): zq is upsampled in time too.
        h = ops.cat((z, zq), axis=0).transpose(0, 2, 1, 3, 4)
        for block in self.time_res_stack:
            h = block(h)
        for conv in self.time_conv:
            h = silu(conv(h))
        h = h.transpose(0, 2, 1, 3, 4)  # (2B, T, C, h, w)
        if first_frame_only:
            h = h[:, :1]
        frames = h.shape[1]
        z = h[:b].reshape((b * frames,) + h.shape[2:])
        zq = h[b:].reshape((b * frames,) + h.shape[2:])
        x = self.mid(self.conv_in(z), zq)
        for i in range(len(self.up) - 1, -1, -1):
            x = self.up[i](x, zq)
        return self.conv_out(silu(self.norm_out(x, zq)))


class VectorQuantizer(nn.Cell):
    """Nearest-codebook-entry quantisation (the straight-through estimator and the codebook/commitment losses of
    training are applied from outside: ``train/vq_training.py``)."""

    # Distances are tiny differences of sums of squares: kept in fp32 even in a bf16 model so codes stay exact.
    precision_role = "fp32"

    def __init__(self, codebook_size, dim):
        super().__init__()
        self.embedding = nn.Cell()
        self.embedding.weight = Parameter(initializer(Uniform(1.0 / codebook_size), (codebook_size, dim)))
        self.compute_dtype = ms.float32

    def construct(self, z):
        b, t, c, h, w = z.shape
        flat = z.transpose(0, 1, 3, 4, 2).reshape(-1, c).astype(self.compute_dtype)
        codebook = self.embedding.weight.astype(self.compute_dtype)
        distances = (flat ** 2).sum(axis=1, keepdims=True) + (codebook ** 2).sum(axis=1) \
            - 2 * ops.matmul(flat, codebook.transpose())
        return ops.argmin(distances, axis=1).reshape(b, t, h, w)

    def lookup(self, codes):
        return ops.gather(self.embedding.weight, codes.reshape(-1), 0)


class Emu3VisionVQModel(PreTrainedModel):
    config_class = Emu3VisionVQConfig
    main_input_name = "pixel_values"

    def __init__(self, config: Emu3VisionVQConfig):
        super().__init__(config)
        self.encoder = Encoder(config)
        self.decoder = Decoder(config)
        self.quantize = VectorQuantizer(config.codebook_size, config.embed_dim)
        self.quant_conv = CausalConv3d(config.z_channels, config.embed_dim)
        self.post_quant_conv = CausalConv3d(config.embed_dim, config.z_channels)
        self.spatial_scale_factor = config.spatial_factor
        self.set_train(False)  # the tokenizer is frozen in Emu3
        self._compiled = {}
        self._graph_mode = False
        # On the CPU, GroupNorm and the convolutions' unfold run through C++ kernels: MindSpore's take several
        # times as long (released size, a 256x256 image: 13.1 -> 10.6 s in graph mode, README "Speed"). Elsewhere a
        # no-op.
        use_cpu_kernels(self)

    # ---- execution mode -------------------------------------------------------------------------------------

    def set_graph_mode(self, enabled: bool = True):
        """Run encode/decode as compiled graphs (``mindspore.jit``, with operator fusion on CPU: see
        ``emu3.device.FusedJit``): one compile per input shape, then fast."""
        self._graph_mode = bool(enabled)
        return self

    def _run(self, name, fn, *args):
        if not self._graph_mode:
            return fn(*args)
        if name not in self._compiled:
            self._compiled[name] = FusedJit(fn)
        return self._compiled[name](*args)

    # ---- public API -----------------------------------------------------------------------------------------

    def encode(self, pixel_values):
        """Images (B, 3, H, W) -> codes (B, h, w); videos (B, T, 3, H, W) -> codes (B, T/4, h, w). int32."""
        self._check_pixels(pixel_values)
        pixel_values = pixel_values.astype(self.compute_dtype)
        if pixel_values.ndim == 4:  # an image: a clip of temporal_downsample_factor identical frames
            return self._run("encode_image", self._encode_image, pixel_values)
        return self._run("encode", self._encode, pixel_values)

    def decode(self, codes):
        """Codes (B, h, w) -> images (B, 3, 8h, 8w); (B, t, h, w) -> videos (B, 4t, 3, 8h, 8w). Range ~[-1, 1]."""
        codes = self._check_codes(codes)
        if codes.ndim == 3:  # an image: frame 0 of the clip decoded from a single time step
            return self._run("decode_image", self._decode_image, codes)
        return self._run("decode", self._decode, codes)

    @property
    def compute_dtype(self):
        return self.encoder.conv_in.weight.dtype

    # ---- compute (what graph mode compiles) -----------------------------------------------------------------

    def _encode(self, pixel_values, frames_out=None):
        return self.quantize(self.encode_latents(pixel_values, frames_out))

    def _encode_image(self, pixel_values):
        b, c, h, w = pixel_values.shape
        return self._encode(pixel_values.reshape(b, 1, c, h, w), self.config.temporal_downsample_factor)[:, 0]

    def _decode(self, codes, first_frame_only=False):
        b, t, h, w = codes.shape
        quant = self.quantize.lookup(codes).reshape(b, t, h, w, -1).transpose(0, 1, 4, 2, 3)  # (B, t, C, h, w)
        return self.decode_latents(quant, first_frame_only)

    def encode_latents(self, pixel_values, frames_out=None):
        """Frames (B, T, 3, H, W) -> the continuous latents before quantisation, (B, T'/4, C, h, w) (T' as in
        ``Encoder``); what vision-tokenizer training quantises with a straight-through estimator."""
        h = self.encoder(pixel_values, frames_out)
        return self.quant_conv(h.transpose(0, 2, 1, 3, 4)).transpose(0, 2, 1, 3, 4)

    def decode_latents(self, quant, first_frame_only=False):
        """Quantised latents (B, t, C, h, w) -> frames (B, 4t or 1, 3, 8h, 8w)."""
        b, t, _, h, w = quant.shape
        # One transpose for the causal conv's (B, C, t, h, w), none back for the decoder's spatial norms: AKG's
        # fusion fails on this graph ("Parameter_N is not in old2new") when a transpose is undone by another.
        quant = quant.astype(self.compute_dtype)
        post_quant = self.post_quant_conv(quant.transpose(0, 2, 1, 3, 4))
        frames = self.decoder(post_quant.transpose(0, 2, 1, 3, 4), quant, first_frame_only)
        factor = self.spatial_scale_factor
        frames_out = 1 if first_frame_only else t * self.config.temporal_downsample_factor
        return frames.reshape(b, frames_out, self.config.out_channels, h * factor, w * factor)

    def _decode_image(self, codes):
        return self._decode(codes.reshape((codes.shape[0], 1) + codes.shape[1:]), True)[:, 0]

    # ---- input checks (plain Python, before any graph runs) -------------------------------------------------

    def _check_pixels(self, pixel_values):
        shape = tuple(pixel_values.shape)
        factor, temporal = self.spatial_scale_factor, self.config.temporal_downsample_factor
        if len(shape) not in (4, 5):
            raise ValueError(f"expected an image batch (B, 3, H, W) or a video batch (B, T, 3, H, W), got shape {shape}")
        if shape[-3] != self.config.in_channels:
            raise ValueError(f"expected {self.config.in_channels} channels on axis -3, got shape {shape}; "
                             "pass channels-first pixels from Emu3VisionVQImageProcessor")
        if shape[-1] % factor or shape[-2] % factor or shape[-1] < factor or shape[-2] < factor:
            raise ValueError(f"height and width must be positive multiples of {factor}, got {shape[-2]}x{shape[-1]}; "
                             "resize with Emu3VisionVQImageProcessor (smart_resize) first")
        if len(shape) == 5 and shape[1] % temporal:
            raise ValueError(f"a video needs a multiple of {temporal} frames, got {shape[1]}; "
                             f"drop or repeat frames to reach a multiple of {temporal}")
        # NaN/inf would quantise to code 0 everywhere without a word: one reduction is cheap next to the encoder.
        if not bool(ms.ops.isfinite(pixel_values).all()):
            raise ValueError("pixel_values contain NaN or inf; check the image loading / normalisation (pixels "
                             "from Emu3VisionVQImageProcessor lie in [-1, 1])")

    def _check_codes(self, codes):
        if not isinstance(codes, ms.Tensor):
            codes = ms.Tensor(np.asarray(codes))
        if codes.ndim not in (3, 4):
            raise ValueError(f"codes must be (B, h, w) for images or (B, t, h, w) for videos, got shape {codes.shape}")
        if codes.dtype not in (ms.int32, ms.int64):
            raise TypeError(f"codes must be integer token ids, got {codes.dtype}")
        low, high = int(codes.min()), int(codes.max())
        if low < 0 or high >= self.config.codebook_size:
            raise ValueError(f"codes must lie in [0, {self.config.codebook_size}), got values in [{low}, {high}]; "
                             "visual-token ids from the LLM must have the visual-token offset removed")
        return codes.astype(ms.int32)
