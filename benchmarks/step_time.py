"""Time of one training step: SVI on a sparse BNN against a deterministic network and against a
hand-written PyTorch step of the same objective, measured in one process (medians).

    python benchmarks/step_time.py                              # SS-IG + local reparam., 784-300-100-10
    python benchmarks/step_time.py --prior ss --widths 64-64-32-10   # edge level, weight sampling
    python benchmarks/step_time.py --lenet5                     # SS-IG on LeNet-5-Caffe (no hand-written step)

``--prior ssig`` (default): the node-level spike-and-slab prior with local
reparameterisation, the configuration issue 5 sets targets for. The hand-written step
computes the same estimator (straight-through binary Concrete node indicators, Gaussian
pre-activations with mean ``z_j (x mu_j)`` and variance ``z_j^2 (x^2 sigma_j^2)``, minibatch
log-likelihood scaled to N, closed-form Bernoulli and inclusion-weighted slab KLs) with plain
tensors and one Adam optimiser.

``--prior ss``: the edge-level spike-and-slab prior with one weight draw per step
(``local_reparameterization=False``) against a hand-written step of that estimator.

Either way the SVI / hand-written ratio is the price of the Pyro model/guide machinery.
"""

import argparse
import math
import sys
from pathlib import Path

import pyro
import torch
import torch.nn.functional as F
from pyro.infer import SVI
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import median_time, write  # noqa: E402

from pyro_sparse_bnn import MeanFieldELBO, SparseBNN, SpikeSlab, SpikeSlabNode  # noqa: E402
from pyro_sparse_bnn.nets import lenet5_caffe  # noqa: E402
from pyro_sparse_bnn.optim import JointAdam  # noqa: E402


def mlp(widths):
    layers = []
    for a, b in zip(widths, widths[1:]):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*layers[:-1])


class HandWrittenSpikeSlab(nn.Module):
    """The same objective as SparseBNN + SpikeSlab + MeanFieldELBO, without Pyro."""

    def __init__(self, net, prior_inclusion, prior_scale=1.3, temperature=0.5, num_data=60000):
        super().__init__()
        linears = [m for m in net if isinstance(m, nn.Linear)]
        self.logits = nn.ParameterList([nn.Parameter(torch.full((m.out_features, m.in_features + 1), math.log(99.0))) for m in linears])
        self.loc = nn.ParameterList([nn.Parameter(torch.cat([m.weight, m.bias[:, None]], 1).detach().clone()) for m in linears])
        self.rho = nn.ParameterList([nn.Parameter(torch.full_like(p, -6.0)) for p in self.loc])
        self.lam, self.s0, self.tau, self.n = prior_inclusion, prior_scale, temperature, num_data

    def loss(self, x, y):
        h, kl = x, 0.0
        logit_lam = math.log(self.lam) - math.log1p(-self.lam)
        for i, (theta, mu, rho) in enumerate(zip(self.logits, self.loc, self.rho)):
            u = torch.rand_like(theta)
            noisy = theta + torch.logit(u, eps=1.19e-7)
            soft = torch.sigmoid(noisy / self.tau)
            z = (noisy > 0).float() + soft - soft.detach()
            sigma = F.softplus(rho)
            beta = mu + sigma * torch.randn_like(mu)
            w = z * beta
            h = F.linear(h, w[:, :-1], w[:, -1])
            if i < len(self.logits) - 1:
                h = torch.relu(h)
            gamma = torch.sigmoid(theta)
            kl = kl + (gamma * (theta - logit_lam) - F.softplus(theta) - math.log1p(-self.lam)).sum()
            kl = kl + (gamma * ((sigma**2 + mu**2) / (2 * self.s0**2) - torch.log(sigma) + math.log(self.s0) - 0.5)).sum()
        nll = F.cross_entropy(h, y, reduction="sum") * (self.n / len(y))
        return nll + kl


