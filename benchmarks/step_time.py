"""Time of one training step: the library's step (what ``psb.fit`` does per step) against the
deterministic network and against a hand-written PyTorch step of the same estimator, all in
one process, interleaved, medians.

One command per row::

    python benchmarks/step_time.py mlp400-ssghs          # MLP 784-400-400-10 (SiLU), SS-GHS, batch 1024
    python benchmarks/step_time.py lenet300-bcgnj        # LeNet-300-100, BC-GNJ, batch 128
    python benchmarks/step_time.py lenet300-ssig         # LeNet-300-100, SS-IG, batch 128
    python benchmarks/step_time.py lenet5-ssig           # LeNet-5-Caffe, batch 128; also lenet5-ss,
                                                         # -ssgl, -ssghs, -bcgnj, -bcghs, -sc
    python benchmarks/step_time.py all                   # every row, one process each
    python benchmarks/step_time.py --table               # the README table from the saved results

Options: ``--threads N`` (torch threads, default 2), ``--repeats R`` (interleaved repeats of
``--number`` steps each, default 11 x 20), ``--estimator default|lrt|weights|both`` (the
network's default choice for the row's batch size, local reparameterisation, one weight draw
per step, or both in turn), ``--clock wall|cpu`` (wall-clock time, the default, or the
process's CPU time: a proxy for comparing variants on a loaded machine, never a result),
``--check`` (first verify that the hand-written step computes the library's loss and
gradients, with every random draw replaced by a constant), ``--profile`` (print
torch.profiler's operator table of both steps) and ``--device cpu|cuda|auto`` (where the
three steps run: the CPU, the default; a CUDA GPU, an error without one; ``auto``: the GPU
when there is one, else the CPU, saying so). On a GPU every timed repeat ends with
``torch.cuda.synchronize()`` so that the clock sees the kernels finish, and the results are
saved with a ``_cuda`` suffix::

    python benchmarks/step_time.py lenet300-ssig --device auto

The deterministic step is the plain network with ``torch.optim.Adam`` and mean
cross-entropy. The hand-written step (``hand_written.py``) computes the library's objective
with plain tensors and one fused Adam, the optimiser ``fit`` uses. The ratio library /
hand-written is the price of the library's machinery (Pyro's model and guide, traces, the
generic ELBO); hand-written / deterministic is the price of the estimator itself.
"""

import argparse
import glob
import json
import statistics
import subprocess
import sys
import time
from contextlib import nullcontext
from functools import partial
from pathlib import Path

import pyro
import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, write  # noqa: E402
from hand_written import HandWritten, fixed_noise  # noqa: E402

import pyro_sparse_bnn as psb  # noqa: E402
from pyro_sparse_bnn.core.architecture import parse_sequential  # noqa: E402
from pyro_sparse_bnn.core.fit import fit_step  # noqa: E402
from pyro_sparse_bnn.core.optim import JointAdam  # noqa: E402
from pyro_sparse_bnn.core.reparameterization import LocalReparameterization  # noqa: E402

PRIORS = {
    "ss": ("SpikeSlab", lambda: psb.SpikeSlab(prior_inclusion=1e-3)),
    "ssig": ("SS-IG", psb.SpikeSlabNode),
    "ssgl": ("SS-GL", psb.SpikeSlabGroupLasso),
    "ssghs": ("SS-GHS", psb.SpikeSlabGroupHorseshoe),
    "bcgnj": ("BC-GNJ", psb.GroupNormalJeffreys),
    "bcghs": ("BC-GHS", psb.GroupHorseshoe),
    "sc": ("self-compressing", psb.SelfCompressingGaussian),
}
NETS = {
    "mlp400": ("MLP 784-400-400-10 (SiLU)", lambda: psb.mlp([784, 400, 400, 10], nn.SiLU), 1024, 1.8),
    "lenet300": ("LeNet-300-100", psb.lenet_300_100, 128, 3.5),
    "lenet5": ("LeNet-5-Caffe", psb.lenet5_caffe, 128, 2.5),
}
ROWS = ["mlp400-ssghs", "lenet300-bcgnj", "lenet300-ssig"] + [f"lenet5-{p}" for p in PRIORS]
#: target of every row: library step / hand-written step of the same estimator
HAND_TARGET = 1.15
NUM_DATA = 60000
LR = 5e-3


