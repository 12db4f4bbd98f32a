"""Suite-wide setup: one persistent XLA compilation cache for every test process.

Many tests train or attack the same tiny networks; with the cache, the second
identical program (in another test, an xdist worker or a subprocess worker)
loads instead of compiling. Set before JAX is imported, so subprocesses inherit
it through the environment. Override with NAS_JAX_TEST_JIT_CACHE ('' disables).
"""

import os
import tempfile
from pathlib import Path

import pytest

_cache = os.environ.get("NAS_JAX_TEST_JIT_CACHE", str(Path(tempfile.gettempdir()) / "nas_jax_test_xla_cache"))
if _cache:
    os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", _cache)
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")



@pytest.fixture(autouse=True, scope="module")
def _release_compiled_programs():
    """Drop JAX's in-memory compiled programs after each test module. A worker that holds every program of the
    suite's modules crashed while writing one more to the persistent cache (a segfault in
    ``put_executable_and_time``, as the study grid did before it cleared its caches after each cell)."""
    yield
    import jax

    jax.clear_caches()
