"""Issue-4 surrogate check: how well the samplers' score model ranks the configurations it has not seen.

For a tabular benchmark (benchmarks/data/*.csv), repeatedly: fit the score model on n
random rows, predict the other rows, and report (mean over the splits)
- Spearman's rank correlation of the posterior mean with the stored scores, and
- top-20 recall: the share of the 20 best unseen rows among the 20 predicted best;
then, for the table's best-scoring row: its rank among all rows by the prediction of
each model fitted on every other row (can a model point a search at it?).
Models: the "saasbo" sampler's MAP SAAS GP and the "gp" sampler's GP, fitted by the
samplers' own code on the same encoding, on the raw scores and with
`score_floor_quantile=0.2` (`search.bo.model.floor_low_scores`); a random forest on the same
encoding as a reference that is not a GP.

Usage: python benchmarks/surrogate_quality.py --table benchmarks/data/sst2_minilm_low.csv --n 25,50,100
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr
from sklearn.ensemble import RandomForestRegressor

from autopeft.search.bo.model import fit_gp, floor_low_scores
from autopeft.search.samplers import BOOptions

from replay import _setup

HERE = Path(__file__).resolve().parent
TOP = 20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--table", type=Path, default=HERE / "data" / "sst2_minilm_low.csv")
    parser.add_argument("--n", default="25,50,100", help="observations the models are fitted on")
    parser.add_argument("--splits", type=int, default=10)
    args = parser.parse_args()
    sizes = [int(n) for n in args.n.split(",")]
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    rows, _, space, _ = _setup(args.table)
    options = {"SAAS-MAP": BOOptions(model="saas", fit="map"), "GP": BOOptions(model="gp")}  # the samplers' models
    grid = space.grid()
    X = grid.to_x(np.stack([grid.index(r["config"]) for r in rows]))  # rows x d, the samplers' encoding
    y = np.array([r["score"] for r in rows])

    def gaussian_process(name: str, quantile: float):
        def predict(train: np.ndarray, test: np.ndarray, seed: int) -> np.ndarray:
            target = torch.as_tensor(floor_low_scores(y[train], quantile)).unsqueeze(-1)
            model = fit_gp(torch.as_tensor(X[train]), target, options[name], seed)
            with torch.no_grad():
                return model.posterior(torch.as_tensor(X[test])).mean.reshape(-1).numpy()
        return predict

    def forest(train: np.ndarray, test: np.ndarray, seed: int) -> np.ndarray:
        return RandomForestRegressor(200, min_samples_leaf=3, random_state=seed).fit(X[train], y[train]).predict(X[test])

    models = {"SAAS-MAP": gaussian_process("SAAS-MAP", 0.0), "SAAS-MAP, floor 0.2": gaussian_process("SAAS-MAP", 0.2),
              "GP": gaussian_process("GP", 0.0), "GP, floor 0.2": gaussian_process("GP", 0.2), "random forest": forest}
    print(f"{args.table.name}: {len(rows)} rows; mean over {args.splits} random splits")
    print("| model | " + " | ".join(f"n={n}: Spearman / top-{TOP} recall" for n in sizes) + " |")
    print("|---|" + "---:|" * len(sizes))
    for name, predict in models.items():
        cells = []
        for n in sizes:
            rho, recall = [], []
            for split in range(args.splits):
                order = np.random.default_rng(split).permutation(len(rows))
                train, test = order[:n], order[n:]
                pred = predict(train, test, split)
                rho.append(spearmanr(pred, y[test])[0])
                truly_top = set(test[np.argsort(-y[test])[:TOP]])
                recall.append(len(truly_top & set(test[np.argsort(-pred)[:TOP]])) / TOP)
            cells.append(f"{np.mean(rho):.2f} / {np.mean(recall):.2f}")
        print(f"| {name} | " + " | ".join(cells) + " |", flush=True)
    best = int(np.argmax(y))
    others = np.array([i for i in range(len(rows)) if i != best])
    print(f"best-scoring row {rows[best]['trial']} ({rows[best]['config'].describe()}, {y[best]:.2f}); "
          f"its rank by each model fitted on the other {len(others)} rows:")
    for name, predict in models.items():
        pred = predict(others, np.arange(len(rows)), 0)
        print(f"  {name}: predicted {pred[best]:.2f}, rank {int(np.sum(pred > pred[best])) + 1} of {len(rows)}", flush=True)


if __name__ == "__main__":
    main()
