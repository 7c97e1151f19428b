"""The keyed shuffle: a bijection on ``[0, n)`` computed in O(1) memory.

A balanced-as-possible Feistel network on the ``2**bits`` domain that covers ``n``,
with cycle-walking to stay inside ``[0, n)``. The same code runs on NumPy (host)
and on JAX (inside ``jit``) and gives identical results, because every step is
``uint32`` arithmetic that wraps the same way in both.

Why this construction:
- A Feistel network is a bijection for *any* round function, so correctness does
  not rest on the quality of the mixing; the mixing only buys statistical quality.
- The two halves are ``ceil(bits/2)`` and ``floor(bits/2)`` bits and the rounds
  alternate which half they update, so odd bit counts need no special case and the
  domain is the next power of two, ``< 2n``. Cycle-walking therefore needs fewer than
  two steps per element on average, and it always terminates: the walk follows the
  cycle through ``i``, which returns to ``i < n`` at the latest.
- Round keys come from a non-linear hash of ``(seed, epoch)``, so ``(s, e + 1)`` and
  ``(s + 1, e)`` give unrelated orders (grain's ``seed + epoch`` makes them equal).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

NUM_ROUNDS = 6
_M1 = 0x85EBCA6B
_M2 = 0xC2B2AE35
_GOLDEN = 0x9E3779B9
_ROUND_MUL = 0x9E3779B1
_SEED_SALT = 0x243F6A88
_EPOCH_SALT = 0xB7E15162


def _is_jax(*xs: Any) -> bool:
    return any(isinstance(x, jax.Array) for x in xs)


def _u32(x: Any, xp: Any) -> Any:
    if xp is np:
        return np.asarray(x).astype(np.uint32)
    return jnp.asarray(x).astype(jnp.uint32)


def _fmix32(h: Any, xp: Any) -> Any:
    """Murmur3's 32-bit finaliser: a bijective avalanche on uint32."""
    h = h ^ (h >> 16)
    h = h * xp.uint32(_M1)
    h = h ^ (h >> 13)
    h = h * xp.uint32(_M2)
    return h ^ (h >> 16)


def _epoch_hash(seed: Any, epoch: Any, xp: Any) -> Any:
    h = _fmix32(_u32(seed, xp) ^ xp.uint32(_SEED_SALT), xp)
    return _fmix32(h ^ (_u32(epoch, xp) * xp.uint32(_GOLDEN) + xp.uint32(_EPOCH_SALT)), xp)


def _round_keys(seed: Any, epoch: Any, xp: Any) -> list[Any]:
    h = _epoch_hash(seed, epoch, xp)
    return [_fmix32(h + xp.uint32((r + 1) * _GOLDEN & 0xFFFFFFFF), xp) for r in range(NUM_ROUNDS)]


def _round_fn(half: Any, key: Any, xp: Any) -> Any:
    # Multiply-xorshift twice: the xorshifts fold high product bits into the low bits the
    # mask keeps (a bare multiply's low bits are linear in the input's low bits).
    h = (half ^ key) * xp.uint32(_ROUND_MUL)
    h = (h ^ (h >> 16)) * xp.uint32(_M1)
    return h ^ (h >> 15)


def _feistel(x: Any, keys: list[Any], bits: int, xp: Any) -> Any:
    right_bits = bits // 2
    left_mask = xp.uint32((1 << (bits - right_bits)) - 1)
    right_mask = xp.uint32((1 << right_bits) - 1)
    left = x >> right_bits
    right = x & right_mask
    for r, key in enumerate(keys):
        if r % 2 == 0:
            left = (left ^ _round_fn(right, key, xp)) & left_mask
        else:
            right = (right ^ _round_fn(left, key, xp)) & right_mask
    return (left << right_bits) | right


def _walk_numpy(x: np.ndarray, keys: list[Any], bits: int, n: int) -> np.ndarray:
    y = _feistel(x, keys, bits, np)
    out = y >= n
    while out.any():
        sub = [k[out] if np.ndim(k) else k for k in keys]
        y[out] = _feistel(y[out], sub, bits, np)
        out = y >= n
    return y


