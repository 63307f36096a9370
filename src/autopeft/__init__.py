"""autopeft: automatic search for parameter-efficient fine-tuning configurations.

    import autopeft
    search = autopeft.create_search("minilm", "MRPC", "runs/mrpc")
    search.optimize(budget=30)
    autopeft.create_search("minilm", "MRPC", "runs/gp", sampler=autopeft.SamplerSettings("gp", n_init=4))

The API (`autopeft.api`) loads torch and transformers on first use, so `import autopeft` stays light.
"""

from autopeft.errors import UserError
from autopeft.space import ModelSpec, PeftConfig, SearchSpace

_API = ("FrontMember", "SamplerSettings", "Search", "apply", "create_search", "load_search", "load_trained", "train")
__all__ = ["ModelSpec", "PeftConfig", "SearchSpace", "UserError", *_API]
__version__ = "0.1.0"


def __getattr__(name: str):
    if name in _API:
        from autopeft import api

        return getattr(api, name)
    raise AttributeError(f"module 'autopeft' has no attribute {name!r}")
