"""The resumable DARTS search loop: data halves, checkpoints, per-epoch log, genotype, figures.

docs/protocol.md §g (the training set split into a weight half and an α half, crop + flip, no cutout, the test
set unused; α batches cycle through reshuffled epochs of the α half; the genotype logged every epoch) and §f.4
(the n_step and γ knobs of paper §5.2). Writes under ``{workdir}``: ``genotype.json`` (usable by every task as
``genotype:{workdir}/genotype.json``); ``search/checkpoints``, ``search/spec.json`` and
``search/search_log.jsonl`` (per epoch: losses, accuracies, lr, mixing weights, genotype, #skip, and the dominant
α-Hessian eigenvalue, :mod:`nas_jax.search.smoothness`); ``figures/search_alpha_{normal,reduce}.png``,
``figures/search_hessian.png`` and ``figures/search_cells.png``.

With ``search.early_stop_factor`` > 0 (DARTS-ES, RobustDARTS §5.1) the search stops at the first epoch whose
eigenvalue exceeds that factor times the smallest before it, keeping the genotype of that minimum. Batches
depend only on the step counter and seed, in the resumable loop (:mod:`nas_jax.train.loop`), so a killed search
rerun with the same command ends exactly as an uninterrupted one.
"""

from __future__ import annotations

from pathlib import Path

import jax
import numpy as np

from nas_jax import parallel
from nas_jax.data import Dataset, load_dataset
from nas_jax.errors import UserError
from nas_jax.models.genotypes import Genotype, genotype_from_dict
from nas_jax.models.searchers import SEARCHERS, resolve
from nas_jax.models.supernet import Supernet, supernet_from_config
from nas_jax.search import darts, random_search, smoothness
from nas_jax.search.genotype import derive_genotype, mean_weights, save_genotype
from nas_jax.train import run_dir as rundir
from nas_jax.train.loop import Loop, run
from nas_jax.train.sampler import EpochSampler

GENOTYPE_FILE = "genotype.json"


class SearchSpecMismatchError(UserError):
    """The search directory holds a search run with another config."""


def split_halves(x: np.ndarray, y: np.ndarray):
    """The first half trains the weights, the second half α (docs/protocol.md §g: [0, n/2) and [n/2, n))."""
    half = len(y) // 2
    return (x[:half], y[:half]), (x[half : 2 * half], y[half : 2 * half])


def search_spec(config, dataset: Dataset) -> dict:
    """Everything that determines the search result (and nothing else)."""
    arch = {k: config.arch[k] for k in ("init_channels", "layers")}
    train = config.train.to_dict()
    for key in ("eval_batch_size", "eval_every_epochs", "checkpoint_every_steps", "cutout"):
        train.pop(key, None)
    search = config.search.to_dict()
    for key in ("hessian_iterations", "hessian_batches"):  # a measurement: it does not change the search
        search.pop(key, None)
    if not search.get("early_stop_factor"):
        search.pop("early_stop_factor", None)
    method = search.get("method", "darts")
    for name in SEARCHERS:  # another searcher's settings do not change this search
        if name != method or not search.get(name):
            search.pop(name, None)
    if method == "darts":  # specs written before search.method existed stay resumable
        search.pop("method", None)
    return {"dataset": config.dataset, "image_shape": list(dataset.x_train.shape[1:]),
            "n_train": len(dataset.y_train), "seed": int(config.seed), "arch": arch, "train": train,
            "search": search}


def check_spec(directory: Path, spec: dict) -> None:
    """Write the spec of a new search, or refuse to resume one run with another config."""
    rundir.check_spec(directory, spec, refusal=f"{directory} holds a search with a different config",
                      fix="Use another --workdir for this setting, or delete that directory to search again.",
                      error=SearchSpecMismatchError)


