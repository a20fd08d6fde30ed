"""tf.distribute strategies by name, shared by avd-train and avd-finetune.

`make_strategy` builds one of STRATEGIES, `num_workers` counts the worker
processes it trains on, and two helpers follow Keras' convention for
multi-worker training (every worker runs the same callbacks and saves, only
the chief writes the model folder): `writes_model_dir` tells a program from
TF_CONFIG whether this process is the chief, `output_dir` gives a worker
the folder it writes.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile

import tensorflow as tf

from avd_tf.layout import BACKUP

STRATEGIES = ("default", "mirrored", "multi_worker_mirrored", "tpu")


class _MultiWorkerMirroredStrategy(tf.distribute.MultiWorkerMirroredStrategy):
    """MultiWorkerMirroredStrategy with the `reduce` that Keras 3's `fit` expects.

    With two or more workers, Keras 3 (3.15 here; keras-team/keras#20585)
    fails twice on the plain strategy: before `fit` and `evaluate` it reduces
    the first (x, y) batch in one `reduce` call, which MirroredStrategy maps
    over the nest but this strategy does not ("Attempt to convert a value
    (PerReplica...)"); and after each step it averages the scalar metric
    results with `reduce(MEAN, value, axis=0)`, which has no axis 0 to
    reduce ("Invalid reduction dimension 0"). Here nests are mapped over, and
    a scalar is averaged over the replicas only, as Keras does under
    MirroredStrategy.
    """

    def reduce(self, reduce_op, value, axis=None):
        reduce = super().reduce

        def one(v):
            scalar = self.experimental_local_results(v)[0].shape.rank == 0
            return reduce(reduce_op, v, None if scalar else axis)

        return tf.nest.map_structure(one, value)


def make_strategy(name: str = "default") -> tf.distribute.Strategy:
    """The tf.distribute strategy called `name` (one of STRATEGIES).

    "mirrored" replicates over every GPU, or, without a GPU, over every
    logical CPU device (one unless the program split the CPU with
    `tf.config.set_logical_device_configuration`). "multi_worker_mirrored"
    reads the cluster from TF_CONFIG (one worker without it). "tpu" connects
    to the TPU named by TPU_NAME, else the local one (a TPU VM).
    """
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
        return tf.distribute.MirroredStrategy([device.name for device in devices])
    if name == "multi_worker_mirrored":
        return _MultiWorkerMirroredStrategy()
    if name == "tpu":
        tpu = os.environ.get("TPU_NAME", "local")
        try:
            resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu)
            tf.config.experimental_connect_to_cluster(resolver)
            tf.tpu.experimental.initialize_tpu_system(resolver)
        except (ValueError, RuntimeError, tf.errors.OpError) as error:
            # TF's first line says what failed; the rest lists registered kernels.
            reason = (str(error).strip().splitlines() or [""])[0]
            raise RuntimeError(
                f"distribution strategy 'tpu': no TPU found (TPU_NAME={tpu!r}: "
                f"{type(error).__name__}: {reason}); run on a TPU VM or set TPU_NAME, or use "
                "another strategy"
            ) from error
        return tf.distribute.TPUStrategy(resolver)
    check_strategy(name)
    raise AssertionError(f"{name} is in STRATEGIES but has no builder here")


def check_strategy(name: str) -> None:
    """Raises ValueError unless `name` is one of STRATEGIES."""
    if name not in STRATEGIES:
        raise ValueError(f"unknown distribution strategy {name!r}; expected one of {STRATEGIES}")


def check_batch_size(batch_size: int, strategy: tf.distribute.Strategy, name: str) -> None:
    """Raises ValueError unless the global `batch_size` splits evenly over the replicas."""
    replicas = strategy.num_replicas_in_sync
    if batch_size % replicas:
        raise ValueError(f"batch_size {batch_size} does not split evenly over the "
                         f"{replicas} replicas of the {name} strategy")


def num_workers(strategy: tf.distribute.Strategy) -> int:
    """The worker processes `strategy` trains on, each with its own input pipeline.

    More than one only under multi_worker_mirrored: its cluster's workers
    (and chief), as TF_CONFIG lists them.
    """
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return 1
    jobs = strategy.cluster_resolver.cluster_spec().as_dict()
    return max(1, sum(len(jobs.get(job, ())) for job in ("chief", "worker")))


def data_sharded(dataset: tf.data.Dataset) -> tf.data.Dataset:
    """`dataset` under tf.data's DATA auto-shard policy.

    Under multi_worker_mirrored every worker then reads it whole and keeps
    its share of each global batch. tf.data's default there, a file per
    worker, fails with fewer shard files than workers and splits a finite
    split unevenly (the workers would run different numbers of steps and
    wait for each other).
    """
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)


def writes_model_dir(name: str) -> bool:
    """Whether this process writes the model folder (and so locks it) under strategy `name`.

    Under multi_worker_mirrored only the chief does: TF_CONFIG's "chief"
    task if the cluster has one, else worker 0, as tf.distribute reads it.
    Raises ValueError for a TF_CONFIG that is not JSON.
    """
    if name != "multi_worker_mirrored":
        return True
    try:
        config = json.loads(os.environ.get("TF_CONFIG") or "{}")
    except ValueError as error:
        raise ValueError(f"TF_CONFIG is not valid JSON ({error})") from None
    task = config.get("task", {})
    if "chief" in config.get("cluster", {}):
        return task.get("type") == "chief"
    return task.get("type", "worker") == "worker" and int(task.get("index", 0)) == 0


def output_dir(strategy: tf.distribute.Strategy, model_dir: str, resumed: bool,
               program: str) -> tuple[str, tempfile.TemporaryDirectory | None]:
    """The folder this worker writes, and the throwaway folder to clean up once done (or None).

    The chief writes `model_dir`; the other workers write a throwaway folder
    (removed by the caller at the end, or on an error once collected),
    since reading sync-on-read variables such as the metrics is a collective
    op that every worker must take part in. A `resumed` run's throwaway
    starts with the chief's backup, so that every worker resumes at the same
    epoch (model_dir must then be on a filesystem all workers see, as Keras
    requires for BackupAndRestore).
    """
    if strategy.extended.should_checkpoint:
        return model_dir, None
    throwaway = tempfile.TemporaryDirectory(prefix=f"avd-{program}-worker-")
    if resumed:
        shutil.copytree(os.path.join(model_dir, BACKUP), os.path.join(throwaway.name, BACKUP))
    return throwaway.name, throwaway


__all__ = ["STRATEGIES", "check_batch_size", "check_strategy", "data_sharded", "make_strategy",
           "num_workers", "output_dir", "writes_model_dir"]
