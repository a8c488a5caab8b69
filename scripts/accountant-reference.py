#!/usr/bin/env python3
"""Reference ε for the accountant grid (issue 21), written to
tests/fixtures/privacy/accountant-reference.csv.

Tools, pinned (install into a venv outside the repo):
    pip install dp-accounting==0.6.0 prv-accountant==0.2.0 numpy scipy
    pip install --no-deps opacus==1.6.0
Opacus's RDP analysis (opacus/accountants/analysis/rdp.py) needs only numpy and scipy; it is
loaded from its file so that torch need not be installed.

Columns, per (q, σ, T, δ):
  dp_accounting_pld   dp_accounting PLDAccountant(value_discretization_interval=1e-4),
                      add-or-remove adjacency, PoissonSampledDpEvent(q, GaussianDpEvent(σ)).
  prv_lower, prv_estimate, prv_upper
                      Microsoft prv-accountant PRVAccountant(PoissonSubsampledGaussianMechanism,
                      eps_error=1e-3·max(1, ε) (1e-2, 1e-1 where it refuses
                      the finer mesh; nan if it refuses all), delta_error=δ/1000): its bounds.
  opacus_rdp          Opacus get_privacy_spent(compute_rdp(...)) at Opacus's default orders
                      (1.1..10.9 by 0.1, 12..63).
  opacus_rdp_ours     the same at Confidant's orders (those plus 128 and 256).
  dp_accounting_pld_optimistic
                      dp_accounting's optimistic PLD (from_gaussian_mechanism(...,
                      pessimistic_estimate=False), self_compose(T)): a lower bound on ε from a
                      second tool. prv-accountant 0.2.0 fails for q = 0.2 at large ε (its
                      "lower bound" exceeds Opacus's RDP ε, a rigorous upper bound, at 20 of
                      the 24 points with T ≥ 1000 there); the Rust test uses its bounds only
                      where its estimate is below the RDP ε, and this column everywhere.

dp_accounting's get_epsilon_for_delta underflows above ε ≈ 745: it sums exp(−loss)·p walking
down from the top loss, which is 0.0 there, and so returns the loss at which the tail mass first
reaches δ, i.e. the (1 − δ)-quantile of the loss rather than the hockey-stick ε (about
ln(1 + λ)/λ higher, where λ is the local decay rate of the tail; 0.96 at q = 0.2, σ = 0.6,
T = 10⁴). Where it answers above 700, both dp_accounting columns are therefore recomputed as the
smallest ε with get_delta_for_epsilon(ε) ≤ δ, by bisection to 1e-9 relative (its
get_delta_for_epsilon computes exp(ε − loss), which does not underflow).

Usage: accountant-reference.py [OUT.csv]
       accountant-reference.py --augment CSV   (adds the optimistic column to an existing
                                                table, in place)
       accountant-reference.py --fix-underflow CSV  (recomputes, in place, the dp_accounting
                                                columns of rows whose ε exceeds 700)
"""
import importlib.metadata
import importlib.util
import math
import os
import sys
import time

import dp_accounting
from dp_accounting import dp_event
from dp_accounting.pld import pld_privacy_accountant
from prv_accountant import PRVAccountant, PoissonSubsampledGaussianMechanism

QS = [0.001, 0.004, 0.01, 0.05, 0.2]
SIGMAS = [0.6, 0.8, 1.0, 1.1, 1.5, 3.0]
STEPS = [1, 100, 1000, 10000]
DELTAS = [1e-5, 1e-6]

OPACUS_ORDERS = [1 + x / 10.0 for x in range(1, 100)] + list(range(12, 64))
OUR_ORDERS = OPACUS_ORDERS + [128, 256]


