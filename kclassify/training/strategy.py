"""``tf.distribute`` strategy selection: one device by default, Mirrored on several GPUs."""

from __future__ import annotations

import logging

import tensorflow as tf

log = logging.getLogger(__name__)


def select_strategy(name: str = "auto") -> tf.distribute.Strategy:
    """Return the strategy to build and train under.

    Args:
        name: 'auto' (MirroredStrategy when more than one GPU is visible, else the
            default one-device strategy), 'default' or 'mirrored' (all GPUs, or all
            logical CPU devices when there is no GPU) or 'multiworker' (the cluster in
            ``TF_CONFIG``; 'auto' picks it whenever TF_CONFIG describes a cluster).

    The batch size is global: each of N replicas gets ``batch_size / N`` images per step.
    """
    from .multiworker import cluster

    if name == "multiworker" or (name == "auto" and cluster()):
        # model.fit cannot train under it (keras-team/keras#20585): fit uses multiworker.train_loop.
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
        log.info("MultiWorkerMirroredStrategy with %d replica(s)", strategy.num_replicas_in_sync)
        return strategy
    gpus = tf.config.list_logical_devices("GPU")
    if name == "mirrored" or (name == "auto" and len(gpus) > 1):
        devices = [d.name for d in (gpus or tf.config.list_logical_devices("CPU"))]
        strategy = tf.distribute.MirroredStrategy(devices=devices)
    else:
        strategy = tf.distribute.get_strategy()
    log.info("strategy %s with %d replica(s)", type(strategy).__name__, strategy.num_replicas_in_sync)
    return strategy
