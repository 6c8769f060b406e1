"""Suite-wide settings: the tests never read or write the user's cache of pretrained tiny weights."""

import pytest


@pytest.fixture(autouse=True, scope="session")
def _private_pretrained_cache(tmp_path_factory):
    # A session folder, shared by the tests and the processes they start (the environment is inherited),
    # so that a test sees the weights this suite pretrained and never a stale copy from ~/.cache.
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SAC_GLAM_CACHE", str(tmp_path_factory.mktemp("sac-glam-cache")))
        yield