def load_opacus_rdp():
    dist = importlib.metadata.distribution("opacus")
    path = dist.locate_file("opacus/accountants/analysis/rdp.py")
    spec = importlib.util.spec_from_file_location("opacus_rdp", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


NOTE = ("# dp_accounting_pld_optimistic: dp_accounting from_gaussian_mechanism(pessimistic_estimate="
        "False, use_connect_dots=False, value_discretization_interval=1e-4).self_compose(T), a "
        "lower bound.")


UNDERFLOW_EPS = 700.0
UNDERFLOW_NOTE = ("# dp_accounting columns above eps = 700: the smallest eps with get_delta_for_epsilon(eps) <= "
                  "delta, by bisection (get_epsilon_for_delta underflows exp(-loss) above 745).")


def epsilon_for_delta(pld, delta):
    """pld.get_epsilon_for_delta(delta), by bisection on get_delta_for_epsilon above 700
    (see the module docstring: get_epsilon_for_delta underflows there)."""
    eps = pld.get_epsilon_for_delta(delta)
    if not eps > UNDERFLOW_EPS or math.isinf(eps):
        return eps
    lo, hi = UNDERFLOW_EPS, eps
    if pld.get_delta_for_epsilon(lo) <= delta:
        raise RuntimeError(f"epsilon below {UNDERFLOW_EPS}: lower the bisection start")
    while hi - lo > 1e-9 * hi:
        mid = 0.5 * (lo + hi)
        if pld.get_delta_for_epsilon(mid) <= delta:
            hi = mid
        else:
            lo = mid
    return hi


def optimistic_pld(q, sigma, steps, deltas):
    from dp_accounting.pld import privacy_loss_distribution as pl
    one = pl.from_gaussian_mechanism(
        standard_deviation=sigma, sampling_prob=q, pessimistic_estimate=False, use_connect_dots=False,
        value_discretization_interval=1e-4)
    composed = one.self_compose(steps) if steps > 1 else one
    return [epsilon_for_delta(composed, d) for d in deltas]


def pessimistic_pld(q, sigma, steps):
    acc = pld_privacy_accountant.PLDAccountant(value_discretization_interval=1e-4)
    acc.compose(dp_event.PoissonSampledDpEvent(q, dp_event.GaussianDpEvent(sigma)), steps)
    return acc


def fix_underflow(path):
    with open(path) as f:
        lines = f.read().splitlines()
    out = []
    for line in lines:
        f = line.split(",")
        if line.startswith("sample_rate") and UNDERFLOW_NOTE not in out:
            out.append(UNDERFLOW_NOTE)
        if line.startswith("#") or line.startswith("sample_rate") or float(f[4]) <= UNDERFLOW_EPS:
            out.append(line)
            continue
        q, sigma, steps, delta = float(f[0]), float(f[1]), int(f[2]), float(f[3])
        t0 = time.time()
        acc = pessimistic_pld(q, sigma, steps)
        pess = epsilon_for_delta(acc._pld, delta)
        opt = optimistic_pld(q, sigma, steps, [delta])[0]
        print(f"q={q} sigma={sigma} T={steps} delta={delta}: pld {f[4]} -> {pess!r}, optimistic "
              f"{f[10]} -> {opt!r} ({time.time() - t0:.1f}s)", file=sys.stderr, flush=True)
        f[4], f[10] = repr(float(pess)), repr(float(opt))
        out.append(",".join(f))
    with open(path, "w") as fh:
        fh.write("\n".join(out) + "\n")


def augment(path):
    with open(path) as f:
        lines = f.read().splitlines()
    out = []
    cache = {}
    for line in lines:
        if line.startswith("#"):
            out.append(line)
            continue
        if line.startswith("sample_rate") and not any(l.startswith("# dp_accounting_pld_optimistic") for l in out):
            out.append(NOTE)
        if line.startswith("sample_rate"):
            out.append(line if line.endswith("_optimistic") else line + ",dp_accounting_pld_optimistic")
        else:
            f = line.split(",")
            q, sigma, steps, delta = float(f[0]), float(f[1]), int(f[2]), float(f[3])
            if (q, sigma, steps) not in cache:
                t0 = time.time()
                cache[(q, sigma, steps)] = dict(zip(DELTAS, optimistic_pld(q, sigma, steps, DELTAS)))
                print(f"optimistic q={q} sigma={sigma} T={steps} ({time.time() - t0:.1f}s)",
                      file=sys.stderr, flush=True)
            out.append(",".join(f[:10]) + "," + repr(float(cache[(q, sigma, steps)][delta])))
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n")


def main():
    if len(sys.argv) > 2 and sys.argv[1] == "--augment":
        augment(sys.argv[2])
        return
    if len(sys.argv) > 2 and sys.argv[1] == "--fix-underflow":
        fix_underflow(sys.argv[2])
        return
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
        os.path.dirname(__file__), "..", "tests", "fixtures", "privacy", "accountant-reference.csv")
    rdp = load_opacus_rdp()
    versions = {p: importlib.metadata.version(p)
                for p in ["dp-accounting", "prv-accountant", "opacus", "numpy", "scipy"]}
    rows = []
    for q in QS:
        for sigma in SIGMAS:
            for steps in STEPS:
                t0 = time.time()
                acc = pessimistic_pld(q, sigma, steps)
                for delta in DELTAS:
                    pld = epsilon_for_delta(acc._pld, delta)
                    r_op = rdp.compute_rdp(q=q, noise_multiplier=sigma, steps=steps, orders=OPACUS_ORDERS)
                    op, _ = rdp.get_privacy_spent(orders=OPACUS_ORDERS, rdp=r_op, delta=delta)
                    r_us = rdp.compute_rdp(q=q, noise_multiplier=sigma, steps=steps, orders=OUR_ORDERS)
                    us, _ = rdp.get_privacy_spent(orders=OUR_ORDERS, rdp=r_us, delta=delta)
                    lo = est = hi = float("nan")
                    # prv-accountant's discretisation check refuses some points at the
                    # finest mesh; widen eps_error until it accepts (the bounds stay bounds).
                    for scale in (1e-3, 1e-2, 1e-1):
                        try:
                            prv = PRVAccountant(
                                prvs=[PoissonSubsampledGaussianMechanism(
                                    noise_multiplier=sigma, sampling_probability=q)],
                                max_self_compositions=[steps],
                                eps_error=scale * max(1.0, pld), delta_error=delta / 1000)
                            lo, est, hi = prv.compute_epsilon(
                                delta=delta, num_self_compositions=[steps])
                            break
                        except (RuntimeError, ValueError) as e:
                            print(f"  prv-accountant at eps_error scale {scale}: {e}",
                                  file=sys.stderr)
                    rows.append((q, sigma, steps, delta, pld, lo, est, hi, float(op), float(us),
                                 float(optimistic_pld(q, sigma, steps, [delta])[0])))
                print(f"q={q} sigma={sigma} T={steps}: pld {rows[-2][4]:.6g}/{rows[-1][4]:.6g} "
                      f"({time.time() - t0:.1f}s)", file=sys.stderr, flush=True)
    with open(out, "w") as f:
        f.write("# Generated by scripts/accountant-reference.py with "
                + ", ".join(f"{k} {v}" for k, v in versions.items()) + ".\n")
        f.write("# dp_accounting PLD at value_discretization_interval=1e-4; prv-accountant "
                "eps_error=1e-3*max(1, eps) (coarser where refused), delta_error=delta/1000; Opacus RDP at its default "
                "orders and at Confidant's (plus 128, 256).\n")
        f.write(NOTE + "\n")
        f.write(UNDERFLOW_NOTE + "\n")
        f.write("sample_rate,noise_multiplier,steps,delta,dp_accounting_pld,prv_lower,prv_estimate,"
                "prv_upper,opacus_rdp,opacus_rdp_ours,dp_accounting_pld_optimistic\n")
        for r in rows:
            f.write(",".join(repr(x) for x in r) + "\n")


if __name__ == "__main__":
    main()