class HandWrittenNodeLRT(nn.Module):
    """The objective of SparseBNN + SpikeSlabNode + MeanFieldELBO with local reparameterisation."""

    def __init__(self, net, prior_scale=1.0, temperature=0.5, num_data=60000):
        super().__init__()
        linears = [m for m in net if isinstance(m, nn.Linear)]
        self.logits = nn.ParameterList([nn.Parameter(torch.full((m.out_features,), math.log(99.0))) for m in linears])
        self.loc = nn.ParameterList([nn.Parameter(torch.cat([m.weight, m.bias[:, None]], 1).detach().clone()) for m in linears])
        self.rho = nn.ParameterList([nn.Parameter(torch.full_like(p, -6.0)) for p in self.loc])
        self.lams = [1.0 / m.out_features for m in linears]
        self.s0, self.tau, self.n = prior_scale, temperature, num_data

    def loss(self, x, y):
        h, kl = x, 0.0
        for i, (theta, mu, rho, lam) in enumerate(zip(self.logits, self.loc, self.rho, self.lams)):
            u = torch.rand_like(theta)
            noisy = theta + torch.logit(u, eps=1.19e-7)
            soft = torch.sigmoid(noisy / self.tau)
            z = (noisy > 0).float() + soft - soft.detach()
            sigma = F.softplus(rho)
            var = sigma**2
            mean = F.linear(h, mu[:, :-1], mu[:, -1]) * z
            sd = (F.linear(h * h, var[:, :-1], var[:, -1]) * z**2).clamp(min=1e-30).sqrt()
            h = mean + sd * torch.randn_like(mean)
            if i < len(self.logits) - 1:
                h = torch.relu(h)
            gamma = torch.sigmoid(theta)
            logit_lam = math.log(lam) - math.log1p(-lam)
            kl = kl + (gamma * (theta - logit_lam) - F.softplus(theta) - math.log1p(-lam)).sum()
            slab_kl = ((var + mu**2) / (2 * self.s0**2) - torch.log(sigma) + math.log(self.s0) - 0.5).sum(1)
            kl = kl + (gamma * slab_kl).sum()
        nll = F.cross_entropy(h, y, reduction="sum") * (self.n / len(y))
        return nll + kl


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--widths", default="784-300-100-10")
    parser.add_argument("--lenet5", action="store_true",
                        help="LeNet-5-Caffe (SS-IG, local reparameterisation) instead of an MLP; no hand-written step")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--prior", choices=["ssig", "ss"], default="ssig",
                        help="ssig: node level with local reparameterisation; ss: edge level, weight sampling")
    args = parser.parse_args(argv)
    widths = [int(w) for w in args.widths.split("-")]
    torch.manual_seed(0)
    x = torch.randn(args.batch_size, widths[0])
    y = torch.randint(0, widths[-1], (args.batch_size,))

    if args.lenet5:
        args.widths, args.prior = "lenet5-caffe", "ssig"
        x = torch.randn(args.batch_size, 784)

    def build():
        return lenet5_caffe() if args.lenet5 else mlp(widths)

    deterministic = build()
    det_optim = torch.optim.Adam(deterministic.parameters(), lr=1e-3)

    def deterministic_step():
        det_optim.zero_grad(set_to_none=True)
        F.cross_entropy(deterministic(x), y).backward()
        det_optim.step()

    if args.prior == "ssig":
        bnn = SparseBNN(build(), SpikeSlabNode(), num_data=60000)
        hand = None if args.lenet5 else HandWrittenNodeLRT(build())
    else:
        bnn = SparseBNN(build(), SpikeSlab(prior_inclusion=1e-3), num_data=60000,
                        local_reparameterization=False)
        hand = HandWrittenSpikeSlab(build(), prior_inclusion=1e-3)
    svi = SVI(bnn.model, bnn.guide, JointAdam({"lr": 5e-3}), MeanFieldELBO())

    def svi_step():  # what fit does per step
        with bnn.reparameterization(skip_slab_draws=True):
            svi.step(x, y)

    steps = {"deterministic": deterministic_step, "svi": svi_step}
    if hand is not None:
        hand_optim = torch.optim.Adam(hand.parameters(), lr=5e-3, fused=True)  # as JointAdam

        def hand_step():
            hand_optim.zero_grad(set_to_none=True)
            hand.loss(x, y).backward()
            hand_optim.step()

        steps["hand_written"] = hand_step

    # interleave the variants so machine noise hits them alike
    times = {name: [] for name in steps}
    for _ in range(args.repeats):
        for name, step in steps.items():
            times[name].append(median_time(step, repeats=1, number=20))
    med = {k: sorted(v)[len(v) // 2] for k, v in times.items()}
    med.setdefault("hand_written", float("nan"))
    result = {
        "prior": args.prior,
        "local_reparameterization": bnn.local_reparameterization,
        "widths": args.widths,
        "batch_size": args.batch_size,
        "median_ms": {k: 1e3 * v for k, v in med.items()},
        "svi_over_deterministic": med["svi"] / med["deterministic"],
        "svi_over_hand_written": med["svi"] / med["hand_written"],
        "hand_written_over_deterministic": med["hand_written"] / med["deterministic"],
    }
    print(f"{args.prior} (local reparameterisation {bnn.local_reparameterization}), "
          f"{args.widths}, batch {args.batch_size}, {torch.get_num_threads()} threads, "
          f"median ms per step: " + ", ".join(f"{k} {v:.2f}" for k, v in result["median_ms"].items()))
    print(f"SVI / deterministic {result['svi_over_deterministic']:.2f}x; SVI / hand-written "
          f"{result['svi_over_hand_written']:.2f}x; hand-written / deterministic "
          f"{result['hand_written_over_deterministic']:.2f}x")
    path = write(f"step_time_{args.prior}_{args.widths}", result)
    print(f"wrote {path}")
    pyro.clear_param_store()


if __name__ == "__main__":
    main()
