"""Keras ``Loss`` objects in saved splits: described in their holes, loaded in safe mode.

A hole for a Keras ``Loss`` of Keras itself, or of a class registered with
``keras.saving.register_keras_serializable``, carries Keras's description of it
(``{"class_name", "registered_name", "config"}``). Loading such a hole with no callable
given finds the class in Keras's own registry (``keras.losses`` for built-ins, the
registered name for user classes) and builds it with
``keras.saving.deserialize_keras_object(..., safe_mode=True)``: no module named in the text
is imported and no lambda is loaded. A class Keras does not know leaves the hole unfilled,
and so does a loss whose config does not rebuild it (Keras 3's ``Huber`` drops ``delta``):
such holes carry no description and must be filled by the caller.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import keras

from funcsplit._src import documents as doc
from funcsplit._src import serialization

_KEYS = ("class_name", "registered_name", "config")


def _builtin(name: str) -> type | None:
    cls = getattr(keras.losses, name, None) if name.isidentifier() else None
    return cls if isinstance(cls, type) and issubclass(cls, keras.losses.Loss) else None


def describe(fn: Any) -> dict | None:
    """Keras's description of a built-in or registered ``Loss`` object (JSON), else None."""
    if not isinstance(fn, keras.losses.Loss):
        return None
    cls = type(fn)
    registered = keras.saving.get_registered_name(cls)
    if keras.saving.get_registered_object(registered) is cls and registered != cls.__name__:
        name = registered
    elif _builtin(cls.__name__) is cls:
        name = None
    else:
        return None
    try:
        config = keras.saving.serialize_keras_object(fn)["config"]
        json.dumps(config, allow_nan=False)
        described = {"class_name": cls.__name__, "registered_name": name, "config": config}
        again = load(described, "keras")
    except (TypeError, ValueError, KeyError):
        return None
    if not _same_loss(fn, again):
        return None  # Keras's config loses something (Huber's delta): the hole must be filled
    return described


def _same_loss(fn: Any, again: Any) -> bool:
    """Whether a loss rebuilt from its config is the same loss (class, config, arguments)."""
    return (
        type(again) is type(fn)
        and again.get_config() == fn.get_config()
        and getattr(again, "_fn_kwargs", None) == getattr(fn, "_fn_kwargs", None)
    )


def load(description: Mapping, field: str) -> Any | None:
    """The ``Loss`` a description names, built in safe mode; None when Keras does not know it.

    Raises:
        SpecError: for a malformed description, or a config the class refuses.
    """
    parts = doc.fields(description, field, _KEYS)
    class_name = doc.string(parts["class_name"], f"{field}.class_name")
    registered = parts["registered_name"]
    config = parts["config"]
    if not isinstance(config, Mapping):
        raise doc.fail(f"{field}.config", "an object", doc.found(config))
    if registered is not None:
        registered = doc.string(registered, f"{field}.registered_name")
        cls = keras.saving.get_registered_object(registered)
        if not (isinstance(cls, type) and issubclass(cls, keras.losses.Loss)):
            return None
        module = None
    else:
        if _builtin(class_name) is None:
            raise doc.fail(f"{field}.class_name", "a loss class of keras.losses", repr(class_name))
        module = "keras.losses"
    full = {
        "module": module,
        "class_name": class_name,
        "config": dict(config),
        "registered_name": registered,
    }
    try:
        return keras.saving.deserialize_keras_object(full, safe_mode=True)
    except (TypeError, ValueError) as error:
        raise doc.fail(f"{field}.config", f"a config {class_name} accepts", str(error)) from None


serialization.install_keras_codec(describe, load)
