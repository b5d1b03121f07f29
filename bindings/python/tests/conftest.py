"""Makes the package importable from the source tree and finds the default
model (models/SmolLM2-135M-Instruct.Q4_1.gguf, or $KVFIT_MODEL)."""
import os
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import kvfit  # noqa: E402 -- after the path is set

REPO = os.path.dirname(os.path.dirname(os.path.dirname(HERE)))
MODEL_PATH = os.environ.get("KVFIT_MODEL") or os.path.join(REPO, "models", "SmolLM2-135M-Instruct.Q4_1.gguf")


@pytest.fixture(scope="session")
def model_path():
    if not os.path.exists(MODEL_PATH):
        pytest.skip("default model %s not found (run `make models`)" % MODEL_PATH)
    return MODEL_PATH


@pytest.fixture(scope="session")
def model(model_path):
    """One model shared by every test."""
    with kvfit.Model(model_path) as m:
        yield m


@pytest.fixture
def session(model):
    with model.session(n_ctx=512, n_threads=2) as s:
        yield s