def build_row(row, lrt, batch_size=None, seed=0, widths=None, device="cpu"):
    """``(x, y, steps, bnn, hand, used_lrt)`` for a row: the three step functions share one
    minibatch. ``widths`` replaces the network by an MLP of these widths (ReLU). Everything is
    built on the CPU (the same initial values for every device) and moved to ``device``."""
    net_key, prior_key = row.split("-")
    _, build, default_batch, _ = NETS[net_key]
    if widths is not None:
        build = partial(psb.mlp, widths)
    batch = batch_size or default_batch
    torch.manual_seed(seed)
    deterministic = build()
    x = torch.randn(batch, *parse_sequential(deterministic).input_shape)
    y = torch.randint(0, 10 if widths is None else widths[-1], (batch,))
    deterministic, x, y = deterministic.to(device), x.to(device), y.to(device)

    det_optim = torch.optim.Adam(deterministic.parameters(), lr=1e-3)

    def deterministic_step():
        det_optim.zero_grad(set_to_none=True)
        F.cross_entropy(deterministic(x), y).backward()
        det_optim.step()

    kwargs = {} if lrt is None else {"local_reparameterization": lrt}
    bnn = psb.SparseBNN(build(), PRIORS[prior_key][1](), num_data=NUM_DATA, **kwargs).to(device)
    elbo, optim = psb.core.MeanFieldELBO(), JointAdam({"lr": LR})

    def library_step():  # what fit does per step
        fit_step(bnn, elbo, optim, x, y)

    used_lrt = bnn.local_reparameterization_layers(batch)
    hand = HandWritten(bnn, used_lrt).to(device)
    hand_optim = torch.optim.Adam(hand.parameters(), lr=LR, fused=True)

    def hand_step():
        hand_optim.zero_grad(set_to_none=True)
        hand.loss(x, y).backward()
        hand_optim.step()

    steps = {"deterministic": deterministic_step, "hand_written": hand_step, "library": library_step}
    return x, y, steps, bnn, hand, used_lrt


def check(bnn, hand, x, y, lrt) -> float:
    """Largest relative difference between the library's and the hand-written loss and
    gradients with every random draw replaced by a constant; raises if above 1e-4."""
    elbo = psb.core.MeanFieldELBO()
    with fixed_noise():
        with LocalReparameterization(skip_slab_draws=True, layers=lrt) if lrt else nullcontext():
            loss = elbo.differentiable_loss(bnn.model, bnn.guide, x, y)
        hand_loss = hand.loss(x, y)
    pairs = hand.pairs()
    if len(pairs) != len(list(bnn.parameters())):
        raise AssertionError(f"the hand-written step has {len(pairs)} parameters, the library "
                             f"{len(list(bnn.parameters()))}")
    hand_grads = torch.autograd.grad(hand_loss, [h for h, _ in pairs])
    lib_grads = torch.autograd.grad(loss, [p for _, p in pairs])
    worst = abs(float(loss.detach()) - float(hand_loss.detach())) / abs(float(hand_loss.detach()))
    for g, other in zip(hand_grads, lib_grads, strict=True):
        worst = max(worst, float((g - other).abs().max()) / (float(g.abs().max()) + 1e-12))
    if worst > 1e-4:
        raise AssertionError(f"hand-written and library steps differ: relative difference {worst:.3g}")
    return worst


def describe(lrt_layers, num_layers) -> str:
    if len(lrt_layers) == num_layers:
        return "local reparameterisation"
    if not lrt_layers:
        return "weight draws"
    return f"local reparameterisation in {len(lrt_layers)} of {num_layers} layers, weight draws elsewhere"


def time_steps(steps, repeats, number, clock, device="cpu"):
    timer = time.perf_counter if clock == "wall" else time.process_time
    # a GPU runs its kernels asynchronously: wait for them before reading the clock
    sync = torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)
    for step in steps.values():  # warm-up
        for _ in range(5):
            step()
    sync()
    samples = {name: [] for name in steps}
    for _ in range(repeats):  # interleaved, so that machine noise hits every variant alike
        for name, step in steps.items():
            start = timer()
            for _ in range(number):
                step()
            sync()
            samples[name].append((timer() - start) / number)
    return {name: statistics.median(v) for name, v in samples.items()}


def profile(steps, number=20):
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    for name in ("hand_written", "library"):
        with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(number):
                steps[name]()
        print(f"--- {name} ({number} steps)")
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25))


def resolve_device(requested: str) -> str:
    """``cpu``, ``cuda`` (an error without a GPU) or ``auto`` (the GPU if there is one)."""
    if requested == "cpu":
        return "cpu"
    if torch.cuda.is_available():
        print(f"timing on the GPU: {torch.cuda.get_device_name(0)}")
        return "cuda"
    if requested == "cuda":
        raise SystemExit("--device cuda: torch sees no CUDA device (torch.cuda.is_available() is False)")
    print("no CUDA device (torch.cuda.is_available() is False): timing on the CPU")
    return "cpu"


