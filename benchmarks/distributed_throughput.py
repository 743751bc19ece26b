"""Throughput of data-parallel SVI on one machine: 1 process x 2 threads against 2 processes
x 1 thread, on Fashion-MNIST, for LeNet-300-100 (BC-GNJ, batch 128) and the MLP 784-400-400-10
(SiLU, SS-GHS, batch 1024), the settings of ``step_time.py``.

Every run is a fresh process (or, for two processes, a ``torchrun`` launch with Lightning's
``Trainer(strategy="ddp")`` on gloo) that trains for two epochs of ``--steps`` minibatches of
the global batch size on the first ``steps * batch`` training images: the first epoch warms up,
the second is timed (between barriers, so the slower process counts). The routes:

* ``fit 1x2``: ``psb.fit`` in one process with two torch threads (the reference), and ``fit
  1x1`` with one (what one core gives, against which the two routes' scaling shows);
* ``lightning 1x2``: ``SparseBNNModule`` on a one-device ``Trainer``, two threads, minibatches
  from ``tensor_loader`` (one indexing operation per minibatch, as ``fit`` takes them);
* ``lightning 2x1``: ``SparseBNNModule`` with ``strategy="ddp", devices=2``, one thread per
  process, each process taking half of every minibatch.

Throughput is examples per second of the timed epoch (global batch x steps / seconds); the
table gives the median of ``--repeats`` runs (3) and the load average before the first run::

    python benchmarks/distributed_throughput.py                 # both networks, 3 runs each
    python benchmarks/distributed_throughput.py --nets lenet300 --repeats 5

Run it on an otherwise idle machine: the two routes share its cores. The results are saved to
``benchmarks/results/distributed_throughput.json``.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write  # noqa: E402

#: network key -> (name, prior name, global batch, default timed steps)
NETS = {
    "lenet300": ("LeNet-300-100", "BC-GNJ", 128, 200),
    "mlp400": ("MLP 784-400-400-10 (SiLU)", "SS-GHS", 1024, 40),
}
#: route -> (processes, threads per process)
ROUTES = {"fit 1x1": (1, 1), "fit 1x2": (1, 2), "lightning 1x2": (1, 2), "lightning 2x1": (2, 1)}


def build(net_key: str, num_data: int):
    from torch import nn

    import pyro_sparse_bnn as psb

    torch.manual_seed(0)
    if net_key == "lenet300":
        return psb.SparseBNN(psb.lenet_300_100(), psb.GroupNormalJeffreys(), num_data=num_data)
    return psb.SparseBNN(psb.mlp([784, 400, 400, 10], nn.SiLU), psb.SpikeSlabGroupHorseshoe(), num_data=num_data)


def worker(args) -> None:
    """One process of one run: train two epochs, time the second, rank 0 writes the result."""
    import lightning as L

    import pyro_sparse_bnn as psb
    from pyro_sparse_bnn.apps.datasets import fashion_mnist
    from pyro_sparse_bnn.core.lightning import SparseBNNModule, tensor_loader

    torch.set_num_threads(args.threads)
    _, _, batch, _ = NETS[args.net]
    num_data = batch * args.steps
    data = fashion_mnist(n_train=num_data, n_test=1)
    bnn = build(args.net, num_data)
    processes = int(os.environ.get("WORLD_SIZE", "1"))
    if args.route.startswith("fit"):
        history = psb.fit(bnn, data.x_train, data.y_train, epochs=2, batch_size=batch, seed=0, progress=False)
        seconds = history.seconds[1]
    else:
        times = {}

        class Clock(L.Callback):
            def on_train_epoch_start(self, trainer, module):
                trainer.strategy.barrier()
                times[trainer.current_epoch] = time.perf_counter()

            def on_train_epoch_end(self, trainer, module):
                trainer.strategy.barrier()
                times[trainer.current_epoch] = time.perf_counter() - times[trainer.current_epoch]

        module = SparseBNNModule(bnn, epochs=2, seed=0)
        trainer = L.Trainer(max_epochs=2, accelerator="cpu", devices=processes,
                            strategy="ddp" if processes > 1 else "auto", logger=False, enable_checkpointing=False,
                            enable_progress_bar=False, enable_model_summary=False, callbacks=[Clock()])
        loader = tensor_loader(data.x_train, data.y_train, batch_size=batch // processes)
        trainer.fit(module, loader)
        seconds = times[1]
    if int(os.environ.get("RANK", "0")) == 0:
        Path(args.out).write_text(json.dumps({"seconds": seconds, "examples": num_data,
                                              "steps": args.steps, "processes": processes}))


def launch(net: str, route: str, steps: int) -> dict:
    """Run one route in fresh processes and return the rank-0 result."""
    processes, threads = ROUTES[route]
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        script = [__file__, "--worker", "--net", net, "--route", route, "--steps", str(steps),
                  "--threads", str(threads), "--out", str(out)]
        if processes == 1:
            command = [sys.executable] + script
        else:
            command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                       "--nproc_per_node", str(processes)] + script
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        done = subprocess.run(command, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"{route} on {net} failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
        return json.loads(out.read_text())


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nets", nargs="+", choices=list(NETS), default=list(NETS))
    parser.add_argument("--routes", nargs="+", choices=list(ROUTES), default=list(ROUTES))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=None, help="timed steps per run (default: per network)")
    # the worker's arguments
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--net", help=argparse.SUPPRESS)
    parser.add_argument("--route", help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args)
        return
    load = os.getloadavg()
    print(f"load average before the runs: {load[0]:.2f} (1 min), {load[1]:.2f} (5 min)")
    rows = []
    for net in args.nets:
        name, prior, batch, default_steps = NETS[net]
        steps = args.steps or default_steps
        for route in args.routes:
            runs = []
            for _ in range(args.repeats):
                result = launch(net, route, steps)
                runs.append(batch * steps / result["seconds"])
                print(f"{name} {route}: {runs[-1]:.0f} examples/s")
            rows.append({"network": name, "prior": prior, "batch": batch, "route": route, "steps": steps,
                         "processes": ROUTES[route][0], "threads": ROUTES[route][1],
                         "examples_per_second": statistics.median(runs), "runs": runs})
    for row in rows:
        reference = [r for r in rows if r["network"] == row["network"] and r["route"] == "fit 1x2"]
        row["relative_to_fit"] = row["examples_per_second"] / reference[0]["examples_per_second"] if reference else None
    print("\n| network, prior | global batch | route (processes x threads) | examples / s | vs fit 1x2 |")
    print("| --- | --- | --- | --- | --- |")
    for row in rows:
        print(f"| {row['network']}, {row['prior']} | {row['batch']} | {row['route']} | "
              f"{row['examples_per_second']:,.0f} | "
              + ("-" if row["relative_to_fit"] is None else f"{row['relative_to_fit']:.2f}x") + " |")
    print(f"wrote {write('distributed_throughput', {'load_average_before': load, 'rows': rows})}")


if __name__ == "__main__":
    main()
