"""``funcsplit_digits``: scikit-learn's handwritten digits as a local TFDS dataset.

The 1,797 8×8 digits ship inside scikit-learn (``sklearn.datasets.load_digits``), so the
dataset is built with TFDS's own builder machinery and nothing is downloaded. Each example
carries several tasks with different losses, and some examples lack a label:

=========  ===========================  ===================================================
feature    TFDS feature                 task
=========  ===========================  ===================================================
image      Image (8, 8, 1) uint8        the input
label      ClassLabel, 10 classes       the digit; ``-1`` (missing) for ~20% of examples
coarse     ClassLabel, 5 classes        the digit pair ``0-1`` … ``8-9`` (always present)
mask       Tensor (8, 8, 1) bool        the pixels of the stroke (segmentation, dice)
name       Tensor (8,) int32            the digit's English name as characters: ``<bos>``
                                        letters ``<eos>``, padded with 0 (next-token loss)
id         Scalar int64                 the index in scikit-learn's array (not a task)
=========  ===========================  ===================================================
"""

from __future__ import annotations

import os
from typing import ClassVar

import numpy as np
import tensorflow_datasets as tfds

NAME = "funcsplit_digits"
DIGIT_NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
COARSE_NAMES = ("0-1", "2-3", "4-5", "6-7", "8-9")
PAD, BOS, EOS = 0, 1, 2
VOCAB = ("<pad>", "<bos>", "<eos>", *sorted(set("".join(DIGIT_NAMES))))
NAME_LENGTH = 8  # <bos> + at most 5 letters + <eos>, padded
MISSING_LABEL_RATE = 0.2
TEST_FRACTION = 0.2
SEED = 0


def name_tokens(digit: int) -> np.ndarray:
    """The character tokens of a digit's English name: ``<bos> letters <eos>`` and padding.

    Examples:
        >>> name_tokens(1).tolist()
        [1, 9, 8, 3, 2, 0, 0, 0]
        >>> "".join(VOCAB[t] for t in name_tokens(1)[1:4])
        'one'
    """
    letters = [VOCAB.index(c) for c in DIGIT_NAMES[digit]]
    tokens = [BOS, *letters, EOS]
    return np.array(tokens + [PAD] * (NAME_LENGTH - len(tokens)), np.int32)


def default_data_dir() -> str:
    """``$FUNCSPLIT_DATA_DIR``, else ``~/.cache/funcsplit/tfds``."""
    default = os.path.join(os.path.expanduser("~"), ".cache", "funcsplit", "tfds")
    return os.environ.get("FUNCSPLIT_DATA_DIR") or default


class FuncsplitDigits(tfds.core.GeneratorBasedBuilder):
    """scikit-learn's handwritten digits with a coarse class, a mask, a name and missing labels."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES: ClassVar[dict[str, str]] = {
        "1.0.0": "Digits, coarse class, stroke mask, name tokens, 20% unlabeled."
    }

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            description=__doc__,
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(shape=(8, 8, 1)),
                    "label": tfds.features.ClassLabel(names=DIGIT_NAMES),
                    "coarse": tfds.features.ClassLabel(names=COARSE_NAMES),
                    "mask": tfds.features.Tensor(shape=(8, 8, 1), dtype=np.bool_),
                    "name": tfds.features.Tensor(shape=(NAME_LENGTH,), dtype=np.int32),
                    "id": tfds.features.Scalar(dtype=np.int64),
                }
            ),
            supervised_keys=("image", "label"),
            homepage="https://scikit-learn.org/stable/datasets/toy_dataset.html#digits-dataset",
        )

    # TFDS announces every preparation as "Downloading and preparing dataset ..."; nothing is
    # downloaded here, so say what happens instead (these are the builder's two messages).
    def _log_download_bytes(self) -> None:
        print(f"Building {self.name} from scikit-learn's digits (nothing is downloaded)...")

    def _log_download_done(self) -> None:
        print(f"Built {self.name} in {self.data_dir}; later runs reuse it.")

    def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict:
        del dl_manager  # the data ships with scikit-learn
        from sklearn.datasets import load_digits

        digits = load_digits()
        rng = np.random.default_rng(SEED)
        order = rng.permutation(len(digits.target))
        missing = rng.random(len(order)) < MISSING_LABEL_RATE
        n_test = int(len(order) * TEST_FRACTION)
        images = np.clip(digits.images * 16, 0, 255).astype(np.uint8)[..., None]
        data = (images, digits.target, missing)
        return {
            "train": self._generate_examples(order[n_test:], data),
            "test": self._generate_examples(order[:n_test], data),
        }

    def _generate_examples(self, indices: np.ndarray, data: tuple):
        images, targets, missing = data
        for index in indices:
            digit = int(targets[index])
            yield (
                int(index),
                {
                    "image": images[index],
                    "label": -1 if missing[index] else digit,
                    "coarse": digit // 2,
                    "mask": images[index] >= 128,
                    "name": name_tokens(digit),
                    "id": int(index),
                },
            )


def builder(data_dir: str | None = None) -> tfds.core.DatasetBuilder:
    """The ``funcsplit_digits`` builder in ``data_dir``, prepared on first use (no download).

    Args:
        data_dir: the TFDS data dir (default `default_data_dir`).

    Returns:
        The prepared builder: ``builder.as_dataset(split="train")`` reads it, and so does
        ``tfds.load("funcsplit_digits", data_dir=data_dir)``.
    """
    prepared = FuncsplitDigits(data_dir=data_dir or default_data_dir())
    prepared.download_and_prepare()
    return prepared