class Batches:
    """Host batches of a step: ``n_step`` train batches and one α batch, from the step counter alone.

    Train batch g = step · real_updates + k (k < n_step) is batch g mod P of sampler epoch
    g div P, P = real updates per search epoch: the unrolled virtual steps use the current
    batch and the next n_step − 1. α batch ``step`` cycles through reshuffled epochs of the α half.
    """

    def __init__(self, config, x, y, mesh):
        tc, slices = config.train, config.train.data_slices or jax.process_count()
        (xw, yw), (xa, ya) = split_halves(x, y)
        self.w = EpochSampler(len(yw), tc.batch_size, slices, config.seed)
        self.a = EpochSampler(len(ya), tc.batch_size, slices, config.seed + 1)
        self.w_local, self.a_local = self.w.local_data(xw, yw), self.a.local_data(xa, ya)
        self.mesh, self.n_step = mesh, int(config.search.n_step)
        self.real = self.n_step if config.search.hypergradient == "first_order" else 1
        self.steps_per_epoch = self.w.steps_per_epoch // self.real
        if self.steps_per_epoch == 0:
            raise ValueError(f"the weight half has {self.w.steps_per_epoch} batches, fewer than the "
                             f"{self.real} weight updates of one step; lower --config.train.batch_size.")

    def __call__(self, step: int):
        period = self.steps_per_epoch * self.real
        rows = [self.w.local_batch(*self.w_local, *divmod(step * self.real + k, period)) for k in range(self.n_step)]
        xs, ys = np.stack([r[0] for r in rows]), np.stack([r[1] for r in rows])
        stacked = darts.stacked_sharding(self.mesh)
        train = tuple(jax.make_array_from_process_local_data(stacked, a) for a in (xs, ys))
        val = parallel.global_batch(self.mesh, self.a.local_batch(*self.a_local, *divmod(step, self.a.steps_per_epoch)))
        return (*train, *val)

    def hessian_batches(self, k: int):
        """The first ``k`` α batches of the α half's first shuffled epoch, stacked (k, B, ...): one fixed set
        for every epoch's eigenvalue, so the curve compares like with like."""
        k = min(k, self.a.steps_per_epoch)
        rows = [self.a.local_batch(*self.a_local, 0, i) for i in range(k)]
        stacked = darts.stacked_sharding(self.mesh)
        return tuple(jax.make_array_from_process_local_data(stacked, np.stack([r[j] for r in rows])) for j in (0, 1))


def epoch_row(epoch: int, step: int, sums: np.ndarray, state: darts.SearchState, model: Supernet, lr: float,
              seconds: float, genotype: Genotype) -> dict:
    """The log row of one epoch: metrics, the mixing weights and the genotype found so far."""
    tl, tc, tn, vl, vc, vn = (float(v) for v in sums)
    arch = jax.device_get(state.arch)
    weights = {kind: mean_weights(arch, kind, model.searcher, model.skip_gamma, model.ops, model.steps)
               for kind in ("normal", "reduce")}
    return {"epoch": epoch, "step": step, "train_loss": tl / tn, "train_accuracy": tc / tn, "val_loss": vl / vn,
            "val_accuracy": vc / vn, "lr": lr, "seconds": seconds,
            "weights_normal": weights["normal"].tolist(), "weights_reduce": weights["reduce"].tolist(),
            "genotype": genotype.to_json(),
            "normal_skip_connects": sum(op == "skip_connect" for op, _ in genotype.normal)}


