"""Tests of `CompiledSplit.loss` against hand-written NumPy references."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import funcsplit as fs

B = 6
RNG = np.random.default_rng(0)
LABELS = np.array([2, -1, 0, 1, -1, 2], np.int32)  # -1: missing label
TASK = np.array([1, 0, 1, 1, 0, 1], np.int32)
WEIGHT = RNG.uniform(0.5, 2.0, size=(B,)).astype(np.float32)
VALUES = RNG.normal(size=(B, 3)).astype(np.float32)
PROBS = tf.nn.softmax(RNG.normal(size=(B, 3)).astype(np.float32)).numpy()


def spec():
    return fs.ElementSpec.from_structure(
        {
            "x": fs.Leaf(tf.float32, (None, 3)),
            "label": fs.Leaf(tf.int32),
            "task": fs.Leaf(tf.int32),
            "w": fs.Leaf(tf.float32),
            "y": fs.Leaf(tf.float32, (None, 3)),
        }
    )


def element():
    return {"x": VALUES, "label": LABELS, "task": TASK, "w": WEIGHT, "y": VALUES * 2}


def compile_one(binding, **kwargs):
    split = fs.SplitSpec(spec(), inputs="x", losses=(binding,), strict=False, **kwargs)
    return fs.compile(split)


def run(compiled, predictions, el=None):
    _, targets, weights = compiled.split(el or element())
    return compiled.loss(targets, predictions, weights)


def sparse_ce(labels, probs):
    p = np.clip(probs / probs.sum(-1, keepdims=True), 1e-7, 1 - 1e-7)
    return -np.log(p[np.arange(len(labels)), np.maximum(labels, 0)])


class TestPerExample:
    def test_unrouted_mean_equals_keras(self):
        b = fs.LossBinding("mse", "mse", target="y")
        result = run(compile_one(b), VALUES)
        expected = keras.losses.MeanSquaredError()(VALUES * 2, VALUES)
        np.testing.assert_allclose(result.per_loss["mse"], expected, rtol=1e-6)
        assert int(result.counts["mse"]) == B

    def test_missing_label_route_is_the_masked_mean(self):
        b = fs.LossBinding(
            "cls",
            "sparse_categorical_crossentropy",
            target="label",
            route=fs.route("label", not_equal=-1),
        )
        result = run(compile_one(b), PROBS)
        keep = LABELS != -1
        expected = sparse_ce(LABELS[keep], PROBS[keep]).mean()
        np.testing.assert_allclose(result.per_loss["cls"], expected, rtol=1e-6)
        assert int(result.counts["cls"]) == keep.sum()
        assert np.isfinite(result.total)

    def test_route_and_sample_weight_and_weight(self):
        b = fs.LossBinding(
            "cls",
            "sparse_categorical_crossentropy",
            target="label",
            weight=0.25,
            sample_weight="w",
            route=fs.route("task", equals=1),
        )
        el = dict(element(), label=np.maximum(LABELS, 0))
        result = run(compile_one(b), PROBS, el)
        w = WEIGHT * (TASK == 1)
        loss = sparse_ce(np.maximum(LABELS, 0), PROBS)
        expected = (w * loss).sum() / w.sum()
        np.testing.assert_allclose(result.per_loss["cls"], expected, rtol=1e-6)
        np.testing.assert_allclose(result.total, 0.25 * expected, rtol=1e-6)

    def test_sum_over_batch_size_is_keras_style(self):
        b = fs.LossBinding(
            "cls",
            "sparse_categorical_crossentropy",
            target="label",
            sample_weight="w",
            reduction="sum_over_batch_size",
        )
        el = dict(element(), label=np.maximum(LABELS, 0))
        result = run(compile_one(b), PROBS, el)
        keras_value = keras.losses.SparseCategoricalCrossentropy()(
            np.maximum(LABELS, 0), PROBS, sample_weight=WEIGHT
        )
        np.testing.assert_allclose(result.per_loss["cls"], keras_value, rtol=1e-6)

    def test_class_weight(self):
        b = fs.LossBinding(
            "cls",
            "sparse_categorical_crossentropy",
            target="label",
            class_weight={0: 3.0, 2: 0.5},
            route=fs.route("label", not_equal=-1),
        )
        result = run(compile_one(b), PROBS)
        keep = LABELS != -1
        cw = np.array([{0: 3.0, 2: 0.5}.get(int(v), 1.0) for v in LABELS]) * keep
        expected = (cw * sparse_ce(LABELS, PROBS)).sum() / cw.sum()
        np.testing.assert_allclose(result.per_loss["cls"], expected, rtol=1e-6)

    @pytest.mark.parametrize(
        "route",
        [fs.route("task", one_of=(1,)), fs.route("task"), fs.route("task", equals=1)],
        ids=["one_of", "truthy", "equals"],
    )
    def test_route_forms_agree(self, route):
        b = fs.LossBinding("mae", "mae", target="y", route=route)
        result = run(compile_one(b), VALUES)
        keep = TASK == 1
        expected = np.abs(VALUES * 2 - VALUES)[keep].mean()
        np.testing.assert_allclose(result.per_loss["mae"], expected, rtol=1e-6)

    def test_keras_loss_objects_are_called_unreduced(self):
        loss = keras.losses.Huber(delta=0.5)
        b = fs.LossBinding("h", loss, target="y", route=fs.route("task", equals=1))
        result = run(compile_one(b), VALUES)
        keep = TASK == 1
        expected = keras.losses.Huber(delta=0.5)(VALUES[keep] * 2, VALUES[keep])
        np.testing.assert_allclose(result.per_loss["h"], expected, rtol=1e-6)

    def test_values_over_extra_axes_are_averaged_per_example(self):
        fn = lambda y, p: tf.abs(y - p)  # [B, 3] per-element values
        b = fs.LossBinding("l1", fn, target="y", sample_weight="w")
        result = run(compile_one(b), VALUES)
        per_example = np.abs(VALUES).mean(axis=1)
        expected = (WEIGHT * per_example).sum() / WEIGHT.sum()
        np.testing.assert_allclose(result.per_loss["l1"], expected, rtol=1e-6)

    def test_target_aligned_with_a_one_column_prediction(self):
        b = fs.LossBinding("bce", "binary_crossentropy", target="task")
        probs = np.linspace(0.1, 0.9, B).reshape(B, 1).astype(np.float32)
        result = run(compile_one(b), probs)
        p = probs[:, 0]
        expected = -(TASK * np.log(p) + (1 - TASK) * np.log(1 - p)).mean()
        np.testing.assert_allclose(result.per_loss["bce"], expected, rtol=1e-5)


class TestSafety:
    def test_empty_route_gives_zero_and_finite_gradients(self):
        b = fs.LossBinding(
            "cls",
            "sparse_categorical_crossentropy",
            target="label",
            route=fs.route("task", equals=7),
        )
        compiled = compile_one(b)
        _, targets, weights = compiled.split(element())
        logits = tf.Variable(np.log(PROBS))
        with tf.GradientTape() as tape:
            result = compiled.loss(targets, tf.nn.softmax(logits), weights)
        grad = tape.gradient(result.total, logits)
        assert float(result.per_loss["cls"]) == 0.0 and int(result.counts["cls"]) == 0
        assert np.all(np.isfinite(grad)) and np.all(grad.numpy() == 0)

    def test_nan_in_routed_away_target_does_not_leak(self):
        y = (VALUES * 2).copy()
        y[TASK == 0] = np.nan
        b = fs.LossBinding("mse", "mse", target="y", route=fs.route("task", equals=1))
        compiled = compile_one(b)
        _, targets, weights = compiled.split(dict(element(), y=y))
        pred = tf.Variable(VALUES)
        with tf.GradientTape() as tape:
            result = compiled.loss(targets, pred, weights)
        grad = tape.gradient(result.total, pred)
        keep = TASK == 1
        expected = ((y[keep] - VALUES[keep]) ** 2).mean()
        np.testing.assert_allclose(result.total, expected, rtol=1e-6)
        assert np.all(np.isfinite(grad)) and np.all(grad.numpy()[~keep] == 0)

    def test_all_missing_labels(self):
        b = fs.LossBinding(
            "cls",
            "sparse_categorical_crossentropy",
            target="label",
            route=fs.route("label", not_equal=-1),
        )
        el = dict(element(), label=np.full((B,), -1, np.int32))
        result = run(compile_one(b), PROBS, el)
        assert float(result.total) == 0.0


def dice_ref(y, p):
    return 1 - 2 * (y * p).sum() / (y.sum() + p.sum() + 1e-7)


class TestBatchLevel:
    def _mask_spec(self):
        return fs.ElementSpec.from_structure(
            {"mask": fs.Leaf(tf.float32, (None, 4, 4, 1)), "has": fs.Leaf(tf.bool)}
        )

    def _data(self):
        mask = (RNG.uniform(size=(B, 4, 4, 1)) > 0.5).astype(np.float32)
        pred = RNG.uniform(size=(B, 4, 4, 1)).astype(np.float32)
        has = np.array([True, False, True, True, False, False])
        return mask, pred, has

    @pytest.mark.parametrize("builtin", [True, False], ids=["registry-dice", "user-dice"])
    def test_dice_over_routed_examples_only(self, builtin):
        fn = "dice" if builtin else (lambda y, p: fs.losses.dice()(y, p))
        split = fs.SplitSpec(
            self._mask_spec(),
            inputs="mask",
            losses=(fs.LossBinding("dice", fn, target="mask", route=fs.route("has")),),
        )
        compiled = fs.compile(split)
        mask, pred, has = self._data()
        mask_with_nan = mask.copy()
        mask_with_nan[~has] = np.nan
        _, targets, weights = compiled.split({"mask": mask_with_nan, "has": has})
        result = compiled.loss(targets, pred, weights)
        np.testing.assert_allclose(result.total, dice_ref(mask[has], pred[has]), rtol=1e-5)
        assert int(result.counts["dice"]) == 3

    @pytest.mark.parametrize("builtin", [True, False], ids=["registry-dice", "user-dice"])
    def test_empty_route_on_a_batch_level_loss(self, builtin):
        fn = "dice" if builtin else (lambda y, p: fs.losses.dice(epsilon=0.0)(y, p))
        split = fs.SplitSpec(
            self._mask_spec(),
            inputs="mask",
            losses=(fs.LossBinding("dice", fn, target="mask", route=fs.route("has")),),
        )
        compiled = fs.compile(split)
        mask, pred, _ = self._data()
        _, targets, weights = compiled.split({"mask": mask, "has": np.zeros(B, bool)})
        p = tf.Variable(pred)
        with tf.GradientTape() as tape:
            result = compiled.loss(targets, p, weights)
        assert float(result.total) == 0.0
        assert np.all(np.isfinite(tape.gradient(result.total, p)))

    def test_user_scalar_loss_with_sample_weight_is_refused(self):
        spec = fs.ElementSpec.from_structure(
            {"y": fs.Leaf(tf.float32, (None, 2)), "w": fs.Leaf(tf.float32)}
        )
        fn = lambda y, p: tf.reduce_mean(y - p)
        split = fs.SplitSpec(
            spec, inputs="y", losses=(fs.LossBinding("s", fn, target="y", sample_weight="w"),)
        )
        compiled = fs.compile(split)
        _, targets, weights = compiled.split(
            {"y": np.ones((2, 2), np.float32), "w": np.ones(2, np.float32)}
        )
        with pytest.raises(fs.SpecError, match="batch-level scalar"):
            compiled.loss.python_function(targets, tf.zeros((2, 2)), weights)


class TestOutputsAndTracing:
    def test_output_paths_into_tuples_and_dicts(self):
        bs = (
            fs.LossBinding("a", "mse", target="y", output="0"),
            fs.LossBinding("b", "mse", target="y", output="1/head"),
        )
        compiled = fs.compile(fs.SplitSpec(spec(), inputs="x", losses=bs, strict=False))
        _, targets, weights = compiled.split(element())
        result = compiled.loss(targets, (VALUES * 2, {"head": VALUES}), weights)
        assert float(result.per_loss["a"]) == 0.0
        np.testing.assert_allclose(result.per_loss["b"], (VALUES**2).mean(), rtol=1e-6)

    def test_a_wrong_output_path_names_it(self):
        b = fs.LossBinding("a", "mse", target="y", output="hed")
        compiled = compile_one(b)
        _, targets, weights = compiled.split(element())
        with pytest.raises(fs.SpecError) as info:
            compiled.loss.python_function(targets, {"head": VALUES}, weights)
        assert "did you mean: head" in str(info.value)

    def test_groups_read_their_own_predictions(self):
        bs = (
            fs.LossBinding("a", "mse", target="y", group="one"),
            fs.LossBinding("b", "mse", target="y", group="two"),
        )
        split = fs.SplitSpec(spec(), inputs={"one": "x", "two": "x"}, losses=bs, strict=False)
        compiled = fs.compile(split)
        _, targets, weights = compiled.split(element())
        result = compiled.loss(targets, {"one": VALUES * 2, "two": VALUES}, weights)
        assert float(result.per_loss["a"]) == 0.0
        with pytest.raises(fs.SpecError, match="keyed by group"):
            compiled.loss.python_function(targets, VALUES, weights)

    def test_eager_traced_and_xla_agree_and_loss_traces_at_most_twice(self):
        b = fs.LossBinding(
            "cls",
            "sparse_categorical_crossentropy",
            target="label",
            sample_weight="w",
            route=fs.route("label", not_equal=-1),
        )
        compiled = compile_one(b)
        _, targets, weights = compiled.split(element())
        eager = compiled.loss.python_function(targets, PROBS, weights)
        traced = compiled.loss(targets, PROBS, weights)
        xla = tf.function(compiled.loss.python_function, jit_compile=True)(targets, PROBS, weights)
        for other in (traced, xla):
            np.testing.assert_allclose(other.total, eager.total, rtol=1e-6)
        for size in (2, 3, 5):
            el = {k: v[:size] for k, v in element().items()}
            run(compiled, PROBS[:size], el)
        assert compiled.loss.experimental_get_tracing_count() <= 2

    def test_no_losses_gives_a_zero_total(self):
        compiled = fs.compile(fs.SplitSpec(spec(), inputs="x", strict=False))
        _, targets, weights = compiled.split(element())
        assert float(compiled.loss(targets, VALUES, weights).total) == 0.0


class TestMisbehavingLosses:
    def test_a_loss_reduced_over_the_batch_is_named(self):
        def column_means(y, p):
            return tf.reduce_mean(y - p, axis=0)  # [3], not [B]

        compiled = compile_one(fs.LossBinding("bad", column_means, target="y"))
        _, targets, weights = compiled.split(element())
        with pytest.raises(fs.SpecError) as info:
            compiled.loss.python_function(targets, tf.constant(VALUES), weights)
        assert "column_means @ " in str(info.value) and "batch dimension 6" in str(info.value)

    def test_a_failing_loss_is_named_with_file_and_line(self):
        def needs_matching_shapes(y, p):
            return tf.reduce_sum(tf.reshape(y, [-1, 3]) * p, axis=-1)

        b = fs.LossBinding("bad", needs_matching_shapes, target="y")
        compiled = compile_one(b)
        _, targets, weights = compiled.split(element())
        with pytest.raises(fs.SpecError) as info:
            compiled.loss(targets, tf.zeros((B, 4)), weights)
        message = str(info.value)
        assert "needs_matching_shapes @ " in message and "test_reduction.py" in message
        assert info.value.paths == ("y",)

    def test_a_failing_registry_loss_is_named_by_its_registry_name(self):
        """Issue 13 item 9: not ``BuiltinLoss @ <installed file>``."""
        compiled = compile_one(fs.LossBinding("cls", "sparse_categorical_crossentropy", "y"))
        _, targets, weights = compiled.split(element())
        with pytest.raises(fs.SpecError) as info:
            compiled.loss(targets, tf.zeros((B, 3, 2, 2)), weights)
        assert "binding 'cls' fn 'sparse_categorical_crossentropy'" in str(info.value)
        assert "BuiltinLoss" not in str(info.value) and "registry.py" not in str(info.value)

    def test_an_unknown_output_lists_the_models_outputs(self):
        compiled = compile_one(fs.LossBinding("y", "mse", target="y", output="lable"))
        _, targets, weights = compiled.split(element())
        predictions = {"label": tf.zeros((B, 1)), "score": tf.zeros((B, 1))}
        with pytest.raises(fs.SpecError) as info:
            compiled.loss(targets, predictions, weights)
        (problem,) = info.value.problems
        assert problem.nearby == ("label",) and "model's output paths: label, score" in problem.fix
        assert "ElementSpec" not in problem.fix
        with pytest.raises(fs.SpecError, match="one tensor: use output=None"):
            compiled.loss(targets, tf.zeros((B, 1)), weights)


# --- Rank-1 heads (issue 13 item 1) ----------------------------------------------------------
# A squeezed Dense(1): target and prediction of shape [B]. Each example is one value, so the
# elementwise losses give [B] values (Keras's own functions would take their "mean over the
# last axis" over the batch itself).

SCALAR = RNG.normal(size=(B,)).astype(np.float32)
PROB = RNG.uniform(0.05, 0.95, size=(B,)).astype(np.float32)
BINARY = (RNG.random(B) < 0.5).astype(np.float32)


def rank1_spec():
    return fs.ElementSpec.from_structure(
        {
            "x": fs.Leaf(tf.float32, (None, 3)),
            "y": fs.Leaf(tf.float32, (None,)),
            "yb": fs.Leaf(tf.float32, (None,)),
            "task": fs.Leaf(tf.int32),
            "w": fs.Leaf(tf.float32),
        }
    )


def rank1_element():
    return {"x": VALUES, "y": SCALAR * 2, "yb": BINARY, "task": TASK, "w": WEIGHT}


def np_elementwise(name, y, p):
    if name == "mse":
        return (y - p) ** 2
    if name == "mae":
        return np.abs(y - p)
    if name == "huber":
        e = np.abs(y - p)
        return np.where(e <= 1.0, 0.5 * e**2, e - 0.5)
    q = np.clip(p, 1e-7, 1 - 1e-7)
    return -(y * np.log(q) + (1 - y) * np.log(1 - q))


RANK1 = {
    "mse": ("y", SCALAR),
    "mae": ("y", SCALAR),
    "huber": ("y", SCALAR),
    "binary_crossentropy": ("yb", PROB),
    "keras_mse": ("y", SCALAR),
}


def rank1_fn(name):
    return keras.losses.MeanSquaredError() if name == "keras_mse" else name


class TestRankOneHeads:
    @pytest.mark.parametrize("mode", ["eager", "traced", "xla"])
    @pytest.mark.parametrize("name", sorted(RANK1))
    def test_routed_weighted_rank1_values_are_per_example(self, name, mode):
        target, pred = RANK1[name]
        fn = rank1_fn(name)
        bindings = (
            fs.LossBinding("plain", fn, target=target, output="p"),
            fs.LossBinding(
                "routed", fn, target=target, output="p", route=fs.route("task", equals=1)
            ),
            fs.LossBinding("weighted", fn, target=target, output="p", sample_weight="w"),
            fs.LossBinding(
                "both",
                fn,
                target=target,
                output="p",
                sample_weight="w",
                route=fs.route("task", equals=1),
            ),
            fs.LossBinding(
                "sum",
                fn,
                target=target,
                output="p",
                sample_weight="w",
                route=fs.route("task", equals=1),
                reduction="sum_over_batch_size",
            ),
        )
        split = fs.SplitSpec(rank1_spec(), inputs="x", losses=bindings, strict=False)
        compiled = fs.compile(split)
        _, targets, weights = compiled.split(rank1_element())
        predictions = {"p": tf.constant(pred)}
        if mode == "eager":
            result = compiled.loss.python_function(targets, predictions, weights)
        else:
            fn_ = tf.function(compiled.loss.python_function, jit_compile=mode == "xla")
            result = fn_(targets, predictions, weights)
        y = rank1_element()[target] if name != "keras_mse" else SCALAR * 2
        ref_name = "mse" if name == "keras_mse" else name
        values = np_elementwise(ref_name, y.astype(np.float64), pred.astype(np.float64))
        routed = (TASK == 1).astype(np.float64)
        expected = {
            "plain": values.mean(),
            "routed": np.sum(routed * values) / routed.sum(),
            "weighted": np.sum(WEIGHT * values) / WEIGHT.sum(),
            "both": np.sum(routed * WEIGHT * values) / np.sum(routed * WEIGHT),
            "sum": np.sum(routed * WEIGHT * values) / B,
        }
        for key, value in expected.items():
            np.testing.assert_allclose(result.per_loss[key], value, rtol=1e-5, err_msg=key)
        assert int(result.counts["both"]) == int(routed.sum())

    def test_grouped_rank1_heads_routed_by_task_equal_the_reference(self):
        bindings = tuple(
            fs.LossBinding(
                f"head_{t}", "mse", target="y", output=f"h{t}", route=fs.route("task", equals=t)
            )
            for t in (0, 1)
        )
        split = fs.SplitSpec(rank1_spec(), inputs="x", losses=bindings, strict=False)
        compiled = fs.compile(split)
        _, targets, weights = compiled.split(rank1_element())
        heads = {"h0": tf.constant(SCALAR), "h1": tf.constant(PROB)}
        result = compiled.loss(targets, heads, weights)
        for t, head in ((0, SCALAR), (1, PROB)):
            routed = np.equal(TASK, t)
            expected = np.mean((SCALAR[routed] * 2 - head[routed]) ** 2)
            np.testing.assert_allclose(result.per_loss[f"head_{t}"], expected, rtol=1e-5)

    @pytest.mark.parametrize("name", ["sparse_categorical_crossentropy", "sequence_crossentropy"])
    def test_a_class_loss_on_a_rank1_prediction_is_named(self, name):
        leaves = {"x": fs.Leaf(tf.float32, (None, 3)), "task": fs.Leaf(tf.int32)}
        leaves["t"] = fs.Leaf(tf.int32, (None, 4) if name == "sequence_crossentropy" else (None,))
        split = fs.SplitSpec(
            fs.ElementSpec.from_structure(leaves),
            inputs="x",
            losses=(fs.LossBinding("cls", name, target="t", output="p"),),
            strict=False,
        )
        compiled = fs.compile(split)
        shape = (B, 4) if name == "sequence_crossentropy" else (B,)
        _, targets, weights = compiled.split(
            {"x": VALUES, "task": TASK, "t": np.zeros(shape, np.int32)}
        )
        with pytest.raises(fs.SpecError, match="(?s)binding .cls.*a prediction of"):
            compiled.loss(targets, {"p": tf.zeros(shape, tf.float32)}, weights)
