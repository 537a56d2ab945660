"""Fused per-token statistics over the vocabulary: log p(token), KL(p || p~), H(p), H(p~).

z = logits / T, p = softmax(z), p~ = softmax(z~) (the degraded-image logits). One Triton
program owns one token row and streams its V logits in blocks with an online softmax, so a
row is read once in forward and once in backward. Gradients w.r.t. z, for incoming grads
g_lp, g_kl, g_h of logp, KL and H (p~ is a constant inside the KL):

    dz_j = g_lp (1[j = tok] - p_j) - g_h p_j (log p_j + H) + g_kl p_j ((z_j - z~_j) - E_p[z - z~])

and, when the degraded pass carries gradient, dz~_j = -g_hd q_j (log q_j + H~). All of it is
one pass over the row, whatever combination of outputs the caller differentiates.

`token_stats` wraps the row kernels around the lm_head matmul, one token-chunk of fp32 logits
at a time: forward keeps only 5 floats per token; backward recomputes the chunk's logits,
writes dz (in the weight's dtype, in place for fp32) and turns it into dhidden (and dweight).
"""

from __future__ import annotations

import functools
from typing import Optional

import torch
import triton
import triton.language as tl

from .reference import TokenStats, _check_hidden, _check_logits, chunk_logits, default_chunk_size

NEG_INF = tl.constexpr(float("-inf"))  # a global a @triton.jit body may read


@triton.jit
def _merge(m, s, a, m2, s2, a2):
    """Merge two online-softmax states (max m, s = sum e^(z-m), a = sum e^(z-m)(z-m)); either may
    be empty (m = -inf). Returns the merged state and the factor that rescales the first one's
    other sums (the second one's factor is returned too)."""
    m_new = tl.maximum(m, m2)
    m_safe = tl.where(m_new == NEG_INF, 0.0, m_new)  # both empty: nothing to rescale
    f1 = tl.exp(m - m_safe)
    f2 = tl.exp(m2 - m_safe)
    sh1 = tl.where(m == NEG_INF, 0.0, m - m_safe)
    sh2 = tl.where(m2 == NEG_INF, 0.0, m2 - m_safe)
    return m_new, f1 * s + f2 * s2, f1 * (a + sh1 * s) + f2 * (a2 + sh2 * s2), f1, f2


@triton.jit
def _finish(
    row,
    z_row,
    tok_ptr,
    inv_t,
    logp_ptr,
    kl_ptr,
    ent_ptr,
    entd_ptr,
    saved_ptr,
    N,
    m,
    s,
    a,
    c,
    md,
    sd,
    ad,
    HAS_DEG: tl.constexpr,
):
    log_s = tl.log(s)
    tok = tl.load(tok_ptr + row)
    z_tok = tl.load(z_row + tok).to(tl.float32) * inv_t
    tl.store(logp_ptr + row, (z_tok - m) - log_s)
    tl.store(saved_ptr + row, m)
    tl.store(saved_ptr + N + row, log_s)
    if HAS_DEG:
        log_sd = tl.log(sd)
        e_diff = c / s  # E_p[z - z~]
        tl.store(kl_ptr + row, e_diff - (m - md) - (log_s - log_sd))
        tl.store(ent_ptr + row, log_s - a / s)
        tl.store(entd_ptr + row, log_sd - ad / sd)
        tl.store(saved_ptr + 2 * N + row, e_diff)
        tl.store(saved_ptr + 3 * N + row, md)
        tl.store(saved_ptr + 4 * N + row, log_sd)


