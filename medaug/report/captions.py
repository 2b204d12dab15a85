"""Caption lines shared by every paper's report."""

from __future__ import annotations

from medaug.paths import is_demo_data


def data_sources(config: dict, datasets: list[str]) -> str:
    """Caption line naming each dataset's folder and flagging generated stand-ins, so that a
    figure made on stand-in data can never pass for one made on the real dataset."""
    parts = []
    for name in datasets:
        root = config["datasets"][name]["root"]
        flag = " (generated stand-in, not the real dataset)" if is_demo_data(root) else ""
        parts.append(f"{name} from ``{root}``{flag}")
    return "Data: " + "; ".join(parts) + "."
