"""Allocation fits (Chinchilla's approaches 2 and 3) on isoFLOP tables drawn from a known L(N, D)."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy.optimize import brentq, minimize_scalar

from analysis.allocation import ALLOCATION_FITS, Approach2Result, Approach3Result, compare
from analysis.allocation.approach3 import DELTA, huber, objective
from analysis.allocation.compare import MISALLOCATION_FLAG, misallocated_share

CHINCHILLA = {"E": 1.69, "A": 406.4, "B": 410.7, "alpha": 0.34, "beta": 0.28}
K = 6.0
BUDGETS = np.geomspace(1e18, 1e21, 4)
NAN2 = (math.nan, math.nan)


def law(**params: float) -> Approach3Result:
    return Approach3Result(**(CHINCHILLA | params), ci={}, k=K, k_range=(K, K), objective=0.0, grad_norm=0.0,
                           starts=0, starts_at_best=0, failed_replicates=0)


def isoflop(truth: Approach3Result, *, sizes: int = 7, span: float = 32.0, offsets=None, noise: float = 0.0,
            seed: int = 0, budgets: np.ndarray = BUDGETS) -> pd.DataFrame:
    """Sizes evenly spaced in ln N over ``span``, centred on ``offset``·N_opt at each budget."""
    rng = np.random.default_rng(seed)
    offsets = np.ones(len(budgets)) if offsets is None else offsets
    rows = []
    for budget, offset in zip(budgets, offsets, strict=True):
        for n in truth.n_opt(budget) * offset * np.geomspace(span**-0.5, span**0.5, sizes):
            d = budget / (K * n)
            rows.append({"budget": budget, "params": n, "train_units": d,
                         "loss": float(truth.loss(n, d)) * math.exp(noise * rng.standard_normal())})
    return pd.DataFrame(rows)


def test_registry_names_both_fits():
    assert list(ALLOCATION_FITS) == ["approach2", "approach3"]
    assert all(f.min_sizes_per_budget == 3 for f in ALLOCATION_FITS.values())


def test_approach3_recovers_the_law_from_noiseless_runs():
    truth = law()
    fit = ALLOCATION_FITS["approach3"].fit(isoflop(truth), n_boot=0)
    for name in ("alpha", "beta", "a"):
        assert getattr(fit, name) == pytest.approx(getattr(truth, name), rel=1e-4), name
    for name in ("E", "A", "B"):
        assert getattr(fit, name) == pytest.approx(getattr(truth, name), rel=1e-2), name
    assert fit.k == pytest.approx(K)
    assert fit.converged and fit.starts_at_best >= 2
    assert fit.grad_norm < 1e-8


def test_approach3_intervals_cover_the_truth_at_low_noise():
    truth = law()
    fit = ALLOCATION_FITS["approach3"].fit(isoflop(truth, noise=0.005, seed=3), n_boot=100, seed=3)
    for name in ("E", "A", "B", "alpha", "beta", "a"):
        lo, hi = fit.ci[name]
        assert lo <= getattr(truth, name) <= hi, (name, lo, hi)
        assert lo < hi
    assert fit.failed_replicates == 0


def test_approach3_keeps_E_below_the_smallest_loss():
    table = isoflop(law(), noise=0.02, seed=1)
    fit = ALLOCATION_FITS["approach3"].fit(table, n_boot=0)
    assert fit.E <= table["loss"].min() * (1 + 1e-12)


def test_closed_form_n_opt_matches_brute_force_along_the_isoflop():
    for params in ({}, {"alpha": 0.5, "beta": 0.2}, {"alpha": 0.2, "beta": 0.45, "A": 50.0}):
        truth = law(**params)
        for compute in (1e17, 1e20, 1e24):
            res = minimize_scalar(lambda x, c=compute, t=truth: float(t.loss(math.exp(x), c / (K * math.exp(x)))),
                                  bounds=(0, 40), method="bounded", options={"xatol": 1e-10})
            assert truth.n_opt(compute) == pytest.approx(math.exp(res.x), rel=1e-6), (params, compute)
            assert truth.optimal_loss(compute) == pytest.approx(res.fun, rel=1e-12)
            assert truth.compute_for_loss(float(truth.optimal_loss(compute))) == pytest.approx(compute, rel=1e-9)


def test_the_huber_objective_is_summed_over_runs_not_averaged():
    rng = np.random.default_rng(0)
    logn, logd = rng.normal(0, 2, 12), rng.normal(0, 2, 12)
    logl = np.log(1.5 + rng.uniform(0.1, 1.0, 12))
    theta = np.array([0.3, -0.5, -0.7, 0.3, 0.4])
    ones = np.ones(12)
    value, grad = objective(theta, logn, logd, logl, ones)
    pred = np.log(np.exp(0.3) + np.exp(-0.5 - 0.3 * logn) + np.exp(-0.7 - 0.4 * logd))
    assert value == pytest.approx(huber(pred - logl).sum(), rel=1e-12)
    doubled = objective(theta, *(np.tile(v, 2) for v in (logn, logd, logl)), np.ones(24))
    assert doubled[0] == pytest.approx(2 * value, rel=1e-12)  # a mean would stay the same
    np.testing.assert_allclose(doubled[1], 2 * grad, rtol=1e-12)
    assert objective(theta, logn, logd, logl, 2 * ones)[0] == pytest.approx(2 * value, rel=1e-12)
    step = 1e-7
    numeric = [(objective(theta + step * e, logn, logd, logl, ones)[0]
                - objective(theta - step * e, logn, logd, logl, ones)[0]) / (2 * step) for e in np.eye(5)]
    np.testing.assert_allclose(grad, numeric, rtol=1e-5, atol=1e-12)
    assert huber(np.array([DELTA / 2]))[0] == pytest.approx(DELTA**2 / 8)
    assert huber(np.array([-3 * DELTA]))[0] == pytest.approx(2.5 * DELTA**2)


def test_approach2_recovers_the_law_when_the_isoflop_curve_is_symmetric():
    truth = law(alpha=0.3, beta=0.3, B=300.0)  # α = β: the curve is symmetric in ln N and so is a centred grid
    fit = ALLOCATION_FITS["approach2"].fit(isoflop(truth), n_boot=0)
    assert [v.kind for v in fit.vertices] == ["value"] * 4
    assert fit.a == pytest.approx(truth.a, abs=1e-9)
    np.testing.assert_allclose(fit.n_opt(BUDGETS), truth.n_opt(BUDGETS), rtol=1e-6)
    np.testing.assert_allclose([v.n_opt for v in fit.vertices], truth.n_opt(BUDGETS), rtol=1e-6)
    np.testing.assert_allclose(fit.d_opt(BUDGETS), truth.d_opt(BUDGETS), rtol=1e-6)


def test_approach2_exponent_is_exact_on_centred_grids_even_when_alpha_differs_from_beta():
    """The isoFLOP curve has the same shape at every budget, so a centred grid moves every vertex alike."""
    truth = law()
    fit = ALLOCATION_FITS["approach2"].fit(isoflop(truth), n_boot=0)
    assert fit.a == pytest.approx(truth.a, abs=1e-6)
    assert fit.n_opt(BUDGETS[0]) != pytest.approx(truth.n_opt(BUDGETS[0]), rel=1e-3)  # but G is biased


def test_approach2_intervals_cover_the_truth():
    """Over a few seeds, not one: a 95% interval misses one vertex in twenty."""
    truth = law(alpha=0.3, beta=0.3, B=300.0)
    vertex_cover, vertex_width, a_cover = [], [], []
    for seed in range(20):
        fit = ALLOCATION_FITS["approach2"].fit(isoflop(truth, sizes=9, noise=0.01, seed=seed), n_boot=200, seed=seed)
        a_cover.append(fit.a_ci[0] <= truth.a <= fit.a_ci[1])
        for vertex in fit.vertices:
            assert vertex.kind == "value"
            vertex_cover.append(vertex.ci[0] <= truth.n_opt(vertex.budget) <= vertex.ci[1])
            vertex_width.append(math.log(vertex.ci[1] / vertex.ci[0]))
    assert np.mean(vertex_cover) >= 0.8 and np.mean(a_cover) >= 0.85
    assert np.median(vertex_width) < 0.6  # about 4 sd of the vertex's real spread at this noise


def test_a_vertex_outside_the_grid_is_a_bound_and_stays_out_of_the_law():
    truth = law()
    table = isoflop(truth, sizes=5, span=8.0, offsets=[1.0, 4.0, 1.0, 1.0])  # budget 2's grid sits above N_opt
    fit = ALLOCATION_FITS["approach2"].fit(table, n_boot=50)
    vertex = fit.vertices[1]
    assert vertex.kind == "upper" and "below it" in vertex.reason
    sizes = np.sort(table.loc[table["budget"] == BUDGETS[1], "params"].to_numpy())
    assert vertex.n_opt == pytest.approx(sizes[1])
    assert truth.n_opt(BUDGETS[1]) < vertex.n_opt
    assert all(math.isnan(x) for x in vertex.ci)
    assert fit.law is not None and BUDGETS[1] not in fit.law.budgets and len(fit.law.budgets) == 3
    high = ALLOCATION_FITS["approach2"].fit(isoflop(truth, sizes=5, span=8.0, offsets=[0.25, 0.25, 1, 1]), n_boot=0)
    assert [v.kind for v in high.vertices] == ["lower", "lower", "value", "value"]
    assert math.isnan(high.a) and high.law is None and "2 of 4 budgets" in high.reason


def test_to_dict_holds_each_value_beside_its_interval_as_json():
    table = isoflop(law(), noise=0.005, seed=0)
    fit2 = ALLOCATION_FITS["approach2"].fit(table, n_boot=30)
    fit3 = ALLOCATION_FITS["approach3"].fit(table, n_boot=10)
    d2, d3 = (f.to_dict(units="tokens", convention="C = 6ND") for f in (fit2, fit3))
    json.dumps({"approach2": d2, "approach3": d3}, allow_nan=False)
    for d, names in ((d2, ("a", "G")), (d3, ("E", "A", "B", "alpha", "beta", "a"))):
        assert d["units"] == "tokens" and d["convention"] == "C = 6ND"
        for name in names:
            lo, hi = d[f"{name}_ci"]
            assert lo <= d[name] <= hi, name
    assert d3["a"] == pytest.approx(d3["beta"] / (d3["alpha"] + d3["beta"]))
    assert len(d2["vertices"]) == 4 and {"kind", "n_opt", "n_opt_ci", "reason"} <= set(d2["vertices"][0])


def test_compare_prices_approach2s_allocation_in_compute():
    truth = law()
    target = 1e23
    agree = Approach2Result([], truth.a, NAN2, truth.G * K**-truth.a, NAN2, K, (K, K), None, "")
    same = compare(agree, truth, target)
    assert same.share == pytest.approx(0.0, abs=1e-9) and not same.flagged and same.a_difference < 1e-12
    off = compare(Approach2Result([], truth.a, NAN2, 3 * truth.G * K**-truth.a, NAN2, K, (K, K), None, ""),
                  truth, target)
    assert off.n_opt2 == pytest.approx(3 * off.n_opt3)

    def brute_optimal_loss(compute: float) -> float:
        return minimize_scalar(lambda x: float(truth.loss(math.exp(x), compute / (K * math.exp(x)))),
                               bounds=(0, 40), method="bounded", options={"xatol": 1e-10}).fun

    reached = float(truth.loss(off.n_opt2, target / (K * off.n_opt2)))
    equivalent = brentq(lambda c: brute_optimal_loss(c) - reached, target / 10, target)
    assert off.share == pytest.approx(1 - equivalent / target, rel=1e-5)
    assert off.flagged == (off.share > MISALLOCATION_FLAG) and off.flagged
    assert misallocated_share(truth, float(truth.n_opt(target)), target) == pytest.approx(0.0, abs=1e-9)
    with pytest.raises(ValueError, match="target compute"):
        compare(agree, truth, -1.0)


@pytest.mark.parametrize("name", list(ALLOCATION_FITS))
@pytest.mark.parametrize(("mutate", "message"), [
    (lambda t: t.drop(columns=["params"]), "lacks column\\(s\\) params"),
    (lambda t: t.drop(columns=["train_units", "loss"]), "lacks column\\(s\\) train_units, loss"),
    (lambda t: t.assign(loss=t["loss"].where(t.index != 3, 0.0)), "must be positive and finite; 1 row"),
    (lambda t: t.assign(params=t["params"].where(t.index != 5, -1.0)), "must be positive and finite"),
    (lambda t: t.assign(train_units=t["train_units"].where(t.index != 0, np.nan)), "must be positive and finite"),
    (lambda t: t[~((t["budget"] == BUDGETS[0]) & (t.index % 7 > 1))], "have 2 distinct size\\(s\\)"),
    (lambda t: t[t["budget"] == BUDGETS[0]], "1 budget\\(s\\); this fit needs at least"),
])
def test_bad_input_gets_one_clear_line(name, mutate, message):
    with pytest.raises(ValueError, match=message) as err:
        ALLOCATION_FITS[name].fit(mutate(isoflop(law())), n_boot=0)
    assert "\n" not in str(err.value)
