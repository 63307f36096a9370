"""autopeft: automatic search for parameter-efficient fine-tuning configurations."""

from autopeft.errors import UserError
from autopeft.space import ModelSpec, PeftConfig, SearchSpace

__all__ = ["ModelSpec", "PeftConfig", "SearchSpace", "UserError"]
__version__ = "0.1.0"