def run_row(row, args):
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    net_key, prior_key = row.split("-")
    net_name, _, default_batch, target = NETS[net_key]
    estimators = {"default": [None], "lrt": [True], "weights": [False], "both": [True, False]}[args.estimator]
    results = []
    for lrt in estimators:
        widths = None if args.widths is None else [int(w) for w in args.widths.split("-")]
        x, y, steps, bnn, hand, used_lrt = build_row(row, lrt, args.batch_size, widths=widths, device=device)
        if args.check:
            worst = check(bnn, hand, x, y, used_lrt)
            print(f"check: library and hand-written loss and gradients agree (max relative difference {worst:.2g})")
        med = time_steps(steps, args.repeats, args.number, args.clock, device)
        if args.profile:
            profile(steps)
        estimator = describe(used_lrt, len(bnn.layers))
        if widths is not None:
            net_name = "MLP " + "-".join(map(str, widths))
        result = {
            "row": row, "network": net_name, "prior": PRIORS[prior_key][0], "estimator": estimator,
            "default_estimator": lrt is None, "batch_size": x.shape[0], "threads": torch.get_num_threads(),
            "device": device if device == "cpu" else torch.cuda.get_device_name(0),
            "clock": args.clock, "repeats": args.repeats, "number": args.number,
            "median_ms": {k: 1e3 * v for k, v in med.items()},
            "library_over_deterministic": med["library"] / med["deterministic"],
            "library_over_hand_written": med["library"] / med["hand_written"],
            "hand_written_over_deterministic": med["hand_written"] / med["deterministic"],
            "target_over_deterministic": target if lrt is None else None,
            "target_over_hand_written": HAND_TARGET,
        }
        results.append(result)
        print(markdown([result], header=not results[:-1]))
        suffix = "" if lrt is None else ("_lrt" if lrt else "_weights")
        name = f"step_time_{row}{suffix}_{args.threads}t" + ("" if args.clock == "wall" else "_cpu")
        name += "" if device == "cpu" else "_cuda"
        if widths is not None:
            name += "_mlp" + "-".join(map(str, widths))
        print(f"wrote {write(name, result)}")
        pyro.clear_param_store()
    return results


def markdown(results, header=True):
    lines = []
    if header:
        lines += [
            "| network, prior | batch | estimator | deterministic | hand-written | library | library / deterministic | library / hand-written |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
    for r in results:
        ms = r["median_ms"]
        target = r.get("target_over_deterministic")
        det = f"{r['library_over_deterministic']:.2f}x" + (f" (target {target}x)" if target else "")
        est = r["estimator"] + (" (default)" if r.get("default_estimator") else "")
        clock = "" if r.get("clock", "wall") == "wall" else " [CPU time]"
        lines.append(
            f"| {r['network']}, {r['prior']} | {r['batch_size']} | {est} | {ms['deterministic']:.2f} ms | "
            f"{ms['hand_written']:.2f} ms | {ms['library']:.2f} ms{clock} | {det} | "
            f"{r['library_over_hand_written']:.2f}x (target {r['target_over_hand_written']}x) |"
        )
    return "\n".join(lines)


def table(threads, clock):
    suffix = f"_{threads}t" + ("" if clock == "wall" else "_cpu") + ".json"
    results = []
    for row in ROWS:
        for variant in ("", "_lrt", "_weights"):
            for path in glob.glob(str(RESULTS / f"step_time_{row}{variant}{suffix}")):
                results.append(json.loads(Path(path).read_text()))
    if not results:
        print(f"no results for {threads} threads ({clock} clock) in {RESULTS}")
        return
    print(markdown(results))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("row", nargs="?", choices=ROWS + ["all"], help="the setting to time")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=11)
    parser.add_argument("--number", type=int, default=20, help="steps per timed repeat")
    parser.add_argument("--batch-size", type=int, default=None, help="override the row's batch size")
    parser.add_argument("--widths", default=None,
                        help="replace the row's network by an MLP of these widths, e.g. 4-4-4-2 (the fixed cost of a step)")
    parser.add_argument("--estimator", choices=["default", "lrt", "weights", "both"], default="default")
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall")
    parser.add_argument("--check", action="store_true", help="verify the hand-written step first")
    parser.add_argument("--device", choices=["cpu", "cuda", "auto"], default="cpu",
                        help="where the steps run (auto: the GPU if there is one, else the CPU, saying so)")
    parser.add_argument("--profile", action="store_true", help="print torch.profiler tables")
    parser.add_argument("--table", action="store_true", help="print the table of the saved results")
    args = parser.parse_args(argv)
    if args.table:
        table(args.threads, args.clock)
        return
    if args.row is None:
        parser.error("give a row (or --table)")
    if args.row == "all":  # one process per row
        for row in ROWS:
            command = [sys.executable, __file__, row] + [a for a in (argv or sys.argv[1:]) if a != "all"]
            subprocess.run(command, check=True)
        table(args.threads, args.clock)
        return
    run_row(args.row, args)


if __name__ == "__main__":
    main()
