"""Run by the export test in the `adapters` venv (scripts/adapters_venv.sh): load each exported folder with
AdapterHub `adapters` and write its logits, with the adapter active and without it.

    python tests/adapters_logits.py JOBS.json OUT.json
JOBS: [{"base": model dir, "adapter": exported dir, "input_ids": [[...]], "attention_mask": [[...]]}, ...]
OUT: [{"name", "label2id", "logits", "logits_without"}, ...] in the same order.
"""

import json
import sys

import torch
from adapters import AutoAdapterModel


def logits(job: dict) -> dict:
    model = AutoAdapterModel.from_pretrained(job["base"])
    name = model.load_adapter(job["adapter"])
    model.set_active_adapters(name)
    model.eval()
    batch = {k: torch.tensor(job[k]) for k in ("input_ids", "attention_mask")}
    with torch.no_grad():
        with_adapter = model(**batch).logits
        model.set_active_adapters(None)
        without = model(**batch, head=name).logits
    return {"name": name, "label2id": model.heads[name].config["label2id"], "logits": with_adapter.tolist(),
            "logits_without": without.tolist()}


if __name__ == "__main__":
    jobs = json.loads(open(sys.argv[1]).read())
    json.dump([logits(job) for job in jobs], open(sys.argv[2], "w"))