_UNROLLED_WALKS = 2


def _walk_jax(x: jax.Array, keys: list[Any], bits: int, n: int) -> jax.Array:
    y = _feistel(x, keys, bits, jnp)
    if n == 1 << bits:
        return y

    def body(y):
        return jnp.where(y >= n, _feistel(y, keys, bits, jnp), y)

    # Each element leaves [0, n) with probability < 1/2 per step; two unrolled steps settle
    # almost every batch, so the while loop (costly per iteration on XLA:CPU) usually only
    # evaluates its condition once. It still guarantees termination for the rest.
    for _ in range(_UNROLLED_WALKS):
        y = body(y)
    return jax.lax.while_loop(lambda y: jnp.any(y >= n), body, y)


def permute(i: Any, n: int, seed: Any, epoch: Any = 0) -> Any:
    """Returns ``pi(i)``: the image of positions ``i`` under the keyed bijection on ``[0, n)``.

    ``i`` may be a NumPy array (host) or a JAX array / tracer (inside ``jit``, ``vmap``);
    both give identical ``int32`` (JAX) or ``int64`` (NumPy) results. ``seed`` and ``epoch``
    are unsigned 32-bit words (scalars, or arrays broadcasting against ``i``). ``n`` is a
    static Python int in ``[1, 2**31 - 1]``.

    Arguments:
        i: positions in ``[0, n)``: a NumPy array, a JAX array or a tracer.
        n: the number of records, a static Python int in ``[1, 2**31 - 1]``.
        seed: an unsigned 32-bit seed.
        epoch: the epoch; each has its own order.

    Returns:
        the record ids at positions ``i``, the same type of array as ``i``.

    ```python
    import numpy as np, datarax_fn as dfn
    order = dfn.permute(np.arange(10), 10, seed=0, epoch=0)
    assert sorted(order.tolist()) == list(range(10))
    ```
    """
    if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n < 2**31:
        raise ValueError(f"permute: n must be a Python int in [1, 2**31 - 1]; got n={n!r}.")
    bits = (n - 1).bit_length()
    if _is_jax(i, seed, epoch):
        return permute_with_keys(i, n, _round_keys(seed, epoch, jnp))
    with np.errstate(over="ignore"):
        i = _u32(i, np)
        if bits == 0:
            return np.zeros(i.shape, np.int64)
        keys = [np.broadcast_to(k, i.shape) if np.ndim(k) else k for k in _round_keys(seed, epoch, np)]
        return _walk_numpy(i.copy(), keys, bits, n).astype(np.int64)


def round_keys(seed: Any, epoch: Any) -> list[jax.Array]:
    """Returns the JAX round keys of ``(seed, epoch)``, for ``permute_with_keys``."""
    return _round_keys(seed, epoch, jnp)


def permute_with_keys(i: Any, n: int, keys: list[Any]) -> jax.Array:
    """``permute`` inside ``jit`` with precomputed round keys (scalars, or arrays like ``i``).

    A batch that straddles two epochs selects between two scalar key sets per element,
    which costs far less than hashing ``(seed, epoch)`` once per element.
    """
    i = _u32(i, jnp)
    bits = (n - 1).bit_length()
    if bits == 0:
        return jnp.zeros(i.shape, jnp.int32)
    return _walk_jax(i, keys, bits, n).astype(jnp.int32)


def epoch_seed(seed: int, epoch: int) -> int:
    """Returns a well-mixed uint32 for ``(seed, epoch)``: the seed for a backend's own shuffle.

    Use it to seed ``IterableDataset.shuffle`` or ``tf.data`` shuffles, so every epoch
    has a new order and ``(seed, epoch + 1)`` differs from ``(seed + 1, epoch)``.
    """
    with np.errstate(over="ignore"):
        return int(_epoch_hash(np.uint32(seed % 2**32), np.uint32(epoch % 2**32), np))
