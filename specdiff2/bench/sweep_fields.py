"""What a sweep row ran, as resolved config fields (issue 23): written beside the override string, read by the report.

The report groups and labels rows by these fields (report/rundata.knob, method_of, model_target), never by parsing
the override string back, so renaming a config key breaks the report in one line instead of emptying a table.
"""

from __future__ import annotations

from omegaconf import OmegaConf


def _scalars(node) -> dict:
    """The node's resolved scalar fields (knobs and `_target_`); nested nodes (built sub-objects) are left out."""
    plain = OmegaConf.to_container(node, resolve=True) if node is not None else {}
    return {k: v for k, v in plain.items() if not isinstance(v, (dict, list)) and k != "_partial_"}


def _model(node) -> dict:
    """A decode model node: what builds it and from which checkpoint (None for proxies without one)."""
    ref = node.get("ref")
    return {"_target_": node.get("_target_"), "checkpoint": str(ref.path) if ref is not None else None}


def resolved_fields(cfg) -> dict:
    """The composed decode config of a row: method, strategy knobs, its models (target and checkpoint),
    acceptance rule, sampling, verifier checkpoint."""
    return {
        "method": cfg.decode.method,
        "strategy": _scalars(cfg.decode.strategy),
        "models": {name: _model(node) for name, node in (cfg.decode.get("models") or {}).items()},
        "acceptance": _scalars(cfg.acceptance),
        "sampling": {"temperature": float(cfg.temperature), "top_k": int(cfg.top_k), "top_p": float(cfg.top_p)},
        "verifier": str(cfg.verifier.path),
        "max_new_tokens": int(cfg.max_new_tokens),
    }
