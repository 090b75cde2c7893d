"""Actions per second against Intune's budget line for 1, 2, 4 and 8 hosts sharing one budget
(docs/img/throughput-hosts.png), from the files `python -m bench.throughput --hosts N` writes:

    for n in 1 2 4 8; do .venv/bin/python -m bench.throughput --requests 1000 --hosts $n; done
    .venv/bin/python -m bench.hosts_chart
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from bench.stack import PROJECT_ROOT

OUT = PROJECT_ROOT / "bench" / "out"
CHART = PROJECT_ROOT / "docs" / "img" / "throughput-hosts.png"


def main() -> int:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = sorted(OUT.glob("throughput-hosts-*.json"), key=lambda p: int(p.stem.rsplit("-", 1)[1]))
    if not runs:
        print("no bench/out/throughput-hosts-N.json: run python -m bench.throughput --hosts N first", file=sys.stderr)
        return 1
    fig, ax = plt.subplots(figsize=(10, 4.5), dpi=110)
    for path in runs:
        data = json.loads(Path(path).read_text())
        result, actions = data["result"], data["actions"]
        end = int(max(actions, default=0)) + 1
        per_second = [0] * end
        for t in actions:
            if t >= 0:
                per_second[int(t)] += 1
        rolling = [sum(per_second[max(0, i - 19) : i + 1]) / min(20, i + 1) for i in range(end)]
        label = (
            f"{result['hosts']} host(s): {result['actions_per_s']:.2f}/s, "
            f"utilisation {result['budget_utilisation']:.3f}, max {result['max_actions_per_window']}/window"
        )
        ax.plot(range(1, end + 1), rolling, lw=1.8, label=label)
    ax.axhline(10, color="#d62728", ls="--", lw=1.5, label="Intune budget (200 POST / 20 s = 10/s)")
    ax.set_xlabel("seconds since the requests were queued")
    ax.set_ylabel("actions per second (20 s average)")
    ax.set_ylim(0, 12.5)
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title("One Graph budget shared by N devstack hosts (1,000 requests, 150 ms per Graph call)")
    fig.tight_layout()
    CHART.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(CHART)
    plt.close(fig)
    print(CHART)
    return 0


if __name__ == "__main__":
    sys.exit(main())