def run_search(config, workdir: str | Path, *, dataset: Dataset | None = None, max_steps: int | None = None,
               progress: bool = True, tb_dir: str | Path | None = None) -> dict:
    """Search (or resume, or restore a finished search) and write the genotype and figures.

    ``max_steps`` stops after that many steps, as a kill would. Returns ``{'state',
    'interrupted', 'step', 'log', 'genotype', 'genotype_path', 'figures', 'model'}``.
    """
    workdir, s = Path(workdir), config.search
    sdir = workdir / "search"
    searcher, settings = resolve(s)  # an unknown searcher or bad settings: refused before the data is loaded
    if dataset is None:  # digits at its native 8×8 with search.digits_native
        options = {"native": True} if config.dataset == "digits" and s.digits_native else {}
        dataset = load_dataset(config.dataset, config.data_dir or None, **options)
    mesh = parallel.data_mesh()
    parallel.check_batch_size(config.train.batch_size, mesh)
    batches = Batches(config, dataset.x_train, dataset.y_train, mesh)
    spe, epochs = batches.steps_per_epoch, config.train.epochs
    # The §b.5 supernet of config.arch with search.skip_gamma, search.steps and search.primitives.
    model = supernet_from_config(config.arch, dataset.num_classes, dataset.mean, dataset.std, s.skip_gamma,
                                 steps=s.get("steps", 4), ops=tuple(s.get("primitives", ())), searcher=searcher,
                                 **({"partial_k": int(settings["k"])} if "k" in settings else {}))
    sc = darts.step_config(config, spe * batches.real)
    check_spec(sdir, search_spec(config, dataset))

    state = darts.create_search_state(model, sc, config.seed, dataset.x_train.shape[1:])
    state = jax.device_put(state, parallel.replicated(mesh))
    step_fn = darts.make_search_step(model, sc, config.seed, mesh)
    schedule = darts.weight_schedule(sc)
    iterations, es_factor = int(s.get("hessian_iterations", 0)), float(s.get("early_stop_factor", 0.0))
    if es_factor > 0 and iterations < 1:
        raise ValueError("search.early_stop_factor > 0 (DARTS-ES) needs the eigenvalue: set "
                         "--config.search.hessian_iterations >= 1 (e.g. 20).")
    eigen_fn = smoothness.make_eigenvalue_fn(model, iterations, mesh) if iterations else None
    eigen_batches = batches.hessian_batches(int(s.get("hessian_batches", 2))) if iterations else None
    if not model.searcher.trains_alpha:  # no α to derive from: rank fixed random candidates every epoch
        name = model.searcher.name
        if es_factor > 0:
            raise UserError(f"search.early_stop_factor (DARTS-ES) watches the α-Hessian; search.method={name!r} "
                            "has no α to search: set it to 0.")
        if model.skip_gamma != 1.0:
            raise UserError(f"search.skip_gamma (mitigation ii) scales the skip op's mixing weight; "
                            f"search.method={name!r} samples paths uniformly and has none: set it to 1.")
        cands = random_search.candidates(config.seed, int(settings["candidates"]), model.steps, model.ops)
        rank_fn = random_search.make_rank_fn(model, mesh)
        rank_batches = batches.hessian_batches(int(settings["eval_batches"]))

    def pick(state):
        """The genotype so far: derived from α, or random search's best candidate (and its accuracy)."""
        if model.searcher.trains_alpha:
            return derive_genotype(jax.device_get(state.arch), model.skip_gamma, model.ops, model.steps,
                                   model.multiplier, model.searcher), None
        acc, loss = jax.device_get(rank_fn(state, *rank_batches, cands))
        best = random_search.best_candidate(acc, loss)
        return random_search.genotype_of(cands, best, model.ops, model.steps, model.multiplier), acc[best]

    def end_epoch(state, epoch, step, sums, seconds):
        genotype, accuracy = pick(state)
        row = epoch_row(epoch, step, sums, state, model, float(schedule((step * batches.real) - 1)), seconds, genotype)
        if accuracy is not None:
            row["candidate_val_accuracy"] = float(accuracy)
        if eigen_fn is not None:
            key = jax.random.fold_in(jax.random.key(config.seed), epoch)
            row["hessian_eigenvalue"] = float(eigen_fn(state, *eigen_batches, key))
        return [row]

    def show(rows):
        row = rows[0]
        lam = {"λ": f"{row['hessian_eigenvalue']:.3g}"} if "hessian_eigenvalue" in row else {}
        return {"train": f"{row['train_accuracy']:.3f}", "val": f"{row['val_accuracy']:.3f}",
                "skip": row["normal_skip_connects"], **lam}

    loop = Loop(sdir, spe, epochs, lambda state, step: step_fn(state, *batches(step)), end_epoch, (6,),
                ("search_log.jsonl",), f"search {sc.searcher.name} {sc.hypergradient} n_step={sc.n_step} "
                f"γ={config.search.skip_gamma}", show, config.train.checkpoint_every_steps,
                stop=lambda logs: smoothness.early_stop_epoch(_eigenvalues(logs[0]), es_factor) is not None,
                tb_dir=tb_dir, tb_prefix="search", tb_keys=("train_loss", "train_accuracy", "val_loss", "val_accuracy",
                                                            "lr", "normal_skip_connects", "hessian_eigenvalue"))
    done = run(loop, state, max_steps=max_steps, progress=progress)
    state, step, log = done.state, done.step, done.logs[0]
    if done.interrupted:
        return {"state": state, "interrupted": True, "step": step, "model": model}
    stopped = smoothness.early_stop_epoch(_eigenvalues(log), es_factor)  # DARTS-ES (None: not stopped)
    main = parallel.is_main_process()
    if stopped is not None:  # DARTS-ES: the genotype of the epoch with the smallest eigenvalue before the stop
        best = smoothness.minimum_epoch(_eigenvalues(log), stopped)
        genotype = genotype_from_dict(log[best]["genotype"], f"search log epoch {best}")
    else:
        genotype = pick(state)[0]
    out = {"state": state, "interrupted": False, "step": step, "log": log, "genotype": genotype,
           "model": model, "genotype_path": workdir / GENOTYPE_FILE, "figures": [], "early_stopped_epoch": stopped}
    if main:
        save_genotype(genotype, out["genotype_path"])
        out["figures"] = write_figures(workdir, log, model, genotype)
    return out


def _eigenvalues(log: list[dict]) -> list[float]:
    """λ_max per logged epoch (NaN where an epoch was searched with the measurement off)."""
    return [r.get("hessian_eigenvalue", float("nan")) for r in log]


def write_figures(workdir: Path, log: list[dict], model: Supernet, genotype: Genotype) -> list[Path]:
    """α over the epochs (normal and reduce cells), the α-Hessian eigenvalue and drawings of the found cells."""
    from nas_jax.analysis.cells import draw_genotype
    from nas_jax.search.plots import alpha_history, hessian_history

    figs = workdir / "figures"
    paths = [alpha_history(log, kind, model.ops, model.steps, figs / f"search_alpha_{kind}.png")
             for kind in ("normal", "reduce")] if log else []
    if any("hessian_eigenvalue" in r for r in log):
        paths.append(hessian_history(log, figs / "search_hessian.png"))
    paths.append(draw_genotype(f"genotype:{workdir / GENOTYPE_FILE}", figs / "search_cells.png"))
    return paths
