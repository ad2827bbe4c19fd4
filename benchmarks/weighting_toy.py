"""The two-task toy of CAGrad (Liu et al. 2021), as Nash-MTL (Navon et al. 2022) and FAMO (Liu
et al. 2023) reuse it: every weighting method's trajectory from the papers' starting points.

The problem (CAGrad's toy; Nash-MTL's and FAMO's ``experiments/toy/problem.py``, with their
``scale=0.1`` on the first loss): ``x ∈ R²``, two losses with a curved valley whose Pareto set
is ``x₂ = -8.3552, x₁ ∈ [-7, 7]``. Like the papers, the direction ``Σ_t alpha_t ∇f_t`` goes
to Adam (learning rate 1e-3) for 50 000 steps (FAMO's count; Nash-MTL ran 35 000) from the five
starts ``(-8.5, 7.5), (0, 0), (9, 9), (-7.5, -0.5), (9, -1)``. The methods see the losses
shifted by FAMO's lower bounds ``(-21·scale, -21)`` (the toy's losses are negative; a shift
changes no gradient), and FAMO runs with ``gamma=0`` as FAMO's toy script does. Every other
option is the method's default.

Each trajectory runs as one XLA-compiled `tf.while_loop` (the method's update inside it).
Writes ``weighting_toy.png`` (the trajectories over the loss contours with the Pareto set),
``weighting_toy.json`` and ``weighting_toy.md`` (the end points: losses, distance to the
Pareto front in loss space, and whether it was reached). Usage::

    python benchmarks/weighting_toy.py                      # the papers' 50 000 steps
    python benchmarks/weighting_toy.py --steps 200 --method mgda --out /tmp/toy
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
import time
import types

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = pathlib.Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import funcsplit as fs  # noqa: E402

SCALE = 0.1  # Nash-MTL's and FAMO's scale of the first loss
LOWER = 0.000005
STARTS = ((-8.5, 7.5), (0.0, 0.0), (9.0, 9.0), (-7.5, -0.5), (9.0, -1.0))
PARETO_X2 = -8.3552
REACHED = 0.05  # distance to the front, in loss units, that counts as reaching it
METHODS = {
    "static": lambda: fs.weighting.static(),
    "uncertainty": lambda: fs.weighting.uncertainty(),
    "dwa": lambda: fs.weighting.dwa(),
    "rlw": lambda: fs.weighting.rlw(),
    "famo": lambda: fs.weighting.famo(gamma=0.0),
    "gradnorm": lambda: fs.weighting.gradnorm(),
    "pcgrad": lambda: fs.weighting.pcgrad(),
    "mgda": lambda: fs.weighting.mgda(),
    "cagrad": lambda: fs.weighting.cagrad(c=0.5),
    "nash_mtl": lambda: fs.weighting.nash_mtl(),
}


TF = types.SimpleNamespace(
    log=tf.math.log, abs=tf.abs, tanh=tf.tanh, maximum=tf.maximum, stack=tf.stack
)
NP = types.SimpleNamespace(log=np.log, abs=np.abs, tanh=np.tanh, maximum=np.maximum, stack=np.stack)


def toy_losses(x, xp=TF, scale=SCALE):
    """``[..., 2]`` losses of points ``x [..., 2]`` (the papers' definition, ``scale`` on f1)."""
    x1, x2 = x[..., 0], x[..., 1]
    f1 = xp.log(xp.maximum(xp.abs(0.5 * (-x1 - 7) - xp.tanh(-x2)), LOWER)) + 6
    f2 = xp.log(xp.maximum(xp.abs(0.5 * (-x1 + 3) + xp.tanh(-x2) + 2), LOWER)) + 6
    c1 = xp.maximum(xp.tanh(x2 * 0.5), 0.0)
    f1_sq = ((-x1 + 7) ** 2 + 0.1 * (-x2 - 8) ** 2) / 10 - 20
    f2_sq = ((-x1 - 7) ** 2 + 0.1 * (-x2 - 8) ** 2) / 10 - 20
    c2 = xp.maximum(xp.tanh(-x2 * 0.5), 0.0)
    f1 = (f1 * c1 + f1_sq * c2) * scale
    f2 = f2 * c1 + f2_sq * c2
    return xp.stack([f1, f2], axis=-1)


def bounds(scale: float) -> tuple[float, float]:
    """FAMO's lower bounds of the two losses (its ``min_losses`` for this toy)."""
    return (-21.0 * scale, -21.0)


def trajectory_fn(method: fs.weighting.Method, steps: int, every: int, scale: float = SCALE):
    """An XLA-compiled ``start -> (points [steps // every, 2], alphas, final x)`` for one method."""
    records = steps // every
    shift = tf.constant(bounds(scale), tf.float32)
    beta1, beta2, lr, eps = 0.9, 0.999, 1e-3, 1e-8

    @tf.function(jit_compile=True)
    def run(start):
        def step(i, x, m, v, state, alpha):
            with tf.GradientTape(persistent=True) as tape:
                tape.watch(x)
                f = toy_losses(x, TF, scale)
                f1, f2 = f[0], f[1]
            grads = tf.stack([tape.gradient(f1, x), tape.gradient(f2, x)])  # G [2, 2]
            gram = tf.matmul(grads, grads, transpose_b=True) if method.needs_gram else None
            alpha, state = method.update(f - shift, gram, state)
            direction = tf.linalg.matvec(grads, tf.stop_gradient(alpha), transpose_a=True)
            t = tf.cast(i + 1, tf.float32)
            m = beta1 * m + (1 - beta1) * direction
            v = beta2 * v + (1 - beta2) * direction * direction
            update = lr * (m / (1 - beta1**t)) / (tf.sqrt(v / (1 - beta2**t)) + eps)
            return i + 1, x - update, m, v, state, alpha

        def record(r, carry, points, alphas):
            points = points.write(r, carry[1])
            carry = tf.while_loop(lambda i, *_: i < (r + 1) * every, step, carry)
            return r + 1, carry, points, alphas.write(r, carry[5])

        zeros = tf.zeros(2)
        carry = (tf.constant(0), start, zeros, zeros, method.init(2), zeros)
        arrays = [tf.TensorArray(tf.float32, size=records) for _ in range(2)]
        _, carry, points, alphas = tf.while_loop(
            lambda r, *_: r < records, record, (tf.constant(0), carry, *arrays)
        )
        return points.stack(), alphas.stack(), carry[1]

    return run


def pareto_front(scale: float, num: int = 2000) -> np.ndarray:
    x1 = np.linspace(-7.0, 7.0, num)
    return toy_losses(np.stack([x1, np.full(num, PARETO_X2)], -1).astype(np.float64), NP, scale)


def run(methods, steps: int, every: int, scale: float = SCALE) -> dict:
    front = pareto_front(scale)
    results = {}
    for name in methods:
        run_fn = trajectory_fn(METHODS[name](), steps, every, scale)
        rows = []
        began = time.perf_counter()
        for start in STARTS:
            points, alphas, x = run_fn(tf.constant(start, tf.float32))
            end = toy_losses(np.asarray(x, np.float64), NP, scale)
            distance = float(np.min(np.linalg.norm(front - end, axis=1)))
            rows.append(
                {
                    "start": list(start),
                    "end_x": [float(v) for v in np.asarray(x)],
                    "end_losses": [float(v) for v in end],
                    "distance_to_front": distance,
                    "reached_front": distance < REACHED,
                    "final_alpha": [float(v) for v in np.asarray(alphas)[-1]],
                    "points": np.asarray(points).round(3).tolist(),
                }
            )
        results[name] = {"seconds": time.perf_counter() - began, "runs": rows}
        reached = sum(r["reached_front"] for r in rows)
        print(f"{name:12s} reached the front from {reached}/{len(rows)} starts", flush=True)
    return results


def write_table(results: dict, steps: int, scale: float, path: pathlib.Path) -> None:
    lines = [
        f"# The CAGrad toy (scale {scale}): end points after {steps} steps (Adam, lr 1e-3)",
        "",
        f"Reached = distance to the Pareto front (in loss space) below {REACHED}.",
        "",
        "| method | reached | " + " | ".join(f"start {s}" for s in STARTS) + " |",
        "| --- | --- | " + " | ".join("---" for _ in STARTS) + " |",
    ]
    for name, result in results.items():
        runs = result["runs"]
        cells = [
            f"({r['end_losses'][0]:.3f}, {r['end_losses'][1]:.3f}) d={r['distance_to_front']:.3f}"
            + (" ✓" if r["reached_front"] else "")
            for r in runs
        ]
        reached = sum(r["reached_front"] for r in runs)
        lines.append(f"| {name} | {reached}/{len(runs)} | " + " | ".join(cells) + " |")
    path.write_text("\n".join(lines) + "\n")


def plot(results: dict, path: pathlib.Path, scale: float = SCALE) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grid = np.stack(np.meshgrid(np.linspace(-10, 10, 200), np.linspace(-10, 10, 200)), -1)
    mean = toy_losses(grid.astype(np.float64), NP, scale).mean(-1)
    columns = min(5, len(results))
    rows = -(-len(results) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(3.0 * columns, 3.0 * rows), squeeze=False)
    colors = plt.cm.tab10(np.linspace(0, 1, 10))
    for ax, (name, result) in zip(axes.flat, results.items(), strict=False):
        ax.contour(grid[..., 0], grid[..., 1], mean, levels=20, cmap="Greys", linewidths=0.5)
        ax.plot([-7, 7], [PARETO_X2, PARETO_X2], color="#72727A", linewidth=4, alpha=0.7)
        for color, r in zip(colors, result["runs"], strict=False):
            points = np.asarray(r["points"])
            ax.plot(points[:, 0], points[:, 1], color=color, linewidth=1.2)
            ax.scatter(*r["start"], color="k", s=12, zorder=5)
            ax.scatter(*r["end_x"], color=color, marker="*", s=40, zorder=6)
        reached = sum(r["reached_front"] for r in result["runs"])
        ax.set_title(f"{name} ({reached}/{len(result['runs'])})", fontsize=10)
        ax.set_xlim(-10, 10)
        ax.set_ylim(-10, 10)
        ax.set_xticks([])
        ax.set_yticks([])
    for ax in list(axes.flat)[len(results) :]:
        ax.axis("off")
    fig.suptitle("CAGrad toy: trajectories over the mean loss, Pareto set in grey", fontsize=11)
    fig.savefig(path, dpi=64, bbox_inches="tight")
    plt.close(fig)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=50_000)
    parser.add_argument("--every", type=int, default=500, help="record every N steps")
    parser.add_argument("--method", action="append", choices=sorted(METHODS))
    parser.add_argument("--scale", type=float, default=SCALE, help="of the first loss (CAGrad: 1)")
    parser.add_argument("--out", type=pathlib.Path, default=ROOT / "benchmarks" / "out")
    args = parser.parse_args(argv)
    methods = args.method or list(METHODS)
    every = max(1, min(args.every, args.steps))
    results = run(methods, args.steps, every, args.scale)
    args.out.mkdir(parents=True, exist_ok=True)
    summary = {
        "steps": args.steps,
        "scale": args.scale,
        "every": every,
        "starts": [list(s) for s in STARTS],
        "reached_threshold": REACHED,
        "methods": results,
    }
    (args.out / "weighting_toy.json").write_text(json.dumps(summary) + "\n")
    write_table(results, args.steps, args.scale, args.out / "weighting_toy.md")
    plot(results, args.out / "weighting_toy.png", args.scale)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
