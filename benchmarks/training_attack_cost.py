"""Cost of the training-time attacks and defence: wall time per epoch of poisoned, backdoored and PGD
adversarial training relative to clean training of the same model, nas_jax and PyTorch side by side.

Modes (one full training step each, batch 96 by default, 32x32x3 inputs, 10 classes, the §d recipe: on-device
crop/flip/cutout, SGD momentum 0.9, coupled weight decay 5e-4, global-norm clip 5):

* ``clean``       — the plain step (``nas_jax.train.trainer.make_train_step``);
* ``poison``      — label flipping (§e.3): the same step on relabelled data. The labels are host data, so the step
  is the clean one; it is timed anyway as a check that poisoning costs nothing;
* ``backdoor``    — TrojanNN fine-tuning (§e.4): ``nas_jax.attacks.backdoor.poison_transform`` stamps and
  appends ⌈0.01·B⌉ relabelled copies inside the step (rate 0.01, transparency 0.7);
* ``adversarial`` — Madry PGD adversarial training (§e.7): ``adversarial_transform`` crafts untargeted L∞ PGD
  (ε 8/255, α 2/255, 7 steps, random start, BN batch statistics) inside the step, then trains on it.

Per epoch = steps_per_epoch × step time, so the ratio to clean is the ratio of step times; the table also gives
seconds per CIFAR-10 epoch (521 steps of 96). Goal: adversarial ≤ 8.5x clean (7 PGD forward+backward
passes plus the training pass: 8x if a crafting pass cost a training pass; nas_jax's PGD also runs one success
check forward after the last step).

PyTorch side (``benchmarks/torch_models.py``, the same networks): the same step with tensor augmentation;
backdoor = stamp + concatenate in the step; adversarial = a hand-written PGD-7 loop with random start in
``model.train()`` (the artifact's mode; it also moves the running statistics, which ours does not), then the
training step on the examples. Each (framework, model, mode) runs in its own child process; workers compile /
warm up first, then the parent alternates the timed repetitions of the nas_jax and PyTorch workers of one mode.

    .venv/bin/python benchmarks/training_attack_cost.py                # full run, writes BENCHMARKS.md
    .venv/bin/python benchmarks/training_attack_cost.py --models darts --darts-c 4 --darts-layers 3 \\
        --batch 16 --steps 1 --reps 1 --warmup 1 --max-wait 0 --no-write    # smoke test
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import shlex
import statistics
import sys
import time
from pathlib import Path

from common import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    NUM_CLASSES,
    Worker,
    alternate,
    children_cpu_seconds,
    cpu_busy_seconds,
    cpu_model,
    loadavg,
    markers,
    serve,
    update_benchmarks_md,
    versions,
)
from common import wait_for_quiet as _wait

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
MODELS = ("darts", "resnet")
MODES = ("clean", "poison", "backdoor", "adversarial")
MARK_BEGIN, MARK_END = markers("training_attack_cost")
CIFAR10_STEPS = 521  # 50,000 / 96
SEED = 0
EPS, STEP, PGD_STEPS = 8 / 255, 2 / 255, 7
POISON_RATE, TRANSPARENCY, TARGET = 0.01, 0.7, 0


def _batch(batch: int, mode: str):
    import numpy as np

    rng = np.random.default_rng(SEED)
    images = rng.integers(0, 256, (batch, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, NUM_CLASSES, (batch,), dtype=np.int32)
    if mode == "poison":  # 40% flipped to another class (the step cannot tell)
        k = round(0.4 * batch)
        labels[:k] = (labels[:k] + rng.integers(1, NUM_CLASSES, k)) % NUM_CLASSES
    return images, labels


def jax_worker(model_name: str, mode: str, batch: int, warmup: int, darts_c: int, darts_layers: int):
    import jax
    import numpy as np

    from nas_jax import parallel
    from nas_jax.attacks import backdoor as bd
    from nas_jax.attacks.adversarial_training import adversarial_transform, training_pgd_config
    from nas_jax.config import base_config
    from nas_jax.models.registry import build_model
    from nas_jax.train.trainer import create_state, init_key, make_optimizer, make_train_step

    cfg = base_config("train", "paper")
    tcfg, arch = cfg.train, cfg.arch
    tcfg.batch_size = batch
    model = build_model(model_name, num_classes=NUM_CLASSES, mean=CIFAR10_MEAN, std=CIFAR10_STD,
                        init_channels=darts_c, layers=darts_layers, dropout=arch.dropout, conv_impl=arch.conv_impl)
    shape = (32, 32, 3)
    transform = None
    if mode == "backdoor":
        mask = bd.trigger_mask(shape)
        transform = bd.poison_transform(bd.white_mark(shape), mask, TRANSPARENCY, TARGET, POISON_RATE)
    elif mode == "adversarial":
        transform = adversarial_transform(model, training_pgd_config(EPS, STEP, PGD_STEPS, random_start=True), "train")
    mesh = parallel.data_mesh()
    tx = make_optimizer(tcfg, CIFAR10_STEPS)
    state = jax.device_put(create_state(model, tx, init_key(SEED), shape), parallel.replicated(mesh))
    step = make_train_step(model, tx, tcfg, arch, CIFAR10_STEPS, SEED, mesh, transform)
    images, labels = parallel.global_batch(mesh, _batch(batch, mode))
    box = {"state": state}

    def run_steps(n):
        s, m = box["state"], None
        for _ in range(n):
            s, m = step(s, images, labels)
        jax.block_until_ready((s, m))
        box["state"] = s

    t0 = time.perf_counter()
    run_steps(1)
    compile_s = time.perf_counter() - t0
    if warmup > 1:
        run_steps(warmup - 1)
    n_params = sum(int(np.prod(p.shape)) for p in jax.tree_util.tree_leaves(box["state"].params))
    dev = jax.devices()[0]
    return {"params": n_params, "compile_s": compile_s,
            "device": f"{dev.platform}:{getattr(dev, 'device_kind', '')} x{len(jax.devices())}"}, run_steps


def torch_worker(model_name: str, mode: str, batch: int, warmup: int, darts_c: int, darts_layers: int):
    import torch
    import torch.nn.functional as F

    sys.path.insert(0, str(HERE))
    import torch_models as tm
    from train_throughput import torch_augment

    from nas_jax.models.genotypes import get_genotype

    torch.set_num_threads(os.cpu_count())
    torch.manual_seed(SEED)
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    if model_name == "darts":
        model = tm.DartsNetwork(get_genotype("darts"), NUM_CLASSES, CIFAR10_MEAN, CIFAR10_STD,
                                init_channels=darts_c, layers=darts_layers, dropout=0.2)
    else:
        model = tm.ResNet18(NUM_CLASSES, CIFAR10_MEAN, CIFAR10_STD)
    model = model.to(device).train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=0.025, momentum=0.9, weight_decay=5e-4)
    x_np, y_np = _batch(batch, mode)
    images = torch.from_numpy(x_np.transpose(0, 3, 1, 2).copy()).to(device)
    labels = torch.from_numpy(y_np.astype("int64")).to(device)
    mask = torch.zeros(1, 1, 32, 32, device=device)
    mask[..., :3, :3] = 1.0
    k = math.ceil(POISON_RATE * batch)  # appended rows, as nas_jax (always stamped here: E[k] differs by < 1)

    def pgd(x, y):
        delta = torch.empty_like(x).uniform_(-EPS, EPS)
        x_adv = (x + delta).clamp(0, 1)
        for _ in range(PGD_STEPS):
            x_adv.requires_grad_(True)
            loss = F.cross_entropy(model(x_adv), y)
            (g,) = torch.autograd.grad(loss, x_adv)
            x_adv = torch.min(torch.max(x_adv.detach() + STEP * g.sign(), x - EPS), x + EPS).clamp(0, 1)
        return x_adv.detach()

    def step():
        x, y = torch_augment(images), labels
        if mode == "backdoor":
            w = (1 - TRANSPARENCY) * mask
            x = torch.cat([x, (1 - w) * x[:k] + w * 1.0])
            y = torch.cat([y, torch.full((k,), TARGET, dtype=y.dtype, device=device)])
        elif mode == "adversarial":
            x = pgd(x, y)
        logits = model(x)
        loss = F.cross_entropy(logits, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 5.0)
        opt.step()
        return loss.detach()

    def run_steps(n):
        for _ in range(n):
            m = step()
        if cuda:
            torch.cuda.synchronize()
        m.cpu()

    t0 = time.perf_counter()
    run_steps(1)
    first_s = time.perf_counter() - t0
    if warmup > 1:
        run_steps(warmup - 1)
    dev = torch.cuda.get_device_name(0) if cuda else "cpu"
    return {"params": tm.num_params(model), "compile_s": first_s, "device": f"{device.type}:{dev}",
            "threads": torch.get_num_threads()}, run_steps


# ----------------------------------------------------------------------------
# Orchestration
# ----------------------------------------------------------------------------


def measure(args, model: str, mode: str, frameworks: tuple[str, ...]) -> dict:
    def worker(framework: str) -> Worker:
        return Worker(__file__, ["--worker", framework, "--models", model, "--modes", mode, "--batch", str(args.batch),
                                 "--warmup", str(args.warmup), "--darts-c", str(args.darts_c),
                                 "--darts-layers", str(args.darts_layers)], f"{framework} {model} {mode}")

    if len(frameworks) == 2:
        j, t = alternate(lambda: worker("jax"), lambda: worker("torch"), args.reps, args.steps)
        return {"jax": j, "torch": t}
    w = worker(frameworks[0])
    try:
        times = [w.run(args.steps) for _ in range(args.reps)]
    finally:
        w.close()
    return {frameworks[0]: {**w.info, "times": times}}


def render_section(res: dict) -> str:
    v = res["versions"]
    fw = res["frameworks"]
    head = "| model | mode | " + " | ".join(f"{f} s/step | {f} s/CIFAR-10 epoch | {f} × clean" for f in fw) + " |"
    lines = [MARK_BEGIN, "## Training-time attack cost (benchmarks/training_attack_cost.py)", "",
             f"Command: `{res['command']}`", "",
             f"One training step at batch {res['batch']} on 32x32x3 inputs (§d recipe), median of {res['reps']} "
             f"repetitions of {res['steps']} steps after {res['warmup']} warm-up step(s); a CIFAR-10 epoch is "
             f"{CIFAR10_STEPS} steps. Modes: poison = label flipping (the clean step on relabelled data), backdoor = "
             f"stamp and append ⌈{POISON_RATE}·B⌉ copies in the step, adversarial = PGD-7 (ε 8/255, α 2/255, random "
             "start, BN batch statistics) crafted in the step. Goal: adversarial ≤ 8.5x clean.", "",
             head, "|---|---|" + "---:|" * (3 * len(fw))]
    for model, modes in res["models"].items():
        for mode, r in modes.items():
            cells = []
            for f in fw:
                cells += [f"{r[f]['step_s']:.3f}", f"{r[f]['step_s'] * CIFAR10_STEPS:.0f}", f"{r[f]['ratio']:.2f}x"]
            lines.append(f"| {res['labels'][model]} | {mode} | " + " | ".join(cells) + " |")
    lines += ["", f"- Date (UTC): {res['date']}",
              f"- Machine: {res['cpu']}, {res['cores']} cores; {platform.system()} {platform.machine()}; devices: "
              + ", ".join(f"{f} `{res['devices'][f]}`" for f in fw),
              f"- Versions: jax {v['jax']}, jaxlib {v['jaxlib']}, flax {v['flax']}, torch {v['torch']}, "
              f"Python {v['python']}",
              f"- Load average (1 min) before measuring: {res['load_before']:.2f}; after: {res['load_after']:.2f}. "
              f"Other processes used {res['foreign_cpu_s']:.0f} CPU-seconds during the {res['wall_s']:.0f} s of "
              "measurement", "",
              "Notes. The nas_jax crafting passes take gradients with respect to the input only (no weight "
              "gradients) and keep one dropout mask over the 7 steps; its PGD (nas_jax.attacks.pgd, reused "
              "unchanged) adds one forward pass for the success check after the last step. The PyTorch loop "
              "crafts in model.train() and so also updates the running statistics 7 times per step.", MARK_END]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--modes", default=",".join(MODES))
    p.add_argument("--frameworks", default="jax,torch", help="jax,torch or one of them")
    p.add_argument("--batch", type=int, default=96)
    p.add_argument("--steps", type=int, default=3, help="steps per timed repetition")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first (the first one compiles)")
    p.add_argument("--darts-c", type=int, default=16)
    p.add_argument("--darts-layers", type=int, default=8)
    p.add_argument("--load-threshold", type=float, default=1.0)
    p.add_argument("--max-wait", type=float, default=600.0)
    p.add_argument("--no-write", action="store_true", help="print only, do not touch BENCHMARKS.md")
    p.add_argument("--worker", choices=("jax", "torch"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    models = [m for m in args.models.split(",") if m]
    modes = [m for m in args.modes.split(",") if m]
    frameworks = tuple(f for f in args.frameworks.split(",") if f)
    for given, valid, what in ((models, MODELS, "model"), (modes, MODES, "mode"), (frameworks, ("jax", "torch"),
                                                                                     "framework")):
        bad = [g for g in given if g not in valid]
        if bad:
            p.error(f"unknown {what}(s) {bad}; valid: {list(valid)}")
    if args.worker:
        fn = jax_worker if args.worker == "jax" else torch_worker
        serve(*fn(models[0], modes[0], args.batch, args.warmup, args.darts_c, args.darts_layers))
        return 0
    if "clean" not in modes:
        modes = ["clean", *modes]  # the reference of every ratio

    command = "python benchmarks/training_attack_cost.py" + (
        "" if argv is None and len(sys.argv) == 1 else " " + shlex.join(sys.argv[1:] if argv is None else argv))
    load_before, waited = _wait(args.load_threshold, args.max_wait)
    t_start = time.perf_counter()
    busy0, ours0 = cpu_busy_seconds(), children_cpu_seconds()
    res = {"models": {}, "batch": args.batch, "steps": args.steps, "reps": args.reps, "warmup": args.warmup,
           "command": command, "cpu": cpu_model(), "cores": os.cpu_count(), "frameworks": frameworks,
           "versions": versions(("jax", "jaxlib", "flax", "torch")), "load_before": load_before, "devices": {},
           "labels": {"darts": f"darts (DARTS V2, C={args.darts_c}, {args.darts_layers} cells)",
                      "resnet": "resnet (ResNet-18 CIFAR)"},
           "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M")}
    for model in models:
        rows = {}
        for mode in modes:
            out = measure(args, model, mode, frameworks)
            rows[mode] = {f: {"step_s": statistics.median(o["times"]) / args.steps, "times": o["times"],
                              "compile_s": o["compile_s"]} for f, o in out.items()}
            for f, o in out.items():
                res["devices"][f] = o["device"]
                rows[mode][f]["ratio"] = rows[mode][f]["step_s"] / rows["clean"][f]["step_s"]
            print(f"{model} {mode}: " + ", ".join(f"{f} {r['step_s']:.3f} s/step ({r['ratio']:.2f}x clean)"
                                                    for f, r in rows[mode].items()), flush=True)
        res["models"][model] = rows
    res["wall_s"] = time.perf_counter() - t_start
    res["foreign_cpu_s"] = max(0.0, (cpu_busy_seconds() - busy0) - (children_cpu_seconds() - ours0))
    res["load_after"] = loadavg()[0]
    section = render_section(res)
    print(section)
    print(json.dumps({m: {k: {f: round(v["ratio"], 3) for f, v in r.items()} for k, r in rows.items()}
                      for m, rows in res["models"].items()}))
    if not args.no_write:
        update_benchmarks_md("training_attack_cost", section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
