"""Prototype: a TINY random Qwen3-VL through the paths hawkeye_lite would need.

Run with transformers 5.24 (constraints.txt) or 5.17 (constraints-lowest.txt):
    python docs/dev/qwen3_vl_probe.py
Reads hawkeye_lite (tokenizer builder, VLProcessor, chat_text) without changing it.
Checks (fp32, CPU, atol 1e-5 unless said):
  1  processor: Qwen2VLImageProcessorPil read from a Qwen3-VL-layout preprocessor_config.json
  2  rotary: independent re-implementation of interleaved MRoPE == lm.rotary_emb
  3  full forward == "vision once + language_model(inputs_embeds, deepstack)" decomposition
  4  completion hidden states: shared-prefix (cache widened G times) == per-row == HF forward
  5  decode-engine style step (own static KV, q_norm/k_norm, plain rope) == HF cached step;
     the current engine step (no q/k norm) does NOT match
  6  greedy 5 tokens: HF generate == decomposed prefill + engine-style steps
  7  published-size configs: parse (rope_scaling -> rope_parameters), meta-device param counts
"""

from __future__ import annotations

import inspect
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
import transformers
from PIL import Image

sys.path.insert(0, "/work/main")
from transformers import DynamicCache, Qwen3VLConfig, Qwen3VLForConditionalGeneration
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

from hawkeye_lite.model import SPECIAL_TOKENS, VISION_TOKENS, VLProcessor
from hawkeye_lite.prompts import THINK, chat_text
from hawkeye_lite.tiny_model import build_tokenizer

ATOL = 1e-5
RESULTS = {"transformers": transformers.__version__}


def check(name, a, b, atol=ATOL, expect_equal=True, rel=False):
    """rel=True: atol is relative to max|b| (engine steps: SDPA reduction order differs from HF's)."""
    diff = (a.float() - b.float()).abs().max().item()
    scale = b.float().abs().max().item() if rel else 1.0
    ok = diff <= atol * scale
    RESULTS[name] = f"max|diff|={diff:.3g}{f' (max|ref|={scale:.3g})' if rel else ''} ({'match' if ok else 'DIFFER'})"
    print(f"{name:60s} {RESULTS[name]}")
    assert ok == expect_equal, f"{name}: expected {'match' if expect_equal else 'mismatch'}, max diff {diff}"


def cache_kw(module):
    return "cache" if "cache" in inspect.signature(module.forward).parameters else "past_key_values"


def flat(x):
    """5.24 splits per image (tuple); 5.17 returns one tensor."""
    return torch.cat(list(x), 0) if isinstance(x, (list, tuple)) else x


torch.manual_seed(0)
tmp = Path(tempfile.mkdtemp(prefix="q3tiny-"))

