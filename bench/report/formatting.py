"""Number formatting of the comparison tables: units chosen per column, compact significant digits, LaTeX
escaping."""

from __future__ import annotations

import math

PARAM_UNITS = [(1e9, "B"), (1e6, "M"), (1e3, "k"), (1.0, "")]
FLOP_UNITS = [(1e12, "TFLOPs"), (1e9, "GFLOPs"), (1e6, "MFLOPs"), (1e3, "kFLOPs"), (1.0, "FLOPs")]



def pick_unit(values, units):
    vals = [abs(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    top = max(vals) if vals else None
    if top is None or top == 0:
        return units[1] if len(units) > 1 else units[0]
    for scale, name in units:
        if top >= scale:
            return scale, name
    return units[-1]


def isnan(v) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def fmt_fixed(v, decimals=1) -> str:
    return f"{v:.{decimals}f}"


def fmt_sig(v) -> str:
    """Compact number with ~3 significant digits, no scientific notation in the usual range."""
    if v == 0:
        return "0"
    a = abs(v)
    if a >= 100:
        return f"{v:.0f}"
    if a >= 10:
        return f"{v:.1f}"
    if a >= 1:
        return f"{v:.2f}"
    if a >= 1e-3:
        return f"{v:.3g}"
    return f"{v:.2e}"


def cell(mean, std, n, fmt, *, pm: str, na: str, force_pm: bool) -> str:
    if isnan(mean):
        return na
    s = fmt(mean)
    if n is not None and n > 1 and not isnan(std) and (force_pm or std > 0):
        s += f" {pm} {fmt(std)}"
    return s


def latex_escape(s: str) -> str:
    repl = {
        "\\": r"\textbackslash{}",
        "&": r"\&",
        "%": r"\%",
        "$": r"\$",
        "#": r"\#",
        "_": r"\_",
        "{": r"\{",
        "}": r"\}",
        "~": r"\textasciitilde{}",
        "^": r"\textasciicircum{}",
    }
    return "".join(repl.get(ch, ch) for ch in str(s))
