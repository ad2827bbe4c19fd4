"""The benchmark cases by name: ``run(mode) -> rows`` times funcsplit beside hand-written code.

``mode`` is ``"tiny"`` (seconds: checks that everything runs), ``"quick"`` (minutes) or
``"full"``. Each case module holds its hand-written baselines next to the funcsplit variants.
"""

from benchmarks.cases import mixture
from benchmarks.cases import pipeline
from benchmarks.cases import retracing
from benchmarks.cases import routing
from benchmarks.cases import scale
from benchmarks.cases import training
from benchmarks.cases import weighting

CASES = {
    "pipeline": pipeline.run,
    "training": training.run,
    "routing": routing.run,
    "scale": scale.run,
    "retracing": retracing.run,
    "weighting": weighting.run,
    "mixture": mixture.run,
}
