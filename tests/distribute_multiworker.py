"""One worker of a 2-worker MultiWorkerMirroredStrategy cluster on localhost; writes JSON.

``test_distribute.py`` starts two of these with ``TF_CONFIG`` naming two free ports on
127.0.0.1 (worker 0 and worker 1)::

    TF_CONFIG='{"cluster": {"worker": ["127.0.0.1:P0", "127.0.0.1:P1"]},
                "task": {"type": "worker", "index": I}}' python tests/distribute_multiworker.py OUT

Each worker holds one replica (its CPU). The hand-picked uneven case of the core test is cut
between the two workers (7 and 4 examples, no label routed on worker 1); each worker also
computes the single-device result of the whole global batch, and a `fs.keras.train_step`
with two groups runs two steps on both.
"""

from __future__ import annotations

import sys

import distribute_common as common


def main(argv: list[str]) -> None:
    common.quiet()
    import keras
    import tensorflow as tf

    import funcsplit as fs

    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    batch, sizes, w0 = common.fixed_case()
    payload: dict = {
        "replicas": strategy.num_replicas_in_sync,
        "task": strategy.cluster_resolver.task_id,
    }
    per_replica = common.distribute_parts(strategy, common.parts(batch, sizes))
    for name, split in (("exact", common.exact_split()), ("dice", common.dice_split())):
        compiled = fs.compile(split)
        payload[name] = {
            "single": common.single_runner(compiled, w0)(batch),
            "distributed": common.mirrored_runner(strategy, compiled, w0)(per_replica),
        }

    compiled = fs.compile(common.grouped_split())
    element = compiled.split(batch)
    element_parts = [compiled.split(part) for part in common.parts(batch, sizes)]

    def models():
        keras.utils.set_random_seed(1)
        x = keras.Input((common.N_FEATURES,))
        a = keras.Model(x, {"label": keras.layers.Dense(3, activation="softmax")(x)})
        y = keras.Input((common.N_FEATURES,))
        b = keras.Model(y, {"box": keras.layers.Dense(2)(y), "tok": keras.layers.Dense(3)(y)})
        return {"a": a, "b": b}

    def optimizers():
        return {"a": keras.optimizers.SGD(0.3), "b": keras.optimizers.SGD(0.1, momentum=0.9)}

    single_models = models()
    single_step = fs.keras.train_step(compiled, single_models, optimizers())
    with strategy.scope():
        dist_models = models()
        dist_step = fs.keras.train_step(compiled, dist_models, optimizers())

    @tf.function
    def run(values):
        return fs.distribute.reduce_result(strategy, strategy.run(dist_step, args=(values,)))

    values = strategy.experimental_distribute_values_from_function(
        lambda ctx: element_parts[ctx.replica_id_in_sync_group]
    )
    steps = {"single": [], "distributed": []}
    for _ in range(2):
        steps["single"].append(single_step(element).total)
        steps["distributed"].append(run(values).total)
    payload["train_step"] = {
        "totals": steps,
        "single": {g: m.get_weights() for g, m in single_models.items()},
        "distributed": {g: m.get_weights() for g, m in dist_models.items()},
    }
    common.write(argv[0], payload)


if __name__ == "__main__":
    main(sys.argv[1:])
