"""Picking the variant to ship: the fastest row of a report that keeps accuracy within budget of fp32."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Candidate:
    row: dict
    failures: tuple[str, ...]  # empty when the row meets every constraint

    @property
    def name(self) -> str:
        r = self.row
        n = r.get("threads")
        threads = f", {n} thread{'' if n == 1 else 's'}" if n else ""
        return f"{r['variant']} on {r['backend']}{threads}"


@dataclass(frozen=True)
class Selection:
    chosen: Candidate | None
    candidates: tuple[Candidate, ...]
    reference_auc: float
    explanation: str
    ties: tuple[Candidate, ...] = field(default=())


def _p50(row: dict) -> float:
    return row["latency_ms"]["p50"]


def select(report: dict, max_auc_drop: float = 0.005, min_sensitivity: float | None = 0.95) -> Selection:
    """The fastest (p50) row whose AUC is within ``max_auc_drop`` of fp32's and whose sensitivity meets the floor.

    Ties on p50 are broken by p99, then by the smaller file, then by the higher AUC; the explanation says so.
    """
    rows = report.get("rows", [])
    refs = [r for r in rows if r["variant"] == "fp32"]
    if not refs:
        raise ValueError("the report has no fp32 row to measure the accuracy budget against; bench fp32 too")
    ref_auc = max(r["metrics"]["auc"] for r in refs)
    candidates = []
    for r in rows:
        m, failures = r["metrics"], []
        drop = ref_auc - m["auc"]
        if drop > max_auc_drop + 1e-12:
            failures.append(f"AUC {m['auc']:.4f} is {drop:.4f} below fp32's {ref_auc:.4f} (budget {max_auc_drop})")
        if min_sensitivity is not None:
            sens = m.get("sensitivity")
            if sens is None:
                failures.append("no sensitivity (not a binary model with a threshold)")
            elif sens < min_sensitivity:
                failures.append(f"sensitivity {sens:.3f} is below the floor {min_sensitivity}")
        candidates.append(Candidate(r, tuple(failures)))
    ok = sorted((c for c in candidates if not c.failures),
                key=lambda c: (_p50(c.row), c.row["latency_ms"]["p99"], c.row["size_bytes"], -c.row["metrics"]["auc"]))
    if not ok:
        return Selection(None, tuple(candidates), ref_auc, "no variant meets the constraints")
    best = ok[0]
    ties = tuple(c for c in ok[1:] if _p50(c.row) == _p50(best.row))
    m = best.row["metrics"]
    sens = f", sensitivity {m['sensitivity']:.3f}" if m.get("sensitivity") is not None else ""
    tie = (f"; tied on p50 with {', '.join(c.name for c in ties)}, chosen by p99, then size, then AUC"
           if ties else "")
    explanation = (f"{best.name}: p50 {_p50(best.row):.4f} ms, the fastest of {len(ok)} qualifying row(s); AUC "
                   f"{m['auc']:.4f} ({m['auc'] - ref_auc:+.4f} vs fp32, budget -{max_auc_drop}){sens}{tie}")
    return Selection(best, tuple(candidates), ref_auc, explanation, ties)