@triton.jit
def _stats_fwd_kernel(
    z_ptr,
    zd_ptr,
    tok_ptr,
    stride_z,
    stride_zd,
    V,
    inv_t,
    logp_ptr,
    kl_ptr,
    ent_ptr,
    entd_ptr,
    saved_ptr,
    N,
    part_ptr,
    SPAN,
    HAS_DEG: tl.constexpr,
    SPLIT: tl.constexpr,
    BLOCK_V: tl.constexpr,
):
    # Program (row, k) streams columns [k * SPAN, (k + 1) * SPAN) of its row. With SPLIT = 1 it
    # owns the whole row and writes the outputs; otherwise it writes its partial softmax state
    # and _stats_combine_kernel merges the SPLIT parts (small N: more programs in flight).
    row = tl.program_id(0).to(tl.int64)
    k = tl.program_id(1)
    z_row = z_ptr + row * stride_z
    zd_row = zd_ptr + row * stride_zd
    offs0 = tl.arange(0, BLOCK_V)
    # Online softmax state: running max m, s = sum e^(z-m), a = sum e^(z-m) (z-m),
    # c = sum e^(z-m) (z - z~). Shifted sums keep H = log s - a/s exact at |z| ~ 1e4.
    m = tl.full([], NEG_INF, tl.float32)
    s = tl.zeros([], tl.float32)
    a = tl.zeros([], tl.float32)
    c = tl.zeros([], tl.float32)
    md = tl.full([], NEG_INF, tl.float32)
    sd = tl.zeros([], tl.float32)
    ad = tl.zeros([], tl.float32)
    lo = k * SPAN
    hi = tl.minimum(lo + SPAN, V)
    for start in range(lo, hi, BLOCK_V):
        offs = start + offs0
        inb = offs < hi
        z = tl.load(z_row + offs, mask=inb, other=NEG_INF).to(tl.float32) * inv_t
        live = z > NEG_INF
        mb = tl.max(z, axis=0)
        mb_safe = tl.where(mb == NEG_INF, 0.0, mb)
        e = tl.exp(z - mb_safe)
        m, s, a, f1, f2 = _merge(m, s, a, mb, tl.sum(e, axis=0), tl.sum(tl.where(live, e * (z - mb_safe), 0.0), axis=0))
        if HAS_DEG:
            zd = tl.load(zd_row + offs, mask=inb, other=NEG_INF).to(tl.float32) * inv_t
            c = f1 * c + f2 * tl.sum(tl.where(live, e * (z - zd), 0.0), axis=0)
            lived = zd > NEG_INF
            mdb = tl.max(zd, axis=0)
            mdb_safe = tl.where(mdb == NEG_INF, 0.0, mdb)
            ed = tl.exp(zd - mdb_safe)
            md, sd, ad, _, _ = _merge(
                md, sd, ad, mdb, tl.sum(ed, axis=0), tl.sum(tl.where(lived, ed * (zd - mdb_safe), 0.0), axis=0)
            )

    if SPLIT == 1:
        _finish(
            row,
            z_row,
            tok_ptr,
            inv_t,
            logp_ptr,
            kl_ptr,
            ent_ptr,
            entd_ptr,
            saved_ptr,
            N,
            m,
            s,
            a,
            c,
            md,
            sd,
            ad,
            HAS_DEG,
        )
    else:
        part = part_ptr + k * N + row  # [7, SPLIT, N]
        stride = SPLIT * N
        tl.store(part, m)
        tl.store(part + stride, s)
        tl.store(part + 2 * stride, a)
        if HAS_DEG:
            tl.store(part + 3 * stride, c)
            tl.store(part + 4 * stride, md)
            tl.store(part + 5 * stride, sd)
            tl.store(part + 6 * stride, ad)


