"""Names of the attributes a search stores on Optuna studies and trials.

The sampler writes some and the runner others, and both read them; one module keeps
the names in step. "system" attributes are written by autopeft's sampler through
`search.optuna_access`; "user" attributes through Optuna's public ``set_user_attr``.
"""

# Trial system attributes, written when a proposal is made.
PROPOSAL_ATTR = "autopeft_proposal"  # the whole proposed configuration (its params); written last
SECONDS_ATTR = "autopeft_proposal_seconds"  # how long the proposal took
REPLICATE_ATTR = "autopeft_replicate"  # a proposed replicate: {"of": first trial, "index": k}
FIXED_PARAMS_ATTR = "fixed_params"  # Optuna's own: the params of an enqueued trial

# Trial user attributes.
RERUN_ATTR = "rerun_of"  # a re-queued trial: the number of the trial it re-runs
REPLICATE_OF_ATTR = "replicate_of"  # an evaluated replicate: the first trial of its configuration
REPLICATE_INDEX_ATTR = "replicate_index"  # an evaluated replicate: k = 1, 2, ... (the first evaluation is 0)
DUPLICATE_OF_ATTR = "duplicate_of"  # told with the values of this earlier trial's identical configuration
FAIL_REASON_ATTR = "fail_reason"  # why autopeft failed the trial (absent: Optuna failed it as stale)
WORKER_ATTR = "worker"  # {"host", "pid"} of the process that ran the trial
CONFIG_ATTR = "config"  # the evaluated configuration as a dict
PROMOTION_ATTR = "promotion"  # a promoted evaluation: {"rung", "seed_index", "fidelity"} (search.promotion)
STANDARD_ATTR = "standard"  # the standard module's name ("SA24") when the configuration is one
REPORT_SCORE_ATTR = "report_score"  # a target-rung evaluation's score on the report split (never used to choose)

# Study user attributes.
RETRAINED_ATTR = "retrained"  # {trial number: {"scores", "mean", "std"}}: front members retrained at full fidelity
BUDGET_ATTR = "budget"  # the exploring part of the running search's budget (caps the replicates)
WORKER_PREFIX = "worker:"  # + "<host>:<pid>": a registered worker, {"host", "pid", "active", "updated"}
