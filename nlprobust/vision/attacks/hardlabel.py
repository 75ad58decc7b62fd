"""What the hard-label attacks (OPT, Sign-OPT, SVM-OPT) share: the boundary distance g(theta) and its search.

For a direction ``theta`` from the original image ``x0``, ``g(theta)`` is the distance along ``theta`` to the
nearest input that meets the goal (thesis 2.13 / 2.14); the attacks minimise it over directions. Everything
here runs for many examples (and many directions per example) at once: each search round asks the model about
one point per active row in one batched query, rows of examples whose budget cannot pay for the round stop
there with the best verified value so far.

``norm="l2"`` measures ``theta`` and distances in L2; ``norm="linf"`` normalises directions by their largest
coordinate, so ``g`` is the L-inf distortion (the direct formulation; the thesis's smoothed L-inf objective is
not used).
"""

from __future__ import annotations

from typing import Any

import torch

from nlprobust.vision.attacks.base import Attack, Starts
from nlprobust.vision.oracle import HardLabelView, distance

__all__ = ["HardLabelAttack", "unit", "boundary_search"]

_DOWN, _UP, _BISECT, _DONE = 0, 1, 2, 3


def _expand(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return v.view(-1, *([1] * (like.dim() - 1)))


def unit(theta: torch.Tensor, norm: str) -> torch.Tensor:
    """``theta`` (rows x ...) scaled to norm 1 per row."""
    return theta / _expand(distance(theta, norm).clamp_min(1e-12), theta)


def _affordable(view: HardLabelView, owner: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """Which of ``rows`` (bool over ``owner``) can be queried now without any example exceeding its budget;
    an example that cannot pay for all its rows gets none."""
    need = torch.bincount(owner[rows], minlength=view.n)
    ok_example = view.remaining() >= need
    return rows & ok_example[owner]


def boundary_search(view: HardLabelView, owner: torch.Tensor, theta: torch.Tensor, *, v: torch.Tensor | None = None,
                    lo: torch.Tensor | None = None, hi: torch.Tensor | None = None, tol: torch.Tensor | float,
                    ratio: float = 0.01, max_lambda: float = 1e3, reject_above: bool = False) -> torch.Tensor:
    """``g(theta)`` for unit directions ``theta`` (rows x ...), row ``r`` belonging to example ``owner[r]``.

    Local mode (thesis Algorithm 2), given a guess ``v``: query ``x0 + v theta``; if it meets the goal shrink
    ``v`` by ``(1 - ratio)`` until it does not, else grow it by ``(1 + ratio)`` until it does; then bisect down
    to ``tol``. ``reject_above=True`` stops a row at once when ``v`` does not meet the goal (the caller only
    wants to know whether g < v: one query instead of a search).
    Bracket mode, given ``lo`` (not adversarial, e.g. 0) and ``hi`` (verified adversarial): bisect only.

    Returns the upper end of the final bracket, a distance at which the model's answer met the goal, or inf
    (no boundary found below ``max_lambda``, rejected, or the example ran out of budget first). Points are
    clipped to [0, 1] before they are queried.
    """
    m = owner.numel()
    dev = view.device
    owner = owner.to(dev)
    tol_t = torch.as_tensor(tol, dtype=torch.float32, device=dev).expand(m).clone()
    x0 = view.x0[owner]
    inf = torch.full((m,), float("inf"), device=dev)
    result = inf.clone()
    if v is not None:
        v = v.to(dev).float()
        state = torch.full((m,), _DONE, dtype=torch.long, device=dev)
        live = torch.isfinite(v) & (v > 0)
        first = _affordable(view, owner, live)
        if bool(first.any()):
            idx = torch.nonzero(first).flatten()
            adv = torch.zeros(m, dtype=torch.bool, device=dev)
            adv[idx] = view.is_adv((x0[idx] + _expand(v[idx], theta) * theta[idx]).clamp(0, 1), owner[idx])
            down = first & adv
            up = first & ~adv & (not reject_above)
            hi_t = torch.where(down, v, inf)
            lo_t = torch.where(down, v * (1 - ratio), torch.where(up, v, torch.zeros_like(v)))
            cand = torch.where(up, v * (1 + ratio), inf)  # next probe while growing
            state = torch.where(down, _DOWN, torch.where(up, _UP, state))
        else:
            hi_t, lo_t, cand = inf.clone(), torch.zeros(m, device=dev), inf.clone()
    else:
        if lo is None or hi is None:
            raise ValueError("boundary_search needs either v (local mode) or lo and hi (bracket mode)")
        lo_t, hi_t = lo.to(dev).float().clone(), hi.to(dev).float().clone()
        cand = inf.clone()
        state = torch.where(torch.isfinite(hi_t), _BISECT, _DONE).to(torch.long)
    state = torch.where((state == _BISECT) & (hi_t - lo_t <= tol_t), _DONE, state)
    while True:
        active = state != _DONE
        if not bool(active.any()):
            break
        pay = _affordable(view, owner, active)
        state = torch.where(active & ~pay, _DONE, state)  # out of budget: keep the verified hi
        if not bool(pay.any()):
            break
        idx = torch.nonzero(pay).flatten()
        st = state[idx]
        probe = torch.where(st == _DOWN, lo_t[idx], torch.where(st == _UP, cand[idx], (lo_t[idx] + hi_t[idx]) / 2))
        adv = view.is_adv((x0[idx] + _expand(probe, theta) * theta[idx]).clamp(0, 1), owner[idx])
        new_state = st.clone()
        lo_i, hi_i, cand_i = lo_t[idx], hi_t[idx], cand[idx]
        # shrinking: the probe (lo) still adversarial -> it becomes hi, shrink again; else bracket found
        d = st == _DOWN
        hi_i = torch.where(d & adv, probe, hi_i)
        lo_i = torch.where(d & adv, probe * (1 - ratio), lo_i)
        new_state = torch.where(d & ~adv, _BISECT, new_state)
        # growing: the probe adversarial -> bracket found; else move lo up and grow
        u = st == _UP
        hi_i = torch.where(u & adv, probe, hi_i)
        new_state = torch.where(u & adv, _BISECT, new_state)
        lo_i = torch.where(u & ~adv, probe, lo_i)
        cand_i = torch.where(u & ~adv, probe * (1 + ratio), cand_i)
        new_state = torch.where(u & ~adv & (cand_i > max_lambda), _DONE, new_state)
        # bisecting
        b = st == _BISECT
        hi_i = torch.where(b & adv, probe, hi_i)
        lo_i = torch.where(b & ~adv, probe, lo_i)
        # a bracket narrower than tol is final; a shrink that reaches ~0 means x0 itself meets the goal
        narrow = (new_state == _BISECT) & (hi_i - lo_i <= tol_t[idx])
        new_state = torch.where(narrow | ((new_state == _DOWN) & (lo_i <= tol_t[idx])), _DONE, new_state)
        lo_t[idx], hi_t[idx], cand[idx], state[idx] = lo_i, hi_i, cand_i, new_state
    result = torch.where(torch.isfinite(hi_t), hi_t, result)
    return result


class HardLabelAttack(Attack):
    """Shared machinery of the boundary-distance attacks: initial direction, line search, iteration loop.

    Args (keyword-only, shared): ``n_init`` random directions (untargeted) or target-class starting images
    (targeted) tried for the initial direction (default 100, thesis); ``init_tol`` bisection tolerance of that
    step; ``alpha`` initial step size; ``beta`` initial smoothing (finite-difference) radius; ``beta_min``
    radius below which an example has converged; ``max_iter`` iteration cap (the budget normally ends a run).
    """

    threat = "hardlabel"

    def __init__(self, *, norm: str = "l2", targeted: bool = False, budget: int | None = None,
                 epsilon: float | None = None, seed: int = 0, batch_size: int = 1000, n_init: int = 100,
                 init_tol: float = 1e-3, alpha: float = 0.2, beta: float = 0.001, beta_min: float = 1e-8,
                 max_iter: int = 100_000) -> None:
        super().__init__(norm=norm, targeted=targeted, budget=budget, epsilon=epsilon, seed=seed,
                         batch_size=batch_size)
        if budget is None and max_iter >= 100_000:
            raise ValueError(f"{self.name}: give a query budget or a max_iter below 100,000")
        self.n_init = n_init
        self.init_tol = init_tol
        self.alpha = alpha
        self.beta = beta
        self.beta_min = beta_min
        self.max_iter = max_iter

    # -- initial direction --------------------------------------------------------------------------------------

    def _initial_direction(self, view: HardLabelView, gen: torch.Generator,
                           starts: Starts | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Best of ``n_init`` candidate directions per example: random Gaussian ones (L-inf: random sign vectors;
        untargeted) or directions to training images of the target class (targeted, thesis 2.5.0.2). A candidate is
        checked by one query at
        its far end, then by one query at the current best distance (it can only win if that point already
        meets the goal), then bisected."""
        n, dev = view.n, view.device
        best_g = torch.full((n,), float("inf"), device=dev)
        best_theta = torch.zeros_like(view.x0)
        pool = None
        if view.targeted:
            if starts is None:
                raise ValueError(f"targeted {self.name} needs starting images of the target classes (starts=)")
            pool = self._target_pool(view, starts, gen)
        examples = torch.arange(n, device=dev)
        for j in range(self.n_init):
            if pool is None:
                cand = torch.randn(view.x0.shape, generator=gen, device=dev)
                if self.norm == "linf":  # random corners of the L-inf ball spread the change over every pixel
                    cand = cand.sign()
                far = (view.x0 + cand).clamp(0, 1)
            else:
                far = pool[:, j % pool.shape[1]]
                cand = far - view.x0
            lam = distance(cand, self.norm)
            theta = unit(cand, self.norm)
            rows = _affordable(view, examples, torch.ones(n, dtype=torch.bool, device=dev))
            if not bool(rows.any()):
                break
            idx = torch.nonzero(rows).flatten()
            adv = torch.zeros(n, dtype=torch.bool, device=dev)
            adv[idx] = view.is_adv(far[idx], idx)
            # a candidate longer than the best so far must meet the goal at the best distance to compete
            longer = adv & (lam > best_g)
            rows = _affordable(view, examples, longer)
            hi = torch.where(adv, lam, torch.full_like(lam, float("inf")))
            hi = torch.where(longer & ~rows, torch.full_like(lam, float("inf")), hi)
            if bool(rows.any()):
                idx = torch.nonzero(rows).flatten()
                ok = view.is_adv((view.x0[idx] + _expand(best_g[idx], theta) * theta[idx]).clamp(0, 1), idx)
                hi[idx] = torch.where(ok, best_g[idx], torch.full_like(ok, float("inf"), dtype=torch.float32))
            g = boundary_search(view, examples, theta, lo=torch.zeros(n, device=dev), hi=hi, tol=self.init_tol)
            better = g < best_g
            best_g = torch.where(better, g, best_g)
            best_theta[better] = theta[better]
        return best_theta, best_g

    def _target_pool(self, view: HardLabelView, starts: Starts, gen: torch.Generator) -> torch.Tensor:
        """n x n_init images of each example's target class, drawn (seeded) from ``starts``."""
        assert view.target is not None
        sx, sy = starts.x.to(view.device), starts.y.to(view.device)
        out = []
        for t in view.target.tolist():
            cls = torch.nonzero(sy == t).flatten()
            if cls.numel() == 0:
                raise ValueError(f"no starting image of target class {t} in starts")
            pick = cls[torch.randperm(cls.numel(), generator=gen, device=view.device)[:self.n_init]]
            out.append(sx[pick])
        k = min(o.shape[0] for o in out)
        return torch.stack([o[:k] for o in out])

    # -- line search ----------------------------------------------------------------------------------------------

    def _line_search(self, view: HardLabelView, idx: torch.Tensor, theta: torch.Tensor, g: torch.Tensor,
                     grad: torch.Tensor, alpha: torch.Tensor, beta: torch.Tensor,
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Backtracking line search along ``-grad`` for examples ``idx`` (attackbox's rule: double the step while
        g keeps falling, else quarter it until g falls, at most 15 tries each). Only whether g falls below the
        current value matters, so a candidate point that misses the goal costs one query. Returns the new
        theta, g and step sizes."""
        k = idx.numel()
        min_theta, min_g = theta.clone(), g.clone()
        tol = beta / 500
        going = torch.ones(k, dtype=torch.bool, device=view.device)
        for _ in range(15):
            if not bool(going.any()):
                break
            r = torch.nonzero(going).flatten()
            nt = unit(theta[r] - _expand(alpha[r], theta) * grad[r], self.norm)
            ng = boundary_search(view, idx[r], nt, v=min_g[r], tol=tol[r], reject_above=True)
            alpha[r] = alpha[r] * 2
            better = ng < min_g[r]
            min_theta[r[better]] = nt[better]
            min_g[r[better]] = ng[better]
            going[r[~better]] = False
        going = min_g >= g
        for _ in range(15):
            if not bool(going.any()):
                break
            r = torch.nonzero(going).flatten()
            alpha[r] = alpha[r] * 0.25
            nt = unit(theta[r] - _expand(alpha[r], theta) * grad[r], self.norm)
            ng = boundary_search(view, idx[r], nt, v=g[r], tol=tol[r], reject_above=True)
            better = ng < g[r]
            min_theta[r[better]] = nt[better]
            min_g[r[better]] = ng[better]
            going[r[better]] = False
        return min_theta, min_g, alpha

    # -- the loop -------------------------------------------------------------------------------------------------

    def _queries_per_step(self) -> int:
        """Queries an iteration needs before its line search (an example with fewer left stops)."""
        raise NotImplementedError

    def _gradient(self, view: HardLabelView, idx: torch.Tensor, theta: torch.Tensor, g: torch.Tensor,
                  beta: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """The attack's gradient estimate of g at ``theta`` for examples ``idx``."""
        raise NotImplementedError

    def run(self, view: Any, gen: torch.Generator, starts: Starts | None) -> torch.Tensor:
        theta, g = self._initial_direction(view, gen, starts)
        n, dev = view.n, view.device
        alpha = torch.full((n,), self.alpha, device=dev)
        beta = torch.full((n,), self.beta, device=dev)
        done = ~torch.isfinite(g)
        for _ in range(self.max_iter):
            done |= view.remaining() < self._queries_per_step()
            if bool(done.all()):
                break
            idx = torch.nonzero(~done).flatten()
            grad = self._gradient(view, idx, theta[idx], g[idx], beta[idx], gen)
            new_theta, new_g, new_alpha = self._line_search(view, idx, theta[idx], g[idx], grad, alpha[idx].clone(),
                                                            beta[idx])
            improved = new_g < g[idx]
            theta[idx[improved]] = new_theta[improved]
            g[idx[improved]] = new_g[improved]
            small = new_alpha < 1e-4  # step sizes collapsed: restart them with a finer smoothing radius
            new_alpha = torch.where(small, torch.ones_like(new_alpha), new_alpha)
            beta[idx] = torch.where(small, beta[idx] * 0.1, beta[idx])
            alpha[idx] = new_alpha
            done |= beta < self.beta_min
        found = torch.isfinite(g)
        # g is a verified distance to within the search tolerance of the boundary; a point that close can flip
        # under the rounding differences of another batch composition, so step 0.01% beyond it
        final = torch.where(found, g * (1 + 1e-4), torch.zeros_like(g))
        x_adv = (view.x0 + _expand(final, theta) * theta).clamp(0, 1)
        return torch.where(_expand(found, x_adv), x_adv, view.x0)
