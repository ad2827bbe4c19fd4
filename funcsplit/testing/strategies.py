"""Public hypothesis strategies for funcsplit: structures, elements, split specs.

Use them in your own property tests, as `hypothesis.extra.numpy` is used for arrays:

- `structures` draws `fs.ElementSpec` values (nested dicts / tuples / lists / namedtuples of
  float, int, bool, string, ragged leaves of per-example rank 0 to 4; odd dict keys);
- `elements` draws concrete batches (tensors, or NumPy arrays) that fit a spec, with extreme
  but valid values; `examples` draws one unbatched example (what an unbatched dataset yields);
- `split_specs` draws valid `fs.SplitSpec` values over a structure (inputs, bindings with
  routes, sample weights, static weights, groups, drops; every leaf accounted for);
- `predictions` draws model outputs that fit a split's bindings for a given batch;
- `dict_keys`, `leaves`, `routes`, `loss_fns`, `bindings`, `binding_names` and
  `per_example_paths` are the parts they are built from.

Every bound is keyword-only and checked when the strategy is built (hypothesis's
`InvalidArgument`). Paths in drawn specs are in tuple form (`fs.Path`).

Examples:
    >>> from hypothesis import given, settings, strategies as st
    >>> import funcsplit as fs
    >>> from funcsplit.testing import strategies as fst
    >>> @settings(max_examples=3, database=None)
    ... @given(st.data())
    ... def test(data):
    ...     spec = data.draw(fst.structures(max_leaves=4))
    ...     compiled = fs.compile(data.draw(fst.split_specs(spec)))
    ...     element = data.draw(fst.elements(spec, batch_size=2))
    ...     inputs, targets, weights = compiled.split.python_function(element)
    ...     assert set(targets) == set(compiled.names)
    >>> test()
"""

from funcsplit.testing._specs import dict_keys
from funcsplit.testing._specs import leaves
from funcsplit.testing._specs import structures
from funcsplit.testing._splits import binding_names
from funcsplit.testing._splits import bindings
from funcsplit.testing._splits import loss_fns
from funcsplit.testing._splits import per_example_paths
from funcsplit.testing._splits import routes
from funcsplit.testing._splits import split_specs
from funcsplit.testing._values import elements
from funcsplit.testing._values import examples
from funcsplit.testing._values import leafwise_squared_error
from funcsplit.testing._values import predictions

__all__ = [
    "binding_names",
    "bindings",
    "dict_keys",
    "elements",
    "examples",
    "leafwise_squared_error",
    "leaves",
    "loss_fns",
    "per_example_paths",
    "predictions",
    "routes",
    "split_specs",
    "structures",
]