# ----------------------------------------------------------------------------- model + processor
tok = build_tokenizer(400)
ids = {t: tok.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
vocab = (len(tok) + 63) // 64 * 64
config = Qwen3VLConfig(
    text_config=dict(
        vocab_size=vocab,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,  # explicit, like the real ones (4B: 2560 hidden, 32 heads x 128)
        max_position_embeddings=4096,
        rms_norm_eps=1e-6,
        initializer_range=0.1,
        # Published configs say rope_scaling={mrope_interleaved, mrope_section, rope_type} + rope_theta;
        # 5.x folds both into rope_parameters (checked in part 7).
        rope_parameters={
            "rope_type": "default",
            "rope_theta": 5_000_000.0,
            "mrope_section": [4, 2, 2],
            "mrope_interleaved": True,
        },
        bos_token_id=ids["<|endoftext|>"],
        eos_token_id=ids["<|im_end|>"],
        pad_token_id=ids["<|endoftext|>"],
    ),
    vision_config=dict(
        depth=2,
        hidden_size=32,
        intermediate_size=64,
        num_heads=2,
        patch_size=16,
        spatial_merge_size=2,
        temporal_patch_size=2,
        out_hidden_size=64,
        num_position_embeddings=256,  # 16x16 learned grid, bilinearly resampled per image
        deepstack_visual_indexes=[0, 1],
        initializer_range=0.1,
    ),
    image_token_id=ids["<|image_pad|>"],
    video_token_id=ids["<|video_pad|>"],
    vision_start_token_id=ids["<|vision_start|>"],
    vision_end_token_id=ids["<|vision_end|>"],
    tie_word_embeddings=False,
)
model = Qwen3VLForConditionalGeneration(config).eval()
with torch.no_grad():
    model.lm_head.weight.mul_(8.0)
model.save_pretrained(str(tmp))  # round trip through a checkpoint folder, as tiny_model does
model = Qwen3VLForConditionalGeneration.from_pretrained(str(tmp), dtype=torch.float32).eval()
bb, lm = model.model, model.model.language_model

# preprocessor_config.json in the layout the published Qwen3-VL checkpoints ship
(tmp / "preprocessor_config.json").write_text(
    json.dumps(
        {
            "size": {"longest_edge": 16777216, "shortest_edge": 65536},
            "patch_size": 16,
            "temporal_patch_size": 2,
            "merge_size": 2,
            "image_mean": [0.5, 0.5, 0.5],
            "image_std": [0.5, 0.5, 0.5],
            "processor_class": "Qwen3VLProcessor",
            "image_processor_type": "Qwen2VLImageProcessorFast",
        }
    )
)
ip = Qwen2VLImageProcessorPil.from_pretrained(str(tmp))
RESULTS["image_processor"] = (
    f"{type(ip).__name__} patch={ip.patch_size} merge={ip.merge_size} mean={list(ip.image_mean)} size={dict(ip.size)}"
)
print("1 processor:", RESULTS["image_processor"])
assert ip.patch_size == 16 and list(ip.image_mean) == [0.5] * 3
try:
    from transformers import AutoImageProcessor

    RESULTS["AutoImageProcessor"] = type(AutoImageProcessor.from_pretrained(str(tmp))).__name__
except Exception as e:
    RESULTS["AutoImageProcessor"] = f"error: {type(e).__name__}: {str(e)[:120]}"
print("  AutoImageProcessor ->", RESULTS["AutoImageProcessor"])

proc = VLProcessor(tok, ip, min_pixels=64 * 64, max_pixels=128 * 128)  # hawkeye's own processor class
rng = np.random.default_rng(0)
images = [Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)) for h, w in ((90, 120), (64, 64))]
enc = proc(images, [chat_text(THINK)] * 2)
vision = [proc.process_image(im) for im in images]
enc2 = proc(images, [chat_text(THINK)] * 2, vision=vision)
assert torch.equal(enc["pixel_values"], enc2["pixel_values"]) and torch.equal(enc["input_ids"], enc2["input_ids"])
print(
    "  grid_thw",
    enc["image_grid_thw"].tolist(),
    "patch dim",
    enc["pixel_values"].shape[1],
    "(3*2*16*16=1536)",
    "image tokens",
    proc.num_image_tokens(enc["image_grid_thw"]),
)
assert enc["pixel_values"].shape[1] == 3 * 2 * 16 * 16
input_ids, am, pv, grid, mm = (
    enc[k] for k in ("input_ids", "attention_mask", "pixel_values", "image_grid_thw", "mm_token_type_ids")
)
B = input_ids.shape[0]

# ----------------------------------------------------------------------------- 2 rotary
pos, deltas = bb.get_rope_index(input_ids, mm_token_type_ids=mm, image_grid_thw=grid, attention_mask=am)
RESULTS["get_rope_index"] = f"position_ids {tuple(pos.shape)}, deltas {tuple(deltas.shape)} {deltas.view(-1).tolist()}"
inv = lm.rotary_emb.inv_freq.float()
sec = lm.rotary_emb.mrope_section
half = inv.shape[0]
axis = torch.zeros(half, dtype=torch.long)  # which of (t, h, w) drives frequency j
for a in (1, 2):
    axis[a : 3 * sec[a] : 3] = a
