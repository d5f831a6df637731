"""Cross-validated probabilities: every image scored by a model that never trained on it.

A run's model has fitted its training images, so their given labels look right to it whatever
they are; only out-of-sample probabilities expose a wrong label. ``evaluate --cross-validate K``
retrains the run's own recipe (its config.yaml, through ``fit``) K times, each time holding one
fold out as the test split, and keeps each image's probabilities from the model that held it out.
Folds come from a hash of the path (as the split does), so they are reproducible and balanced in
expectation. The K fold runs live in a temporary folder that is removed afterwards.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import numpy as np

from .. import config as config_mod
from ..data import PreparedData, write_split
from ..data.sources import Item
from ..data.split import unit_hash
from ..runs import RunFolder
from .scored import Scored

log = logging.getLogger(__name__)


def fold_of(path: str, k: int, seed: int) -> int:
    """The fold (0..k-1) of one image: a pure function of seed and path, like its split."""
    return min(int(unit_hash(seed, f"cross-validation:{path}") * k), k - 1)


def cross_validated(run: RunFolder, prepared: PreparedData, labels: list[str], k: int, batch_size: int):
    """A :class:`~kclassify.evaluation.scored.Scored` of every image, from the fold model that held it out."""
    from ..inference import load_predictor
    from ..training.fit import fit

    cfg = config_mod.from_yaml_file(run.config)
    seed = cfg.train.seed
    folds = [fold_of(r.path, k, seed) for r in prepared.records]
    index = {name: i for i, name in enumerate(labels)}
    probs = np.zeros((len(prepared.records), len(labels)))
    scored = np.zeros(len(prepared.records), bool)
    with tempfile.TemporaryDirectory(prefix="kclassify-cv-") as tmp:
        for fold in range(k):
            held = [i for i, f in enumerate(folds) if f == fold]
            if not held:
                continue
            log.info("cross-validation: fold %d/%d, training on %d images, scoring %d",
                     fold + 1, k, len(folds) - len(held), len(held))
            split_file = Path(tmp) / f"fold{fold}.csv"
            write_split(split_file, [
                Item(r.path, r.label, "test" if f == fold else ("val" if r.split == "val" else "train"))
                for r, f in zip(prepared.records, folds)])
            result = fit(cfg, output=Path(tmp) / f"fold{fold}", data=str(prepared.source.spec),
                         split_file=str(split_file), verbose=0)
            predictor = load_predictor(result.run_dir)
            outcome = predictor.predict_files([prepared.records[i].decode_path for i in held], batch_size=batch_size)
            for i, res in zip(held, outcome):
                if res.ok:
                    probs[i], scored[i] = res.probabilities, True
    keep = np.flatnonzero(scored)
    records = [prepared.records[i] for i in keep]
    return Scored(records, np.array([index[r.label] for r in records], np.int64), probs[keep])
