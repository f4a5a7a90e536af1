import os

# Nothing downloads at test time; a hub request fails at once instead of retrying for ~47 s.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

import pytest


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Each test gets its own gcl-eval cache folder."""
    monkeypatch.setenv("GCL_EVAL_CACHE", str(tmp_path_factory.mktemp("gcl-cache")))