freqs = pos.float()[axis, :, :].permute(1, 2, 0) * inv  # [B, L, D/2]: freq j uses position axis[j]
mine_cos, mine_sin = torch.cat([freqs, freqs], -1).cos(), torch.cat([freqs, freqs], -1).sin()
dummy = torch.zeros(1, dtype=torch.float32)
hf_cos, hf_sin = lm.rotary_emb(dummy, pos)
check("2a interleaved mrope cos (vision positions) == formula", hf_cos, mine_cos)
check("2b interleaved mrope sin == formula", hf_sin, mine_sin)
tpos = torch.arange(7).view(1, 1, -1).expand(3, 1, -1)
c3, _ = lm.rotary_emb(dummy, tpos)
f1 = torch.arange(7).float()[:, None] * inv
check("2c equal t/h/w positions == plain 1D rope (engine _rope)", c3[0], torch.cat([f1, f1], -1).cos())
RESULTS["axis_map"] = "".join("thw"[int(a)] for a in axis)
print("  frequency->axis map (D/2 =", half, "):", RESULTS["axis_map"])

# ----------------------------------------------------------------------------- 3 full vs decomposed
with torch.no_grad():
    bb.rope_deltas = None
    full = model(
        input_ids=input_ids,
        attention_mask=am,
        pixel_values=pv,
        image_grid_thw=grid,
        mm_token_type_ids=mm,
        use_cache=False,
    ).logits

    vo = bb.get_image_features(pv, grid)
    RESULTS["get_image_features"] = (
        f"{type(vo).__name__}: pooler_output {type(vo.pooler_output).__name__} of "
        f"{[tuple(t.shape) for t in vo.pooler_output]}; deepstack_features list[{len(vo.deepstack_features)}] of "
        + (
            f"tuple of {[tuple(t.shape) for t in vo.deepstack_features[0]]}"
            if isinstance(vo.deepstack_features[0], (list, tuple))
            else f"Tensor {tuple(vo.deepstack_features[0].shape)}"
        )
    )
    print("3", RESULTS["get_image_features"])
    feats = flat(vo.pooler_output)
    deep = [flat(f) for f in vo.deepstack_features]  # one [N_img_tokens, H] per deepstack layer
    image_mask = input_ids == config.image_token_id

    def embed(tok_ids, f=None):
        e = bb.get_input_embeddings()(tok_ids)
        if f is not None:
            e = e.masked_scatter((tok_ids == config.image_token_id).unsqueeze(-1), f.to(e.dtype))
        return e

    def lm_forward(emb, mask, position_ids, cache=None, vis_mask=None, ds=None):
        kw = {cache_kw(lm): cache} if cache is not None else {}
        if ds is not None:
            kw.update(visual_pos_masks=vis_mask, deepstack_visual_embeds=ds)
        return lm(
            inputs_embeds=emb, attention_mask=mask, position_ids=position_ids, use_cache=cache is not None, **kw
        ).last_hidden_state

    hid = lm_forward(embed(input_ids, feats), am, pos, vis_mask=image_mask, ds=deep)
    dec = model.lm_head(hid)
    m = am.bool()
    check("3a full forward == vision-once + lm(deepstack) [logits]", full[m], dec[m])
    nods = model.lm_head(lm_forward(embed(input_ids, feats), am, pos))
    check("3b ... without deepstack (what hawkeye does today)", full[m], nods[m], expect_equal=False)

    # ------------------------------------------------------------------------- 4 completion hidden states
    G, T = 2, 4
    allowed = torch.tensor([i for i in range(len(tok)) if i not in {ids[t] for t in SPECIAL_TOKENS}])
    comp = allowed[torch.randint(0, len(allowed), (B * G, T))]
    cmask = torch.ones(B * G, T, dtype=am.dtype)
    cmask[1, -1] = 0
    steps = am.sum(1, keepdim=True) + deltas.view(-1, 1)
    comp_pos = (steps.repeat_interleave(G, 0) + torch.arange(T)).unsqueeze(0).expand(3, -1, -1)
    full_mask = torch.cat([am.repeat_interleave(G, 0), cmask], 1)
    # shared prefix: prompt once per image (with deepstack), cache widened to G rows, completion only
    cache = DynamicCache(config=config.get_text_config())
    ph = lm_forward(embed(input_ids, feats), am, pos, cache, image_mask, deep)
    cache.batch_repeat_interleave(G)
    h2 = lm_forward(embed(comp), full_mask, comp_pos, cache)
    shared = torch.cat([ph[:, -1:].repeat_interleave(G, 0), h2[:, :-1]], 1)
    # per row: features AND every deepstack layer repeated per image, masks from the widened ids
    n_tok = proc.num_image_tokens(grid)
    rep = lambda f: torch.cat([p for p in torch.split(f, n_tok) for _ in range(G)], 0)
    ids_g = torch.cat([input_ids.repeat_interleave(G, 0), comp], 1)
    pos_g = torch.cat([pos.repeat_interleave(G, 1), comp_pos], 2)
    hg = lm_forward(
        embed(ids_g, rep(feats)), full_mask, pos_g, None, ids_g == config.image_token_id, [rep(d) for d in deep]
    )
    L = input_ids.shape[1]
    per_row = hg[:, L - 1 : L - 1 + T]
    check("4a shared-prefix == per-row completion hidden states", shared * cmask[..., None], per_row * cmask[..., None])
    bb.rope_deltas = None
    pv_g = torch.cat([p for p in torch.split(pv, grid.prod(-1).tolist()) for _ in range(G)])
    hf = model(
        input_ids=ids_g,
        attention_mask=full_mask,
        pixel_values=pv_g,
        image_grid_thw=grid.repeat_interleave(G, 0),
        mm_token_type_ids=(ids_g == config.image_token_id).int(),
        use_cache=False,
    ).logits
    check(
        "4b per-row == HF full forward on prompt+completion [logits]",
        model.lm_head(per_row) * cmask[..., None],
        hf[:, L - 1 : L - 1 + T] * cmask[..., None],
    )

    # ------------------------------------------------------------------------- 5 engine-style step
    tcfg = config.get_text_config()
    H, KV, D = tcfg.num_attention_heads, tcfg.num_key_value_heads, tcfg.head_dim

    def rope(p):
        f = p[:, None].float() * inv
        e = torch.cat([f, f], -1)
        return e.cos()[:, None, None, :], e.sin()[:, None, None, :]

    def rot(x):
        return torch.cat([-x[..., D // 2 :], x[..., : D // 2]], -1)

    def engine_step(tok_ids, p, ks, vs, mask, qk_norm=True):
        """decode.DecodeEngine._layer loop with the Qwen3 change: q_norm/k_norm on [.., heads, D]
        before rope. ks/vs: per-layer [R, KV, S, D] (this call appends; the engine index_copy_s)."""
        r = tok_ids.shape[0]
        h = lm.embed_tokens(tok_ids[:, None])
        cos, sin = rope(p)
        for i, layer in enumerate(lm.layers):
            at = layer.self_attn
            x = layer.input_layernorm(h)
            q = at.q_proj(x).view(r, 1, H, D)
            k = at.k_proj(x).view(r, 1, KV, D)
            if qk_norm:
                q, k = at.q_norm(q), at.k_norm(k)
            q, k = q.transpose(1, 2), k.transpose(1, 2)
            v = at.v_proj(x).view(r, 1, KV, D).transpose(1, 2)
            q, k = q * cos + rot(q) * sin, k * cos + rot(k) * sin
            ks[i] = torch.cat([ks[i], k], 2)
            vs[i] = torch.cat([vs[i], v], 2)
            qg = q.reshape(r, KV, H // KV, D)
            o = torch.nn.functional.scaled_dot_product_attention(
                qg, ks[i], vs[i], attn_mask=mask[:, None, None, :], scale=at.scaling
            )
            h = h + at.o_proj(o.reshape(r, 1, H * D))
            h = h + layer.mlp(layer.post_attention_layernorm(h))
        return model.lm_head(lm.norm(h)[:, 0])

    def prefill():
        c = DynamicCache(config=tcfg)
        hh = lm_forward(embed(input_ids, feats), am, pos, c, image_mask, deep)
        layers = c.layers if hasattr(c, "layers") else None
        ks = [
            (lay.keys if layers else c.key_cache[i]).repeat_interleave(G, 0)
            for i, lay in enumerate(layers or range(len(lm.layers)))
        ]
        vs = [
            (lay.values if layers else c.value_cache[i]).repeat_interleave(G, 0)
            for i, lay in enumerate(layers or range(len(lm.layers)))
        ]
        return c, hh, ks, vs

    c, hh, ks, vs = prefill()
    tok0 = comp[:, 0]
    p0 = (am.sum(1) + deltas.view(-1)).repeat_interleave(G)
    mask1 = torch.cat([am.repeat_interleave(G, 0), torch.ones(B * G, 1, dtype=am.dtype)], 1).bool()
    eng = engine_step(tok0, p0, ks, vs, mask1)
    c.batch_repeat_interleave(G)
    ref = model.lm_head(lm_forward(embed(tok0[:, None]), mask1.long(), p0.view(1, -1, 1).expand(3, -1, 1), c))[:, 0]
    check("5a engine-style step (q/k norm) == HF cached step [logits, rel 1e-6]", eng, ref, atol=1e-6, rel=True)
    _, _, ks2, vs2 = prefill()
    check(
        "5b engine step WITHOUT q/k norm (today's decode.py)",
        engine_step(tok0, p0, ks2, vs2, mask1, False),
        ref,
        atol=1e-6,
        rel=True,
        expect_equal=False,
    )

    # ------------------------------------------------------------------------- 6 greedy generate
    N = 5
    stop = [ids["<|im_end|>"], ids["<|endoftext|>"]]
    suppressed = sorted({tok.convert_tokens_to_ids(t) for t in VISION_TOKENS} | set(range(len(tok), vocab)))
    bb.rope_deltas = None
    out = model.generate(
        input_ids=input_ids,
        attention_mask=am,
        pixel_values=pv,
        image_grid_thw=grid,
        mm_token_type_ids=mm,
        max_new_tokens=N,
        min_new_tokens=N,
        do_sample=False,
        eos_token_id=stop,
        pad_token_id=ids["<|endoftext|>"],
        suppress_tokens=suppressed,
    )
    hf_tokens = out[:, input_ids.shape[1] :]
    # decomposed: prefill once per image (B rows), then engine-style steps on B rows (G=1 here)
    c = DynamicCache(config=tcfg)
    hh = lm_forward(embed(input_ids, feats), am, pos, c, image_mask, deep)
    layers = c.layers if hasattr(c, "layers") else None
    ks = [lay.keys for lay in layers] if layers else list(c.key_cache)
    vs = [lay.values for lay in layers] if layers else list(c.value_cache)
    logits = model.lm_head(hh[:, -1])
    mask, p = am.bool(), am.sum(1) + deltas.view(-1)
    mine = []
    for t in range(N):
        logits[:, suppressed + stop] = float("-inf")
        nxt = logits.argmax(-1)
        mine.append(nxt)
        if t == N - 1:
            break
        mask = torch.cat([mask, torch.ones(B, 1, dtype=torch.bool)], 1)
        logits = engine_step(nxt, p, ks, vs, mask)
        p = p + 1
    mine = torch.stack(mine, 1)
    RESULTS["6 greedy tokens HF generate"] = hf_tokens.tolist()
    RESULTS["6 greedy tokens decomposed+engine"] = mine.tolist()
    same = torch.equal(hf_tokens, mine)
    RESULTS["6 greedy 5 tokens equal"] = same
    print("6 generate:", hf_tokens.tolist(), "vs", mine.tolist(), "equal:", same)
    assert same
    # rollout._generate_naive: num_return_sequences=G with pixel_values (5.17 has a Qwen3-VL-specific
    # _expand_inputs_for_generation; 5.24 the generic one)
    bb.rope_deltas = None
    outg = model.generate(
        input_ids=input_ids,
        attention_mask=am,
        pixel_values=pv,
        image_grid_thw=grid,
        mm_token_type_ids=mm,
        num_return_sequences=2,
        max_new_tokens=N,
        min_new_tokens=N,
        do_sample=True,
        temperature=1.0,
        top_p=1.0,
        top_k=1,
        eos_token_id=stop,
        pad_token_id=ids["<|endoftext|>"],
        suppress_tokens=suppressed,
    )
    naive_ok = torch.equal(outg[:, input_ids.shape[1] :], hf_tokens.repeat_interleave(2, 0))
    RESULTS["6b generate(num_return_sequences=2, top_k=1) == greedy rows"] = naive_ok
    print("6b naive num_return_sequences path equal:", naive_ok)
    assert naive_ok

# ----------------------------------------------------------------------------- 7 published-size configs
# Field values as in the published config.json files (sources in REPORT.md); built on the meta device.
PUB = {
    "2B": dict(
        text=dict(
            hidden_size=2048,
            intermediate_size=6144,
            num_hidden_layers=28,
            num_attention_heads=16,
            num_key_value_heads=8,
        ),
        vision=dict(
            depth=24,
            hidden_size=1024,
            intermediate_size=4096,
            out_hidden_size=2048,
            deepstack_visual_indexes=[5, 11, 17],
        ),
        tie=True,
    ),
    "4B": dict(
        text=dict(
            hidden_size=2560,
            intermediate_size=9728,
            num_hidden_layers=36,
            num_attention_heads=32,
            num_key_value_heads=8,
        ),
        vision=dict(
            depth=24,
            hidden_size=1024,
            intermediate_size=4096,
            out_hidden_size=2560,
            deepstack_visual_indexes=[5, 11, 17],
        ),
        tie=True,
    ),
    "8B": dict(
        text=dict(
            hidden_size=4096,
            intermediate_size=12288,
            num_hidden_layers=36,
            num_attention_heads=32,
            num_key_value_heads=8,
        ),
        vision=dict(
            depth=27,
            hidden_size=1152,
            intermediate_size=4304,
            out_hidden_size=4096,
            deepstack_visual_indexes=[8, 16, 24],
        ),
        tie=False,
    ),
}
for name, p in PUB.items():
    text = dict(
        p["text"],
        head_dim=128,
        vocab_size=151936,
        max_position_embeddings=262144,
        rms_norm_eps=1e-6,
        model_type="qwen3_vl_text",
        rope_theta=5000000,
        tie_word_embeddings=p["tie"],
        rope_scaling={"mrope_interleaved": True, "mrope_section": [24, 20, 20], "rope_type": "default"},
    )
    vis = dict(
        p["vision"],
        model_type="qwen3_vl",
        num_heads=16,
        num_position_embeddings=2304,
        patch_size=16,
        spatial_merge_size=2,
        temporal_patch_size=2,
        hidden_act="gelu_pytorch_tanh",
        in_channels=3,
    )
    cfg = Qwen3VLConfig(
        text_config=text,
        vision_config=vis,
        tie_word_embeddings=p["tie"],
        image_token_id=151655,
        video_token_id=151656,
        vision_start_token_id=151652,
        vision_end_token_id=151653,
    )
    with torch.device("meta"):
        mm_ = Qwen3VLForConditionalGeneration(cfg)
    n_all = sum(t.numel() for t in mm_.parameters())
    n_vis = sum(t.numel() for t in mm_.model.visual.parameters())
    tied = mm_.lm_head.weight is mm_.model.language_model.embed_tokens.weight
    tc = cfg.get_text_config()
    RESULTS[f"7 {name}"] = (
        f"params {n_all / 1e9:.3f}B (vision {n_vis / 1e6:.0f}M), lm_head tied={tied}, "
        f"rope_parameters={dict(tc.rope_parameters)}, head_dim={tc.head_dim}, "
        f"q_proj out={tc.num_attention_heads * tc.head_dim} vs hidden {tc.hidden_size}"
    )
    print(f"7 {name}:", RESULTS[f"7 {name}"])

out_json = Path(f"qwen3_vl_probe-{transformers.__version__}.json")
out_json.write_text(json.dumps(RESULTS, indent=2, default=str) + "\n")
print("ALL CHECKS PASSED; wrote", out_json)
