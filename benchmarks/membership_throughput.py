"""Label-only membership inference throughput: nas_jax's batched HopSkipJump vs ART's ``HopSkipJump`` on the same
model and budget, same machine, same run; plus Knockoff's end-to-end time per 1k victim queries.

Model: one registry model (default ``resnet`` at width 0.25, the quick zoo's size) on 32x32x3 inputs in [0, 1], 10
classes, random initialisation (seed 0) with BN running statistics set to one calibration batch's statistics
(``pgd_throughput.make_variables``) and the classifier bias centred on smooth images + uniform noise (so that
noise and inputs fall in different classes and HopSkipJump can initialise), eval mode. Inputs: smooth random
images (``pgd_throughput.make_images``). ``--linear-too`` repeats the HopSkipJump comparison on an affine
classifier of the flattened image, where a forward pass costs microseconds: what is left is drawing the Gaussian
directions (d = 3,072 normals per gradient sample) and the per-call overhead.

HopSkipJump (untargeted, L2, docs/protocol.md §e.6), the same budget on both sides (default Table 5: 50 iterations, max_eval
2,500, init_eval 100, init_size 100):

* nas_jax: ``hopskipjump_jit(LabelOracle(model.apply, variables), x, key, cfg)`` on a batch of ``--n-inputs``;
  one compiled program, label queries evaluated ``--chunk`` gradient samples per input per model call.
* ART: ``HopSkipJump(BlackBoxClassifier(predict_fn, ...), batch_size=--art-batch, norm=2, ...)`` where
  ``predict_fn`` is the *same* jitted eval-mode forward pass returning one-hot labels; ART attacks one input at a
  time and calls it with batches of 1 (binary search, step search) up to ``--art-batch`` (gradient samples). To
  avoid one XLA compilation per distinct batch size, each call is padded to the next power of two (at most 2x the
  work on the padded rows; the padding is reported). ``--art-inputs`` inputs (ART is slow).

Both warm up first (compilation; ART's warm-up is one attack on one input), then the timed runs alternate
(ours, ART, ours, ...). Reported: inputs/s of each side (median), the speed-up, label queries per input (ours counted;
ART counted in ``predict_fn``, unpadded rows), the initialisation success rate and mean L2 distance on each side.

Knockoff (docs/protocol.md §e.5): ``knockoff()`` with the same model as victim and thief architecture, a pool of 2,000
random images (arms: 10 random classes), budget ``--knockoff-budget``, ``--knockoff-epochs`` thief epochs (batch
96): the time of the victim-query phase (adaptive: the compiled bandit rounds with one thief step each; random:
batched queries) and of the thief training, per 1k queries, compilation included (one run each).

    .venv/bin/python benchmarks/membership_throughput.py --linear-too        # full run, writes BENCHMARKS.md
    .venv/bin/python benchmarks/membership_throughput.py --max-iter 2 --init-eval 10 --init-size 10 \\
        --n-inputs 4 --art-inputs 1 --reps 1 --knockoff-budget 192 --knockoff-epochs 1 --max-wait 0 --no-write

Needs ``pip install adversarial-robustness-toolbox``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

from common import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    NUM_CLASSES,
    cpu_model,
    loadavg,
    markers,
    update_benchmarks_md,
    versions,
    wait_for_quiet,
)

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
MARK_BEGIN, MARK_END = markers("membership_throughput")


def linear_model():
    """``--linear-too``: an affine classifier on the flattened normalised image; its forward pass costs
    microseconds, so what is timed is everything around the model (sampling directions, per-call overhead)."""
    import flax.linen as nn
    import jax.numpy as jnp

    class Linear(nn.Module):
        @nn.compact
        def __call__(self, x, train: bool = False):
            x = (x - jnp.asarray(CIFAR10_MEAN)) / jnp.asarray(CIFAR10_STD)
            return nn.Dense(NUM_CLASSES, name="classifier")(x.reshape(len(x), -1))

    return Linear()


def build(args, name: str | None = None):
    import jax
    import jax.numpy as jnp
    import numpy as np
    from flax import traverse_util
    from pgd_throughput import make_images, make_variables

    from nas_jax.models.registry import build_model

    name = name or args.model
    if name == "linear":
        model = linear_model()
        variables = model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3), jnp.float32))
        flat = {k: np.asarray(v) for k, v in traverse_util.flatten_dict(variables, sep="/").items()}
    else:
        model = build_model(name, num_classes=NUM_CLASSES, mean=CIFAR10_MEAN, std=CIFAR10_STD,
                            init_channels=args.init_channels, layers=args.layers, width_multiplier=args.width)
        variables, flat = make_variables(model, 64)
    n_params = int(sum(v.size for k, v in flat.items() if k.startswith("params/")))
    # A random network maps almost everything, uniform noise included, into one class, so HopSkipJump's
    # initialisation (uniform draws of another class) would fail on every input and both sides would time
    # nothing. Centring the classifier bias on 64 smooth images + 64 uniform-noise images (their features
    # differ) spreads the predictions; the init success rates are reported.
    calib = np.concatenate([make_images(2, 64), np.random.default_rng(3).uniform(0, 1, (64, 32, 32, 3))])
    logits = np.asarray(jax.jit(model.apply)(variables, calib.astype(np.float32)))
    (bias,) = [k for k, v in flat.items() if k.startswith("params/classifier") and k.endswith("/bias")
               and v.shape == (NUM_CLASSES,)]  # the output layer (VGG has classifier, _1, _2)
    flat[bias] = (flat[bias] - logits.mean(0)).astype(np.float32)
    variables = traverse_util.unflatten_dict(flat, sep="/")
    return model, jax.device_put(variables), n_params


class PaddedPredict:
    """ART's ``predict_fn``: one-hot eval-mode labels of a NumPy batch; batches are padded to a power of two
    (one compilation per bucket). Counts the real rows (label queries) and the padded ones."""

    def __init__(self, model, variables):
        import jax
        import jax.numpy as jnp

        self.variables, self.queries, self.padded = variables, 0, 0
        self._labels = jax.jit(lambda v, x: jnp.argmax(model.apply(v, x, train=False), -1))

    def __call__(self, x):
        import numpy as np

        n = len(x)
        size = 1 << max(0, (n - 1).bit_length())
        if size > n:
            x = np.concatenate([x, np.zeros((size - n, *x.shape[1:]), x.dtype)])
        labels = np.asarray(self._labels(self.variables, np.asarray(x, np.float32)))[:n]
        self.queries += n
        self.padded += size - n
        return np.eye(NUM_CLASSES, dtype=np.float32)[labels]


def hsj_side_by_side(args, model, variables) -> dict:
    import jax
    import numpy as np
    from art.attacks.evasion import HopSkipJump
    from art.estimators.classification import BlackBoxClassifier
    from pgd_throughput import make_images

    from nas_jax.attacks.hopskipjump import HSJConfig, LabelOracle, hopskipjump_jit

    cfg = HSJConfig(max_iter=args.max_iter, max_eval=args.max_eval, init_eval=args.init_eval, init_size=args.init_size,
                    chunk_size=args.chunk)
    oracle = LabelOracle(model.apply, variables)
    x = make_images(1, args.n_inputs)
    x_art = x[: args.art_inputs]
    key = jax.random.key(0, impl="rbg")

    def ours():
        return jax.tree_util.tree_map(np.asarray, hopskipjump_jit(oracle, x, key, cfg=cfg))

    predict = PaddedPredict(model, variables)
    clf = BlackBoxClassifier(predict, input_shape=x.shape[1:], nb_classes=NUM_CLASSES, clip_values=(0.0, 1.0))
    art = HopSkipJump(clf, batch_size=args.art_batch, targeted=False, norm=2, max_iter=args.max_iter,
                      max_eval=args.max_eval, init_eval=args.init_eval, init_size=args.init_size, verbose=False)

    def theirs(inputs):
        predict.queries = predict.padded = 0
        np.random.seed(0)
        return art.generate(inputs)

    t0 = time.perf_counter()
    res = ours()  # compiles
    ours_first = time.perf_counter() - t0
    t0 = time.perf_counter()
    theirs(x_art[:1])  # compiles the padded buckets
    art_first = time.perf_counter() - t0
    t_ours, t_art = [], []
    for _ in range(args.reps):
        t0 = time.perf_counter()
        res = ours()
        t_ours.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        x_adv = theirs(x_art)
        t_art.append(time.perf_counter() - t0)
    art_labels = predict(x_art).argmax(-1)
    predict.queries -= len(x_art)
    art_adv = predict(x_adv).argmax(-1) != art_labels
    predict.queries -= len(x_art)
    art_dist = np.sqrt(((x_adv - x_art) ** 2).reshape(len(x_art), -1).sum(1))
    ours_ips, art_ips = args.n_inputs / statistics.median(t_ours), args.art_inputs / statistics.median(t_art)
    return {
        "ours": {"inputs": args.n_inputs, "first_s": ours_first, "times": t_ours, "inputs_per_s": ours_ips,
                 "queries_per_input": float(res.queries.mean()), "init_success": float(res.initialized.mean()),
                 "mean_l2": float(res.distance_l2[res.initialized].mean()) if res.initialized.any() else None,
                 # on ART's inputs (the first --art-inputs of the batch): the distances to compare
                 "l2_art_inputs": [float(d) if ok else None for d, ok in
                                   zip(res.distance_l2[: args.art_inputs], res.initialized[: args.art_inputs])]},
        "art": {"inputs": args.art_inputs, "first_s": art_first, "times": t_art, "inputs_per_s": art_ips,
                "queries_per_input": predict.queries / args.art_inputs,
                "padded_rows_per_input": predict.padded / args.art_inputs, "adversarial": float(art_adv.mean()),
                "mean_l2": float(art_dist[art_adv].mean()) if art_adv.any() else None,
                "l2_art_inputs": [float(d) if ok else None for d, ok in zip(art_dist, art_adv)]},
        "speedup": ours_ips / art_ips,
    }


def normal_rates(n: int = 800, d: int = 3072, reps: int = 5) -> dict:
    """Million standard normals per second: JAX (jit, rbg and threefry keys) and NumPy, [n, d] per draw."""
    import jax
    import numpy as np

    rates = {}
    for impl in ("rbg", "threefry2x32"):
        draw = jax.jit(lambda k: jax.random.normal(k, (n, d)).sum())
        key = jax.random.key(0, impl=impl)
        draw(key).block_until_ready()
        t0 = time.perf_counter()
        for i in range(reps):
            draw(jax.random.fold_in(key, i)).block_until_ready()
        rates[f"jax {impl}"] = n * d * reps / (time.perf_counter() - t0) / 1e6
    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    for _ in range(reps):
        rng.standard_normal((n, d), np.float32).sum()
    rates["numpy"] = n * d * reps / (time.perf_counter() - t0) / 1e6
    return rates


def knockoff_timing(args, model, variables) -> list[dict]:
    import jax
    import ml_collections
    import numpy as np

    from nas_jax.attacks import stealing
    from nas_jax.attacks.nes import BlackBox
    from nas_jax.config import base_config
    from nas_jax.data import Dataset

    rng = np.random.default_rng(0)
    pool = (rng.uniform(0, 1, (2000, 32, 32, 3)) * 255).astype(np.uint8)
    ds = Dataset("random", pool, rng.integers(0, NUM_CLASSES, 2000).astype(np.int32), pool[:200],
                 rng.integers(0, NUM_CLASSES, 200).astype(np.int32), NUM_CLASSES, CIFAR10_MEAN, CIFAR10_STD)
    c = base_config("stealing", "paper")
    c.model, c.seed = args.model, 1
    c.arch = ml_collections.ConfigDict({**c.arch.to_dict(), "init_channels": args.init_channels,
                                        "layers": args.layers, "width_multiplier": args.width})
    c.train.update(dict(epochs=args.knockoff_epochs, lr=0.025, lr_schedule="constant", grad_clip=0.0, crop_padding=0,
                        flip=False, cutout=0, batch_size=96, eval_every_epochs=10**6))
    box = BlackBox(model.apply, variables)
    rows = []
    for sampling in ("random", "adaptive"):
        kcfg = stealing.KnockoffConfig(budget=args.knockoff_budget, sampling=sampling)
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            data, initial, _ = stealing._collect(box, pool, ds.y_train, ds, model, c, jax.random.key(0), kcfg,
                                                 Path(tmp))
            t_query = time.perf_counter() - t0
            t0 = time.perf_counter()
            stealing.knockoff(box, pool, ds.y_train, ds, model, c, jax.random.key(0), kcfg, Path(tmp), progress=False)
            t_train = time.perf_counter() - t0  # the queries are read back from the cache: training only
        per_k = 1000 / args.knockoff_budget
        rows.append({"sampling": sampling, "query_s_per_1k": t_query * per_k, "train_s_per_1k": t_train * per_k,
                     "total_s_per_1k": (t_query + t_train) * per_k})
    return rows


def _r(d):
    return "-" if d is None else f"{d:.3f}"


def _model_desc(args, name: str, n_params: int) -> str:
    if name == "linear":
        return f"`linear` (affine classifier on the flattened image; {n_params:,} parameters)"
    return (f"`{name}` (init_channels {args.init_channels}, layers {args.layers}, width {args.width}; "
            f"{n_params:,} parameters), random weights with calibrated BN")


def fmt_section(args, results: list[tuple[str, int, dict]], knock: list[dict], rates: dict, load: tuple,
                start: str) -> str:
    cmd = "python benchmarks/membership_throughput.py " + " ".join(shlex.quote(s) for s in sys.argv[1:])
    v = versions(("jax", "jaxlib", "flax", "adversarial-robustness-toolbox"))
    lines = [
        MARK_BEGIN,
        "## Label-only membership inference: batched HopSkipJump vs ART, and Knockoff time per 1k queries",
        "",
        f"Command: `{cmd.strip()}` ({start}). CPU: {cpu_model()}; load average before/after: "
        f"{load[0]:.2f} / {load[1]:.2f}. Versions: {', '.join(f'{k} {x}' for k, x in v.items())}.",
        "Models (32x32x3 inputs, eval mode): " + "; ".join(_model_desc(args, n, k) for n, k, _ in results)
        + f". Budget: max_iter {args.max_iter}, max_eval {args.max_eval}, init_eval {args.init_eval}, "
        f"init_size {args.init_size}.",
        "",
        "| model | side | inputs | inputs/s (median) | first call s | label queries/input | images/s through the "
        "model | init success / adversarial | mean L2 |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, _, res in results:
        o, a = res["ours"], res["art"]
        o_ips = o["queries_per_input"] * o["inputs"] / statistics.median(o["times"])
        a_ips = (a["queries_per_input"] + a["padded_rows_per_input"]) * a["inputs"] / statistics.median(a["times"])
        lines += [
            f"| {name} | nas_jax `hopskipjump_jit` (chunk {args.chunk}) | {o['inputs']} | {o['inputs_per_s']:.3f} | "
            f"{o['first_s']:.1f} | {o['queries_per_input']:.0f} | {o_ips:.0f} | {o['init_success']:.2f} | "
            f"{_r(o['mean_l2'])} |",
            f"| {name} | ART `HopSkipJump` + `BlackBoxClassifier` (batch {args.art_batch}) | {a['inputs']} | "
            f"{a['inputs_per_s']:.3f} | {a['first_s']:.1f} | {a['queries_per_input']:.0f} "
            f"(+{a['padded_rows_per_input']:.0f} padded) | {a_ips:.0f} | {a['adversarial']:.2f} | {_r(a['mean_l2'])} |",
        ]
    lines.append("")
    for name, _, res in results:
        o, a = res["ours"], res["art"]
        lines.append(
            f"- `{name}`: speed-up (inputs/s) **{res['speedup']:.1f}x** (goal: >= 20x on CPU). L2 distance to the "
            "boundary found on ART's inputs (the first ones of our batch), nas_jax / ART: "
            + ", ".join(f"{_r(d1)} / {_r(d2)}" for d1, d2 in zip(o["l2_art_inputs"], a["l2_art_inputs"])) + ".")
    lines += [
        "",
        f"{args.reps} timed repetitions each, alternating (ours, ART, ours, ...). Both sides query the same jitted "
        "forward pass; ART pads each call to a power of two. With the same forward pass and the same number of "
        "queries, the speed-up is at most what batching gains in throughput through the model (the 'images/s' "
        "column) plus the per-call overhead saved: a CNN on CPU is compute-bound already at ART's gradient-estimation "
        "batches (100-2,500 images, most of the queries). On the linear model both sides spend their time drawing "
        "the gradient samples' Gaussian directions (3,072 normals each); standard normals per second in this run: "
        + ", ".join(f"{k} {v:.0f} M/s" for k, v in rates.items()) + ".",
        "",
        f"Knockoff (`{args.model}` victim and thief), budget {args.knockoff_budget}, {args.knockoff_epochs} thief "
        "epochs (batch 96), compilation included:",
        "",
        "| sampling | victim-query phase s / 1k queries | thief training s / 1k queries | total s / 1k queries |",
        "|---|---|---|---|",
    ]
    lines += [f"| {r['sampling']} | {r['query_s_per_1k']:.1f} | {r['train_s_per_1k']:.1f} | {r['total_s_per_1k']:.1f} |"
              for r in knock]
    lines += ["", MARK_END, ""]
    return "\n".join(lines)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="resnet")
    p.add_argument("--width", type=float, default=0.25)
    p.add_argument("--init-channels", type=int, default=8)
    p.add_argument("--layers", type=int, default=5)
    p.add_argument("--linear-too", action="store_true",
                   help="also time both sides on an affine classifier (a negligible forward pass)")
    p.add_argument("--max-iter", type=int, default=50)
    p.add_argument("--max-eval", type=int, default=2500)
    p.add_argument("--init-eval", type=int, default=100)
    p.add_argument("--init-size", type=int, default=100)
    p.add_argument("--chunk", type=int, default=25, help="gradient samples per input per model call (ours)")
    p.add_argument("--n-inputs", type=int, default=64)
    p.add_argument("--art-inputs", type=int, default=4)
    p.add_argument("--art-batch", type=int, default=128)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--knockoff-budget", type=int, default=1000)
    p.add_argument("--knockoff-epochs", type=int, default=5)
    p.add_argument("--load-threshold", type=float, default=1.0)
    p.add_argument("--max-wait", type=float, default=600)
    p.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md alone")
    args = p.parse_args()
    if args.art_inputs > args.n_inputs:
        p.error("--art-inputs must not exceed --n-inputs")
    if args.model == "linear":
        p.error("--model takes a zoo model (Knockoff trains one); add --linear-too for the affine classifier")
    start = dt.datetime.now().isoformat(timespec="minutes")
    load0, waited = wait_for_quiet(args.load_threshold, args.max_wait)
    print(f"load average {load0:.2f} (waited {waited:.0f} s)", flush=True)
    results, built = [], {}
    for name in (args.model, "linear") if args.linear_too else (args.model,):
        model, variables, n_params = built[name] = build(args, name)
        res = hsj_side_by_side(args, model, variables)
        print(f"HopSkipJump on {name}: ours {res['ours']}\n  ART {res['art']}\n  speed-up {res['speedup']:.1f}x",
              flush=True)
        results.append((name, n_params, res))
    model, variables, _ = built[args.model]
    knock = knockoff_timing(args, model, variables)
    for r in knock:
        print(f"Knockoff {r}", flush=True)
    rates = normal_rates()
    print(f"normals: {rates}", flush=True)
    section = fmt_section(args, results, knock, rates, (load0, loadavg()[0]), start)
    print(section)
    if not args.no_write:
        update_benchmarks_md("membership_throughput", section)


if __name__ == "__main__":
    main()
