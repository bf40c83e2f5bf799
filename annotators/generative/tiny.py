"""Random-weight builds of every component the generative pipelines use (tests and benchmarks only).

`size="tiny"` gives models that run a whole pipeline in well under a second on a CPU;
`size="slim"` keeps every width of the real models (FLUX.1 3072 / T5-XXL 4096 / CLIP-L /
SDXL / SigLIP-so400m / the real VAE) with one or two blocks each, so a step costs what a
real block costs without the 12B parameters (a CPU box cannot hold them); `size="full"` is the
real architecture. The classes are the ones `from_pretrained` returns, so the annotators'
code path is the same. Tokenizers are built in memory (`annotators.grounding.char_tokenizer`):
none can be downloaded here.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

SIZES = ("tiny", "slim", "full")


@dataclass(frozen=True)
class Dims:
    """The sizes that tie components together (text widths feed the denoiser)."""

    clip_hidden: int
    clip_layers: int
    t5_dim: int
    t5_layers: int
    t5_ff: int
    flux_heads: int
    flux_head_dim: int
    flux_double: int
    flux_single: int
    flux_rope: tuple[int, int, int]
    vae_blocks: tuple[int, ...]
    vae_latent: int
    vae_groups: int


DIMS = {
    "tiny": Dims(32, 1, 32, 1, 37, 2, 16, 1, 1, (4, 6, 6), (8, 16), 4, 4),
    "slim": Dims(768, 1, 4096, 1, 10240, 24, 128, 1, 2, (16, 56, 56), (128, 256, 512, 512), 16, 32),
    "full": Dims(768, 12, 4096, 24, 10240, 24, 128, 19, 38, (16, 56, 56), (128, 256, 512, 512), 16, 32),
}


def dims(size: str) -> Dims:
    if size not in DIMS:
        raise ValueError(f"size must be one of {SIZES}, got {size!r}")
    return DIMS[size]


def _tokenizer(kind: str, max_length: int):
    from annotators.grounding import char_tokenizer

    if kind == "clip":
        tok = char_tokenizer(["<|endoftext|>", "<|startoftext|>"], eos="<|endoftext|>", pad="<|endoftext|>",
                             bos="<|startoftext|>")
    else:  # t5: text then </s>
        tok = char_tokenizer(["<pad>", "</s>", "<unk>"], eos="</s>", pad="<pad>")
    tok.model_max_length = max_length
    return tok


def clip_text(size: str, with_projection: bool = False, hidden: int | None = None, seed: int = 0):
    """CLIP text encoder + tokenizer (77 tokens). with_projection: SDXL's second encoder."""
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    d = dims(size)
    tok = _tokenizer("clip", 77)
    hidden = hidden or d.clip_hidden
    cfg = CLIPTextConfig(vocab_size=len(tok), hidden_size=hidden,
                         intermediate_size=hidden * 4 if size != "tiny" else 37,
                         num_hidden_layers=d.clip_layers, num_attention_heads=max(2, hidden // 64),
                         max_position_embeddings=77, projection_dim=hidden, hidden_act="quick_gelu",
                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    torch.manual_seed(seed)
    model = (CLIPTextModelWithProjection if with_projection else CLIPTextModel)(cfg)
    return model.eval(), tok


def t5_text(size: str, seed: int = 0):
    from transformers import T5Config, T5EncoderModel

    d = dims(size)
    tok = _tokenizer("t5", 512)
    cfg = T5Config(vocab_size=len(tok), d_model=d.t5_dim, d_kv=64 if size != "tiny" else 8, d_ff=d.t5_ff,
                   num_layers=d.t5_layers, num_heads=64 if size != "tiny" else 4, feed_forward_proj="gated-gelu",
                   is_encoder_decoder=False, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                   decoder_start_token_id=tok.pad_token_id)
    torch.manual_seed(seed)
    return T5EncoderModel(cfg).eval(), tok


def vae(size: str, seed: int = 0, flux: bool = True):
    from diffusers import AutoencoderKL

    d = dims(size)
    n = len(d.vae_blocks)
    torch.manual_seed(seed)
    latent = d.vae_latent if flux else 4
    kw = dict(scaling_factor=0.3611, shift_factor=0.1159, use_quant_conv=False, use_post_quant_conv=False) if flux \
        else dict(scaling_factor=0.13025)
    return AutoencoderKL(in_channels=3, out_channels=3, down_block_types=["DownEncoderBlock2D"] * n,
                         up_block_types=["UpDecoderBlock2D"] * n, block_out_channels=list(d.vae_blocks),
                         layers_per_block=1 if size == "tiny" else 2, latent_channels=latent,
                         norm_num_groups=d.vae_groups, **kw).eval()


def flux_transformer(size: str, kind: str = "base", seed: int = 0):
    """kind: base (FLUX.1-dev, Kontext), fill (FLUX.1-Fill: latents + masked image + mask), control (Depth)."""
    from diffusers import FluxTransformer2DModel

    d = dims(size)
    packed = 4 * d.vae_latent
    scale = 2 ** (len(d.vae_blocks) - 1)
    in_channels = {"base": packed, "fill": 2 * packed + 4 * scale * scale, "control": 2 * packed}[kind]
    torch.manual_seed(seed)
    return FluxTransformer2DModel(patch_size=1, in_channels=in_channels, out_channels=packed,
                                  num_layers=d.flux_double, num_single_layers=d.flux_single,
                                  attention_head_dim=d.flux_head_dim, num_attention_heads=d.flux_heads,
                                  joint_attention_dim=d.t5_dim, pooled_projection_dim=d.clip_hidden,
                                  guidance_embeds=True, axes_dims_rope=d.flux_rope).eval()


def flow_scheduler():
    from diffusers import FlowMatchEulerDiscreteScheduler

    return FlowMatchEulerDiscreteScheduler(shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
                                           base_image_seq_len=256, max_image_seq_len=4096)


def flux_components(size: str, kind: str = "base", seed: int = 0) -> dict:
    """Everything a FLUX.1 pipeline's constructor takes."""
    clip, clip_tok = clip_text(size, seed=seed)
    t5, t5_tok = t5_text(size, seed=seed)
    return dict(transformer=flux_transformer(size, kind, seed), vae=vae(size, seed), text_encoder=clip,
                tokenizer=clip_tok, text_encoder_2=t5, tokenizer_2=t5_tok, scheduler=flow_scheduler())


def redux_prior(size: str, text: dict, seed: int = 0) -> dict:
    """FluxPriorReduxPipeline parts: SigLIP vision tower, its processor, the Redux projector, FLUX's text encoders."""
    from diffusers.pipelines.flux.modeling_flux import ReduxImageEncoder
    from transformers import SiglipImageProcessor, SiglipVisionConfig, SiglipVisionModel

    d = dims(size)
    if size == "tiny":
        cfg = SiglipVisionConfig(hidden_size=32, intermediate_size=37, num_hidden_layers=1, num_attention_heads=2,
                                 image_size=32, patch_size=8)
    else:  # siglip-so400m-patch14-384
        cfg = SiglipVisionConfig(hidden_size=1152, intermediate_size=4304, num_attention_heads=16, image_size=384,
                                 patch_size=14, num_hidden_layers=27 if size == "full" else 1)
    torch.manual_seed(seed)
    side = cfg.image_size
    return dict(image_encoder=SiglipVisionModel(cfg).eval(),
                feature_extractor=SiglipImageProcessor(size={"height": side, "width": side}),
                image_embedder=ReduxImageEncoder(redux_dim=cfg.hidden_size, txt_in_features=d.t5_dim).eval(),
                **{k: text[k] for k in ("text_encoder", "tokenizer", "text_encoder_2", "tokenizer_2")})


def sdxl_components(size: str, seed: int = 0) -> dict:
    """StableDiffusionXL pipeline parts plus the IP-Adapter's CLIP vision encoder and processor."""
    from diffusers import EulerDiscreteScheduler, UNet2DConditionModel
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

    if size == "tiny":
        te1, tok1 = clip_text("tiny", seed=seed)
        te2, tok2 = clip_text("tiny", with_projection=True, seed=seed + 1)
        unet = dict(block_out_channels=(32, 64), layers_per_block=1, attention_head_dim=(2, 4),
                    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                    up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), transformer_layers_per_block=(1, 1),
                    cross_attention_dim=64, addition_time_embed_dim=8, projection_class_embeddings_input_dim=80,
                    norm_num_groups=32)
        vision = CLIPVisionConfig(hidden_size=32, intermediate_size=37, num_hidden_layers=1, num_attention_heads=2,
                                  image_size=32, patch_size=8, projection_dim=32)
    else:
        te1, tok1 = clip_text(size, hidden=768, seed=seed)
        te2, tok2 = clip_text(size, with_projection=True, hidden=1280, seed=seed + 1)
        full = size == "full"
        unet = dict(block_out_channels=(320, 640, 1280), layers_per_block=2 if full else 1,
                    attention_head_dim=(5, 10, 20),
                    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
                    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
                    transformer_layers_per_block=(1, 2, 10) if full else (1, 1, 1), cross_attention_dim=2048,
                    addition_time_embed_dim=256, projection_class_embeddings_input_dim=2816, norm_num_groups=32)
        vision = CLIPVisionConfig(hidden_size=1664, intermediate_size=8192, num_attention_heads=16, image_size=224,
                                  patch_size=14, projection_dim=1280, hidden_act="gelu",
                                  num_hidden_layers=48 if full else 1)
    torch.manual_seed(seed)
    model = UNet2DConditionModel(sample_size=128, in_channels=4, out_channels=4, use_linear_projection=True,
                                 addition_embed_type="text_time", **unet).eval()
    scheduler = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                       num_train_timesteps=1000, steps_offset=1, timestep_spacing="leading")
    side = vision.image_size
    return dict(unet=model, vae=vae(size, seed, flux=False), text_encoder=te1, tokenizer=tok1, text_encoder_2=te2,
                tokenizer_2=tok2, scheduler=scheduler, image_encoder=CLIPVisionModelWithProjection(vision).eval(),
                feature_extractor=CLIPImageProcessor(size={"shortest_edge": side},
                                                     crop_size={"height": side, "width": side}))


