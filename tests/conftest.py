"""Suite-wide setup: one persistent XLA compilation cache for every test process.

Many tests train or attack the same tiny networks; with the cache, the second
identical program (in another test, an xdist worker or a subprocess worker)
loads instead of compiling. Set before JAX is imported, so subprocesses inherit
it through the environment. Override with NAS_JAX_TEST_JIT_CACHE ('' disables).
"""

import os
import tempfile
from pathlib import Path

_cache = os.environ.get("NAS_JAX_TEST_JIT_CACHE", str(Path(tempfile.gettempdir()) / "nas_jax_test_xla_cache"))
if _cache:
    os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", _cache)
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")
