"""DARTS search with the paper's in-NAS mitigations (§5.2, Table 4, Figure 15; docs/protocol.md §g, §f.4).

  python launch/main.py --config=configs/search.py --workdir=workdir/search/darts             # quick
  python launch/main.py --config=configs/search.py --config.search.n_step=5 --workdir=workdir/search/darts_i
  python launch/main.py --config=configs/search.py --config.search.skip_gamma=0.5 --workdir=workdir/search/darts_ii
  python launch/main.py --config=configs/search.py:paper --workdir=workdir/search_paper/darts  # CIFAR-10

Writes {workdir}/genotype.json (train it with configs/train.py --config.model=genotype:PATH),
figures/search_alpha_{normal,reduce}.png, figures/search_cells.png and a `task: "search"`
record with the found cells' metrics (depth, widths, #skip). Resumable: rerun the same
command after a kill. See docs/search.md for search -> train -> attacks.

quick (default): a 3-cell C=4 supernet over 4 of the 8 primitives (none, max_pool_3x3,
skip_connect, sep_conv_3x3: the skip-vs-convolution choice the mitigations act on) on native
8x8 `digits` (718 images per half), 8 epochs, exact second-order hypergradient: 3.0 min wall on
2 CPU cores with a fresh compilation cache (measured; the exact step compiles in ~52 s and runs
0.36 s per step). paper: the §g recipe, C=16, 8 cells, the 8 ops, CIFAR-10 halves of 25k,
batch 64, 50 epochs; it also runs on CPU (slow: its exact step compiles in ~4.5 min and takes
~2 min per step on 2 cores; docs/search.md), a GPU/TPU is what a real search needs.
Expected (DARTS paper; the security paper gives no search numbers): DARTS-V2 cells with about
2 skip connects in the normal cell and depth 2-3; γ < 1 lowers the skip count, n_step > 1
deepens the cell (the paper's DARTS-i/ii claims).
"""

import ml_collections

from nas_jax.config import base_config
from nas_jax.models.searchers import SEARCHERS


def get_config(preset: str = "quick"):
    c = base_config("search", preset)
    quick = c.preset == "quick"
    c.arch.init_channels = 4 if quick else 16
    c.arch.layers = 3 if quick else 8
    c.train.epochs = 8 if quick else 50
    c.train.batch_size = 64
    c.train.lr = 0.025
    c.train.lr_min = 0.001  # cosine per epoch down to this value (§g)
    c.train.momentum = 0.9
    c.train.weight_decay = 3e-4
    c.train.grad_clip = 5.0
    c.train.crop_padding = 1 if quick else 4  # 8x8 digits: a 1-px shift
    c.train.flip = not quick  # a mirrored digit is another symbol
    c.train.cutout = 0  # §g: no cutout during search

    c.search = ml_collections.ConfigDict()
    # darts | pc_darts | gdas | snas | drnas | random (docs/search.md); each searcher's own settings, with
    # its defaults, are the section search.<method> (e.g. --config.search.gdas.tau_max=5)
    c.search.method = "darts"
    for searcher in SEARCHERS.values():
        if searcher.defaults(c.preset):
            c.search[searcher.name] = searcher.defaults(c.preset)
    c.search.hypergradient = "exact"  # 'first_order' | 'finite_difference' (DARTS) | 'exact' (autodiff)
    c.search.n_step = 1  # mitigation (i): unrolled inner steps (paper example: 5)
    c.search.skip_gamma = 1.0  # mitigation (ii): skip weight × γ in Eqn 3 (default for DARTS-ii: 0.5)
    c.search.arch_lr = 3e-4
    c.search.arch_b1 = 0.5
    c.search.arch_b2 = 0.999
    c.search.arch_weight_decay = 1e-3
    c.search.steps = 4  # intermediate nodes per cell (§b.5)
    # () -> the 8 DARTS primitives (§b.1); a subset must include skip_connect
    c.search.primitives = ("none", "max_pool_3x3", "skip_connect", "sep_conv_3x3") if quick else ()
    c.search.fd_epsilon = 0.01  # finite-difference step R = ε / ‖∇_w' L_val‖
    c.search.digits_native = quick  # digits at 8x8 (quick) instead of 32x32
    # smoothness monitoring (RobustDARTS): λ_max of ∇²_α L_val per epoch by power iteration (0 turns it off)
    c.search.hessian_iterations = 10 if quick else 20
    c.search.hessian_batches = 2  # fixed α-half batches the eigenvalue is measured on
    c.search.early_stop_factor = 0.0  # DARTS-ES: stop once λ_max > factor × its minimum so far (0: off; e.g. 1.3)
    return c
