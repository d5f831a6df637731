"""Exact and near-duplicate groups, and what each group means for training.

Exact copies share a SHA-256 of their bytes. Near copies (resized, re-encoded, slightly cropped)
have 64-bit perceptual hashes (DCT hash, ``imagehash.phash``) within a Hamming distance: measured
on intel_scenes photos, a resize and re-encode leaves the hash as it was and small crops move it a
few bits, while two different photos were almost always further apart than the default threshold
(docs/benchmarks.md, "Audit speed"). Pairs are found with NumPy over blocks of the hash matrix
(popcount of XORs), and joined into groups (union-find), so a chain of near copies is one group.

A group is reported by what it does to training: copies within one class (the class is weighted
twice), copies under different labels (contradictory: one of them is wrong) and copies in
different splits (leakage: a test image that is a training image inflates test accuracy).
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from ..settings import AuditSettings

DEFAULT_THRESHOLD = AuditSettings.near_dup_threshold  # bits of 64
MIN_SIDE = 32  # pixels: smaller pictures get no near-duplicate search (phash works on a 32x32 resize)
BLOCK_ELEMENTS = 4_000_000  # XORs computed at a time (32 MB), so memory stays flat at any N


def hamming_pairs(hashes: np.ndarray, threshold: int) -> list[tuple[int, int]]:
    """Index pairs (i < j) whose 64-bit hashes differ in at most ``threshold`` bits."""
    h = np.asarray(hashes, np.uint64)
    rows = max(1, BLOCK_ELEMENTS // max(len(h), 1))
    pairs = []
    for start in range(0, len(h), rows):
        block = h[start:start + rows]
        distance = _popcount(block[:, None] ^ h[None, :])
        i, j = np.nonzero(distance <= threshold)
        i += start
        keep = i < j
        pairs += list(zip(i[keep].tolist(), j[keep].tolist()))
    return pairs


def _popcount(x: np.ndarray) -> np.ndarray:
    if hasattr(np, "bitwise_count"):  # NumPy 2
        return np.bitwise_count(x)
    bytes_ = x.view(np.uint8).reshape(*x.shape, 8)
    return np.unpackbits(bytes_, axis=-1).sum(axis=-1)


def groups(digests: list[str], hashes: list[int | None], threshold: int) -> list[list[int]]:
    """Indices grouped by exact digest and by hash distance <= threshold; only groups of two or more."""
    parent = list(range(len(digests)))

    def find(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    def union(a: int, b: int) -> None:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)

    first: dict[str, int] = {}
    for i, d in enumerate(digests):
        if d:
            union(first.setdefault(d, i), i)
    hashed = [i for i, h in enumerate(hashes) if h is not None]
    if threshold >= 0 and hashed:
        for a, b in hamming_pairs(np.array([hashes[i] for i in hashed], np.uint64), threshold):
            union(hashed[a], hashed[b])
    members = defaultdict(list)
    for i in range(len(digests)):
        members[find(i)].append(i)
    return sorted((m for m in members.values() if len(m) > 1), key=lambda m: m[0])


def describe(group: list[int], items, hashes: list[int | None]) -> dict:
    """A group as audit.json lists it: members, exact or near, and what it means for training."""
    rows = [items[i] for i in group]
    labels = sorted({r.label for r in rows})
    splits = sorted({r.split for r in rows})
    exact = len({r.sha256 for r in rows}) == 1
    known = [hashes[i] for i in group if hashes[i] is not None]
    # distance from the first member (not all pairs: a group of thousands would cost millions of pairs)
    spread = max((bin(known[0] ^ h).count("1") for h in known), default=0)
    return {
        "kind": "exact" if exact else "near",
        "max_distance": 0 if exact else spread,  # bits, from the first member
        "labels": labels,
        "splits": splits,
        "contradictory": len(labels) > 1,
        "leak": len(splits) > 1,  # the same photo in two splits
        "test_in_train": "train" in splits and "test" in splits,
        "members": [{"path": r.path, "label": r.label, "split": r.split} for r in rows],
    }