@triton.jit
def _stats_combine_kernel(
    z_ptr,
    tok_ptr,
    stride_z,
    inv_t,
    logp_ptr,
    kl_ptr,
    ent_ptr,
    entd_ptr,
    saved_ptr,
    N,
    part_ptr,
    HAS_DEG: tl.constexpr,
    SPLIT: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    stride = SPLIT * N
    m = tl.full([], NEG_INF, tl.float32)
    s = tl.zeros([], tl.float32)
    a = tl.zeros([], tl.float32)
    c = tl.zeros([], tl.float32)
    md = tl.full([], NEG_INF, tl.float32)
    sd = tl.zeros([], tl.float32)
    ad = tl.zeros([], tl.float32)
    for k in range(SPLIT):
        part = part_ptr + k * N + row
        m, s, a, f1, f2 = _merge(m, s, a, tl.load(part), tl.load(part + stride), tl.load(part + 2 * stride))
        if HAS_DEG:
            c = f1 * c + f2 * tl.load(part + 3 * stride)
            md, sd, ad, _, _ = _merge(
                md, sd, ad, tl.load(part + 4 * stride), tl.load(part + 5 * stride), tl.load(part + 6 * stride)
            )
    _finish(
        row,
        z_ptr + row * stride_z,
        tok_ptr,
        inv_t,
        logp_ptr,
        kl_ptr,
        ent_ptr,
        entd_ptr,
        saved_ptr,
        N,
        m,
        s,
        a,
        c,
        md,
        sd,
        ad,
        HAS_DEG,
    )


@triton.jit
def _stats_bwd_kernel(
    z_ptr,
    zd_ptr,
    tok_ptr,
    stride_z,
    stride_zd,
    V,
    inv_t,
    saved_ptr,
    ent_ptr,
    entd_ptr,
    N,
    g_lp_ptr,
    g_kl_ptr,
    g_h_ptr,
    g_hd_ptr,
    dz_ptr,
    dzd_ptr,
    stride_dz,
    stride_dzd,
    HAS_GLP: tl.constexpr,
    HAS_GKL: tl.constexpr,
    HAS_GH: tl.constexpr,
    HAS_GHD: tl.constexpr,
    SPAN,
    NEED_ZD: tl.constexpr,
    BLOCK_V: tl.constexpr,
):
    # Each element's gradient needs only its row's saved statistics: program (row, k) handles
    # columns [k * SPAN, (k + 1) * SPAN), no combine step.
    row = tl.program_id(0).to(tl.int64)
    lo = tl.program_id(1) * SPAN
    hi = tl.minimum(lo + SPAN, V)
    z_row = z_ptr + row * stride_z
    zd_row = zd_ptr + row * stride_zd
    dz_row = dz_ptr + row * stride_dz
    dzd_row = dzd_ptr + row * stride_dzd
    m = tl.load(saved_ptr + row)
    log_s = tl.load(saved_ptr + N + row)
    tok = tl.load(tok_ptr + row)
    g_lp = 0.0
    if HAS_GLP:
        g_lp = tl.load(g_lp_ptr + row).to(tl.float32)
    if HAS_GKL:
        g_kl = tl.load(g_kl_ptr + row).to(tl.float32)
        e_diff = tl.load(saved_ptr + 2 * N + row)
    if HAS_GH:
        g_h = tl.load(g_h_ptr + row).to(tl.float32)
        ent = tl.load(ent_ptr + row)
    if HAS_GHD:
        g_hd = tl.load(g_hd_ptr + row).to(tl.float32)
        entd = tl.load(entd_ptr + row)
        md = tl.load(saved_ptr + 3 * N + row)
        log_sd = tl.load(saved_ptr + 4 * N + row)
    offs0 = tl.arange(0, BLOCK_V)
    for start in range(lo, hi, BLOCK_V):
        offs = start + offs0
        inb = offs < hi
        z = tl.load(z_row + offs, mask=inb, other=NEG_INF).to(tl.float32) * inv_t
        live = z > NEG_INF
        logp = tl.where(live, (z - m) - log_s, 0.0)
        p = tl.where(live, tl.exp(logp), 0.0)
        dz = tl.where(offs == tok, g_lp, 0.0) - g_lp * p
        if HAS_GH:
            dz -= g_h * p * (logp + ent)
        if NEED_ZD:
            zd = tl.load(zd_row + offs, mask=inb, other=NEG_INF).to(tl.float32) * inv_t
        if HAS_GKL:
            dz += g_kl * tl.where(live, p * ((z - zd) - e_diff), 0.0)
        if HAS_GHD:
            lived = zd > NEG_INF
            logq = tl.where(lived, (zd - md) - log_sd, 0.0)
            q = tl.where(lived, tl.exp(logq), 0.0)
            dzd = -g_hd * q * (logq + entd)
            tl.store(dzd_row + offs, (dzd * inv_t).to(dzd_ptr.dtype.element_ty), mask=inb)
        # dz may alias z (token_stats overwrites its own logits chunk): this program reads each
        # element before it writes it, and no other program touches these columns.
        tl.store(dz_row + offs, (dz * inv_t).to(dz_ptr.dtype.element_ty), mask=inb)


def _block_v(V: int, device: torch.device) -> int:
    # The interpreter pays per operation, not per element: big blocks make CPU tests fast.
    cap = 4096 if device.type == "cuda" else 16384
    return min(cap, triton.next_power_of_2(max(V, 16)))


@functools.lru_cache(maxsize=None)
def _sm_count(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


def launch_params(
    n: int,
    V: int,
    device: torch.device,
    *,
    backward: bool = False,
    block_v: Optional[int] = None,
    num_warps: Optional[int] = None,
    split: Optional[int] = None,
):
    """(BLOCK_V, num_warps, split, span) for n rows of V logits. split > 1 cuts each row into
    that many column ranges of `span` (a multiple of BLOCK_V) so that few rows still fill the
    GPU. By default only the backward splits: it needs no combine step, and on an H200
    (bench/tune_stats.py, bench/RESULTS.md) splitting made its N <= 1024 rows ~10% faster while
    the forward's extra combine launch cancelled its gain. Overrides are for tune_stats.py."""
    block_v = block_v or _block_v(V, device)
    num_warps = num_warps or (8 if device.type == "cuda" else 4)
    if split is None:
        split = 1
        if backward and device.type == "cuda":
            # Aim for ~16 programs per SM; never a part shorter than 4 blocks.
            sms = _sm_count(device.index if device.index is not None else torch.cuda.current_device())
            while split < 16 and n * split < 16 * sms and 8 * split * block_v <= V:
                split *= 2
    blocks = triton.cdiv(V, block_v)
    span = triton.cdiv(blocks, split) * block_v
    split = triton.cdiv(V, span)  # rounding can leave fewer non-empty parts
    return block_v, num_warps, split, span


def _rows(t: torch.Tensor) -> torch.Tensor:
    # Rows may be strided (a slice of a bigger logits tensor); the vocabulary axis must be dense.
    return t if t.stride(-1) == 1 else t.contiguous()


def stats_forward(z: torch.Tensor, tok: torch.Tensor, zd: Optional[torch.Tensor], inv_t: float, **launch):
    """Launch the forward kernel on logits rows. Returns (logp, kl, ent, entd, saved[5, n])."""
    n, V = z.shape
    dev = z.device
    logp = torch.empty(n, dtype=torch.float32, device=dev)
    saved = torch.empty((5, n), dtype=torch.float32, device=dev)
    has_deg = zd is not None
    kl, ent, entd = (torch.empty(n, dtype=torch.float32, device=dev) if has_deg else logp for _ in range(3))
    if n > 0:
        block_v, warps, split, span = launch_params(n, V, dev, **launch)
        part = torch.empty((7, split, n), dtype=torch.float32, device=dev) if split > 1 else saved
        zd_arg = zd if has_deg else z
        _stats_fwd_kernel[(n, split)](
            z,
            zd_arg,
            tok,
            z.stride(0),
            zd_arg.stride(0),
            V,
            inv_t,
            logp,
            kl,
            ent,
            entd,
            saved,
            n,
            part,
            span,
            HAS_DEG=has_deg,
            SPLIT=split,
            BLOCK_V=block_v,
            num_warps=warps,
        )
        if split > 1:
            _stats_combine_kernel[(n,)](
                z,
                tok,
                z.stride(0),
                inv_t,
                logp,
                kl,
                ent,
                entd,
                saved,
                n,
                part,
                HAS_DEG=has_deg,
                SPLIT=split,
                num_warps=1,
            )
    if not has_deg:
        return logp, None, None, None, saved
    return logp, kl, ent, entd, saved


def stats_backward(z, tok, zd, inv_t, saved, ent, entd, g_lp, g_kl, g_h, g_hd, dz, dzd, **launch):
    """Launch the backward kernel: writes dz (and dzd when g_hd is given) for one block of rows."""
    n, V = z.shape
    if n == 0:
        return
    block_v, warps, split, span = launch_params(n, V, z.device, backward=True, **launch)
    dummy = saved  # any fp32 pointer for the arguments a constexpr flag switches off
    zd_arg = zd if zd is not None else z
    dzd_arg = dzd if dzd is not None else dz
    _stats_bwd_kernel[(n, split)](
        z,
        zd_arg,
        tok,
        z.stride(0),
        zd_arg.stride(0),
        V,
        inv_t,
        saved,
        ent if ent is not None else dummy,
        entd if entd is not None else dummy,
        n,
        g_lp if g_lp is not None else dummy,
        g_kl if g_kl is not None else dummy,
        g_h if g_h is not None else dummy,
        g_hd if g_hd is not None else dummy,
        dz,
        dzd_arg,
        dz.stride(0),
        dzd_arg.stride(0),
        HAS_GLP=g_lp is not None,
        HAS_GKL=g_kl is not None,
        HAS_GH=g_h is not None,
        HAS_GHD=g_hd is not None,
        SPAN=span,
        NEED_ZD=g_kl is not None or g_hd is not None,
        BLOCK_V=block_v,
        num_warps=warps,
    )


def chunk_grads(z, zd, tok, inv_t, saved, ent, entd, g_lp, g_kl, g_h, g_hd, weight, h, hd, d_weight, need_h=True):
    """One token-chunk's backward through the lm_head: the kernel turns the incoming per-token
    grads into dlogits (written straight in the matmul's dtype; for fp32 weights in place over
    the caller-owned chunk buffers z, zd), then dlogits @ W gives d hidden (and d hidden_deg when
    g_hd is given); dlogits^T @ h is added to d_weight when it is not None.
    Returns (d_h or None, d_hd or None)."""
    same = weight.dtype == torch.float32
    dz = z if same else torch.empty(z.shape, dtype=weight.dtype, device=z.device)
    dzd = None
    if g_hd is not None:
        dzd = zd if same else torch.empty(zd.shape, dtype=weight.dtype, device=zd.device)
    stats_backward(z, tok, zd, inv_t, saved, ent, entd, g_lp, g_kl, g_h, g_hd, dz, dzd)
    d_h = dz @ weight if need_h else None
    if d_weight is not None:
        d_weight += (dz.t() @ h).float()
    d_hd = None
    if dzd is not None:
        d_hd = dzd @ weight
        if d_weight is not None:
            d_weight += (dzd.t() @ hd).float()
    return d_h, d_hd


def _contig(g: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    return None if g is None else g.contiguous()


class _TokenStatsFromLogits(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits, token_ids, logits_deg, temperature):
        z = _rows(logits)
        zd = _rows(logits_deg) if logits_deg is not None else None
        tok = token_ids.contiguous()
        inv_t = 1.0 / temperature
        logp, kl, ent, entd, saved = stats_forward(z, tok, zd, inv_t)
        ctx.save_for_backward(z, tok, zd, saved, ent, entd)
        ctx.inv_t = inv_t
        ctx.set_materialize_grads(False)
        if zd is None:
            return (logp,)
        return logp, kl, ent, entd

    @staticmethod
    def backward(ctx, g_lp, g_kl=None, g_h=None, g_hd=None):
        z, tok, zd, saved, ent, entd = ctx.saved_tensors
        need_z, _, need_zd, _ = ctx.needs_input_grad
        need_z = need_z and not (g_lp is None and g_kl is None and g_h is None)
        g_hd = g_hd if need_zd else None
        dz = torch.empty_like(z) if need_z else None  # fresh buffers: never write the caller's logits
        dzd = torch.empty_like(zd) if g_hd is not None else None
        if dz is None and dzd is None:
            return None, None, None, None
        if dz is None:  # only the degraded side needs a gradient; compute dz into scratch
            dz = torch.empty_like(z)
            need_z = False
        stats_backward(
            z, tok, zd, ctx.inv_t, saved, ent, entd, _contig(g_lp), _contig(g_kl), _contig(g_h), _contig(g_hd), dz, dzd
        )
        return (dz if need_z else None), None, dzd, None


def token_stats_from_logits(
    logits: torch.Tensor,
    token_ids: torch.Tensor,
    logits_deg: Optional[torch.Tensor] = None,
    *,
    temperature: float = 1.0,
) -> TokenStats:
    _check_logits(logits, token_ids, logits_deg)
    out = _TokenStatsFromLogits.apply(logits, token_ids, logits_deg, float(temperature))
    return TokenStats(*out) if logits_deg is not None else TokenStats(out[0], None, None, None)


class _TokenStats(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, token_ids, hidden_deg, temperature, chunk):
        N = hidden.shape[0]
        tok = token_ids.contiguous()
        inv_t = 1.0 / temperature
        has_deg = hidden_deg is not None
        dev = hidden.device
        logp = torch.empty(N, dtype=torch.float32, device=dev)
        saved = torch.empty((5, N), dtype=torch.float32, device=dev)
        kl, ent, entd = (torch.empty(N, dtype=torch.float32, device=dev) if has_deg else None for _ in range(3))
        for start in range(0, N, chunk):
            sl = slice(start, min(start + chunk, N))
            z = chunk_logits(hidden[sl], weight)
            zd = chunk_logits(hidden_deg[sl], weight) if has_deg else None
            lp_c, kl_c, ent_c, entd_c, saved_c = stats_forward(z, tok[sl], zd, inv_t)
            logp[sl] = lp_c
            saved[:, sl] = saved_c
            if has_deg:
                kl[sl], ent[sl], entd[sl] = kl_c, ent_c, entd_c
            del z, zd
        ctx.save_for_backward(hidden, weight, tok, hidden_deg, saved, ent, entd)
        ctx.inv_t, ctx.chunk = inv_t, chunk
        ctx.set_materialize_grads(False)
        if not has_deg:
            return (logp,)
        return logp, kl, ent, entd

    @staticmethod
    def backward(ctx, g_lp, g_kl=None, g_h=None, g_hd=None):
        hidden, weight, tok, hidden_deg, saved, ent, entd = ctx.saved_tensors
        need_h, need_w, _, need_hd, _, _ = ctx.needs_input_grad
        g_hd = g_hd if need_hd else None
        if g_lp is None and g_kl is None and g_h is None and g_hd is None:
            return None, None, None, None, None, None
        N, chunk = hidden.shape[0], ctx.chunk
        d_hidden = torch.empty_like(hidden) if need_h else None
        d_hdeg = torch.zeros_like(hidden_deg) if need_hd else None
        d_weight = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if need_w else None
        for start in range(0, N, chunk):
            sl = slice(start, min(start + chunk, N))
            h = hidden[sl]
            z = chunk_logits(h, weight)  # recompute: cheaper than keeping [N, V] alive
            want_zd = g_kl is not None or g_hd is not None
            zd = chunk_logits(hidden_deg[sl], weight) if want_zd else None
            pick = lambda g: None if g is None else g[sl].contiguous()
            d_h, d_hd = chunk_grads(
                z,
                zd,
                tok[sl],
                ctx.inv_t,
                saved[:, sl].contiguous(),
                pick(ent),
                pick(entd),
                pick(g_lp),
                pick(g_kl),
                pick(g_h),
                pick(g_hd),
                weight,
                h,
                hidden_deg[sl] if g_hd is not None else None,
                d_weight,
                need_h=need_h,
            )
            if need_h:
                d_hidden[sl] = d_h
            if d_hd is not None:
                d_hdeg[sl] = d_hd
            del z, zd, d_h, d_hd
        if d_weight is not None:
            d_weight = d_weight.to(weight.dtype)
        return d_hidden, d_weight, None, d_hdeg, None, None


def token_stats(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    token_ids: torch.Tensor,
    hidden_deg: Optional[torch.Tensor] = None,
    *,
    temperature: float = 1.0,
    chunk_size: Optional[int] = None,
) -> TokenStats:
    _check_hidden(hidden, weight, token_ids, hidden_deg)
    chunk = chunk_size or default_chunk_size(hidden.shape[0], weight.shape[0])
    out = _TokenStats.apply(hidden, weight, token_ids, hidden_deg, float(temperature), int(chunk))
    return TokenStats(*out) if hidden_deg is not None else TokenStats(out[0], None, None, None)