def ip_adapter_state_dict(unet, image_embed_dim: int, tokens: int = 4, seed: int = 0) -> dict:
    """A random IP-Adapter (the plain, 4-token kind) shaped for `unet`, in the layout `load_ip_adapter` takes."""
    g = torch.Generator().manual_seed(seed)
    cross = unet.config.cross_attention_dim
    blocks = list(unet.config.block_out_channels)
    adapter, key_id = {}, 1
    for name in unet.attn_processors:
        if name.endswith("attn1.processor"):  # self-attention: no image branch
            continue
        if name.startswith("mid_block"):
            hidden = blocks[-1]
        elif name.startswith("up_blocks"):
            hidden = list(reversed(blocks))[int(name[len("up_blocks.")])]
        else:
            hidden = blocks[int(name[len("down_blocks.")])]
        for proj in ("to_k_ip", "to_v_ip"):
            adapter[f"{key_id}.{proj}.weight"] = torch.randn(hidden, cross, generator=g) * 0.02
        key_id += 2  # the checkpoints number cross-attention layers 1, 3, 5, ...
    image_proj = {"proj.weight": torch.randn(tokens * cross, image_embed_dim, generator=g) * 0.02,
                  "proj.bias": torch.zeros(tokens * cross), "norm.weight": torch.ones(cross),
                  "norm.bias": torch.zeros(cross)}
    return {"image_proj": image_proj, "ip_adapter": adapter}


def causal_lm(size: str, seed: int = 0):
    """A Qwen2 causal LM + in-memory tokenizer (the prompt model); `full` is Qwen2.5-1.5B's shape."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from annotators.grounding import char_tokenizer

    tok = char_tokenizer(["<|endoftext|>", "<|im_start|>", "<|im_end|>"], eos="<|im_end|>", pad="<|endoftext|>")
    if size == "tiny":
        shape = dict(hidden_size=32, intermediate_size=37, num_hidden_layers=1, num_attention_heads=2,
                     num_key_value_heads=1)
    else:
        shape = dict(hidden_size=1536, intermediate_size=8960, num_attention_heads=12, num_key_value_heads=2,
                     num_hidden_layers=28 if size == "full" else 2)
    cfg = Qwen2Config(vocab_size=len(tok), max_position_embeddings=2048, eos_token_id=tok.eos_token_id,
                      pad_token_id=tok.pad_token_id, bos_token_id=None, tie_word_embeddings=True, **shape)
    torch.manual_seed(seed)
    return Qwen2ForCausalLM(cfg).eval(), tok
