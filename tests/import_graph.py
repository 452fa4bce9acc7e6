"""The project's import graph, read from the source (AST, nothing imported): every `import` and `from ... import`
of a project module, at module level or inside a function, is an edge.

    python -m tests.import_graph     # each dvc.yaml stage's code deps as they should read
"""

from __future__ import annotations

import ast
import sys
import textwrap
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("tasks", "flows")
# Modules a stage imports that no DVC output depends on: leaving them out of dvc.yaml's deps keeps an edit to
# them from rerunning the pipeline. Anything else a stage imports, directly or not, must be a dep.
NOT_DEPS = {
    "flows/tracking.py": "MLflow runs, logged models and the registry only; no DVC output is written there",
}


def module_file(name: str) -> Path | None:
    """tasks.rl.ppo -> tasks/rl/ppo.py, tasks.rl -> tasks/rl/__init__.py; None for anything outside the project."""
    if name.split(".")[0] not in PACKAGES:
        return None
    path = REPO.joinpath(*name.split("."))
    for candidate in (path.with_suffix(".py"), path / "__init__.py"):
        if candidate.exists():
            return candidate
    return None


def imports_of(path: Path) -> set[str]:
    """The project modules a file imports (`from tasks import config` counts as tasks.config when it is a module)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return {name for name in found if module_file(name) is not None and module_file(name) != path}


def graph() -> dict[str, set[str]]:
    """{module file (repo-relative): module files it imports}, over tasks/ and flows/."""
    edges = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            targets = {module_file(name) for name in imports_of(path)}
            edges[rel(path)] = {rel(t) for t in targets if t.name != "__init__.py" or t.read_text().strip()}
    return edges


def rel(path: Path) -> str:
    return str(path.relative_to(REPO))


def closure(start: str, edges: dict[str, set[str]]) -> set[str]:
    """Every module file `start` imports, directly or not, and start itself (+ its package's __init__.py)."""
    init = str(Path(start).parent / "__init__.py")
    todo = [start] + ([init] if (REPO / init).exists() and (REPO / init).read_text().strip() else [])
    seen: set[str] = set()
    while todo:
        module = todo.pop()
        if module not in seen:
            seen.add(module)
            todo += sorted(edges.get(module, ()))
    return seen


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Every import cycle, as the path that closes it (depth-first search)."""
    found, state = [], {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == "open":
                found.append(path[path.index(nxt) :] + [nxt])
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = "done"

    for node in sorted(edges):
        if node not in state:
            visit(node, [node])
    return found


def stage_modules(dvc_yaml: Path = REPO / "dvc.yaml") -> dict[str, tuple[set[str], set[str]]]:
    """{stage: (python files its deps list, python files its command imports minus NOT_DEPS)}."""
    edges = graph()
    out = {}
    for name, stage in yaml.safe_load(dvc_yaml.read_text())["stages"].items():
        cmd = stage["cmd"].split()
        entry = cmd[cmd.index("-m") + 1]
        needed = closure(rel(module_file(entry)), edges) - set(NOT_DEPS)
        listed = {d for d in stage.get("deps", []) if d.endswith(".py")}
        out[name] = (listed, needed)
    return out


def package_of(module: str) -> str:
    """tasks/rl/ppo.py -> tasks/rl; tasks/config.py -> tasks/config.py; flows/x.py -> flows."""
    parts = module.split("/")
    return "flows" if parts[0] == "flows" else "/".join(parts[:2])


def picture(path: Path) -> None:
    """The layout in one picture: flows over tasks' packages in layer order with their modules, and a bracket on
    the left for every package that imports another (always downwards)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from tests.test_layout import LAYERS

    order = ["flows"] + [f"tasks/{n}.py" if n in ("config", "losses") else f"tasks/{n}" for n in reversed(LAYERS)]
    edges = {(package_of(m), package_of(t)) for m, ts in graph().items() for t in ts}
    edges = sorted((a, b) for a, b in edges if a != b and a in order and b in order)
    y = {name: -i for i, name in enumerate(order)}
    fig, ax = plt.subplots(figsize=(11, 0.55 * len(order) + 0.8))
    for name in order:
        label = name.removeprefix("tasks/") + ("" if name.endswith(".py") else "/")
        ax.text(
            0,
            y[name],
            label,
            ha="center",
            va="center",
            fontsize=10,
            family="monospace",
            bbox={"boxstyle": "round", "fc": "#f7eee8" if name == "flows" else "#e8eef7"},
        )
        if not name.endswith(".py"):
            files = sorted(p.stem for p in (REPO / name).glob("*.py") if p.stem != "__init__")
            text = textwrap.fill("  ".join(files), 96)
            ax.text(4.1, y[name], text, ha="left", va="center", fontsize=8, family="monospace")
    for a, b in edges:
        arm = 12 + 9 * (len(order) + y[a]) + 3 * (y[a] - y[b])  # one rail per importing package
        ax.annotate(
            "",
            xy=(-0.55, y[b]),
            xytext=(-0.55, y[a]),
            arrowprops={
                "arrowstyle": "->",
                "color": "#8899aa",
                "lw": 0.8,
                "connectionstyle": f"arc,angleA=180,angleB=180,armA={arm},armB={arm},rad=4",
            },
        )
    ax.set_xlim(-3.5, 14)
    ax.set_ylim(-len(order) + 0.4, 0.6)
    ax.axis("off")
    ax.set_title("tasks/ by concern; every import points down (tests/test_layout.py)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--picture"]:  # python -m tests.import_graph --picture docs/img/layout.png
        picture(Path(sys.argv[2]))
        raise SystemExit
    for stage, (listed, needed) in stage_modules().items():
        print(f"{stage}: {sorted(needed)}")
        if listed != needed:
            print(
                f"  dvc.yaml differs: missing {sorted(needed - listed)}, extra {sorted(listed - needed)}",
                file=sys.stderr,
            )
